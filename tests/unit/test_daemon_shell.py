"""The daemon shell's failure paths on virtual time: names that do not resolve, reloads applied whole or not at
all, a kernel without IPVS, kernel errors, READY, a cold start with a fallback, restart-only settings."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ipvsd import config as configmod
from ipvsd.commands.plan import compute
from ipvsd.core.probes import ProbeKey
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import DestKey, Proto, ServiceKey
from ipvsd.shell import bus
from ipvsd.shell import daemon as daemon_module
from ipvsd.shell.daemon import Daemon, Options
from tests.support import vtime
from tests.support.probes import Scripted

VIP = ServiceKey.inet(Proto.TCP, "10.2.0.240", 80)
CONFIG = """
[settings]
state_dir = "{state}"
metrics_listen = "{metrics}"
control_socket = "{sock}"
clean_stop = {clean}
watch_config = false
dns_ttl = 60
{settings}

[check_defaults]
interval = 1
timeout = 0.5
rise = 1
fall = 1
alpha = true
warmup = 0

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"
{fallback}

[[services.checks]]
type = "tcp"
sentinel = false
{reals}
"""


@dataclass
class Shell:
    """A daemon over the fake kernel with scripted probes and a scripted resolver, on virtual time."""

    tmp: Path
    kernel: FakeKernel = field(default_factory=FakeKernel)
    probes: Scripted = field(default_factory=Scripted)
    names: dict[str, str] = field(default_factory=dict)
    events: list[bus.Event] = field(default_factory=list)
    daemon: Daemon | None = None
    task: asyncio.Task[int] | None = None

    @property
    def path(self) -> Path:
        return self.tmp / "ipvsd.toml"

    def write(self, reals: list[str], *, clean: bool = False, fallback: str = "", metrics: str = "",
              settings: str = "") -> None:
        text = "".join(f'\n[[services.reals]]\naddress = "{r.rsplit(":", 1)[0]}"\nport = {r.rsplit(":", 1)[1]}\n'
                       for r in reals)
        fb = f'fallback = {{ address = "{fallback}" }}' if fallback else ""
        self.path.write_text(CONFIG.format(state=self.tmp / "state", sock=self.tmp / "control.sock",
                                           clean=str(clean).lower(), reals=text, fallback=fb, metrics=metrics,
                                           settings=settings))

    def lookup(self, name: str, family: int) -> str:
        if name in self.names:
            return self.names[name]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def start(self, **kw: Any) -> Daemon:
        config, _ = configmod.load(str(self.path))
        self.daemon = Daemon(Options(config_path=str(self.path), watch=False, **kw), config, lambda: self.kernel,
                             lookup=self.lookup, probe_factory=self.probes)
        self.daemon.bus.subscribe(self.events.append)
        self.task = asyncio.create_task(self.daemon.run())
        return self.daemon

    async def stop(self) -> int:
        assert self.daemon is not None and self.task is not None
        self.daemon.stopping.set()
        return await asyncio.wait_for(self.task, 30)

    async def weights(self) -> dict[tuple[str, int], int]:
        svc = await self.kernel.service(VIP)
        return {} if svc is None else {(d.key.addr, d.key.port): d.attrs.weight for d in svc.dests}

    async def until(self, cond: Callable[[], Coroutine[Any, Any, bool]] | Callable[[], bool], what: str,
                    timeout: float = 30.0) -> None:
        """Wait (virtual time) until `cond` holds; fail naming `what` after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = cond()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            assert self.task is None or not self.task.done(), f"the daemon ended: {self.task}"
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def reals(self) -> dict[str, tuple[str, str]]:
        assert self.daemon is not None and self.daemon.view is not None
        return {r.real: (r.state, r.reason) for s in self.daemon.view.statuses() for r in s.reals}

    def has(self, want: dict[tuple[str, int], int]) -> Callable[[], Coroutine[Any, Any, bool]]:
        async def check() -> bool:
            return await self.weights() == want
        return check


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or "Task exception" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    vtime.run(test())


def test_reload_with_an_unresolvable_name_and_a_closed_port_is_applied_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])

    async def go() -> None:
        d = await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        sh.probes.ok[3] = False  # a real on a closed port
        sh.write(["127.0.0.1:1", "nonexistent.invalid:2", "127.0.0.1:3"])
        r = await d.reload("SIGHUP")
        assert (r.outcome, r.error) == ("ok", "")
        assert any(k.target.port == 3 for k in d.probes.jobs), "the new real's probe runs"
        await sh.until(lambda: sh.reals().get("127.0.0.1:3", ("",))[0] == "down", "rs3 down after its check")
        state, reason = sh.reals()["nonexistent.invalid:2"]
        assert state == "down" and reason.startswith("dns: nonexistent.invalid")
        assert await sh.weights() == {("127.0.0.1", 1): 1}, "the daemon's view and the kernel agree"
        again = await d.reload("SIGHUP")
        assert again.outcome == "unchanged"  # true now: the configuration is wholly the running one
        await asyncio.sleep(5)  # five check intervals of re-resolving: said once, not once per try
        failures = [r for r in caplog.records if "cannot resolve nonexistent.invalid" in r.getMessage()]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        # The name starts to resolve: re-resolved at its check's interval, probed, then in the table.
        sh.names["nonexistent.invalid"] = "127.0.0.2"
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.2", 2): 1}), "the named real in", timeout=5)
        assert sh.reals()["127.0.0.2:2"][0] == "up"
        assert await sh.stop() == 0

    run(go)
    no_traceback(caplog)
    assert sum(1 for e in sh.events if isinstance(e, bus.Reloaded) and e.outcome == "ok") == 1


def test_start_and_plan_with_a_name_that_does_not_resolve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1", "nonexistent.invalid:2"])

    async def go() -> None:
        config, _ = configmod.load(str(sh.path))
        p = await compute(config, sh.kernel, tmp_path / "state.json", probe=False, lookup=sh.lookup)
        assert [str(op) for op in p.ops] == ["-A -t 10.2.0.240:80 -s rr"]  # rs1 unchecked: kept out, no crash
        await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in, the daemon running")
        assert sh.reals()["nonexistent.invalid:2"][0] == "down"
        assert await sh.stop() == 0

    run(go)
    no_traceback(caplog)


def test_a_reload_whose_probes_cannot_be_built_is_rejected_and_keeps_the_running_config(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])
    scripted = sh.probes

    def factory(check: Any) -> Scripted:
        if check.port == 9:
            raise ValueError("this check cannot be built")
        return scripted

    sh.probes = factory  # type: ignore[assignment]

    async def go() -> None:
        d = await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        running, jobs = d.config, dict(d.probes.jobs)
        sh.path.write_text(sh.path.read_text().replace('type = "tcp"', 'type = "tcp"\nport = 9'))
        r = await d.reload("SIGHUP")
        assert r.outcome == "error" and "cannot be built" in r.error
        assert d.config is running and d.probes.jobs == jobs and d.reloads["error"] == 1
        again = await d.reload("SIGHUP")
        assert again.outcome == "error", "a rejected configuration is never taken for the running one"
        assert await sh.weights() == {("127.0.0.1", 1): 1}
        assert await sh.stop() == 0

    run(go)
    no_traceback(caplog)


def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return sock


def notes(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_a_kernel_without_ipvs_ends_run_with_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    notify = notify_socket(tmp_path, monkeypatch)
    sh = Shell(tmp_path)
    sh.kernel.ipvs = False
    sh.write(["127.0.0.1:1"])

    async def go() -> int:
        await sh.start()
        assert sh.task is not None
        return await asyncio.wait_for(sh.task, 5)

    assert vtime.run(go()) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no IPVS" in errors[0] and "modprobe ip_vs" in errors[0]
    assert sh.probes.calls == {}, "no real was probed"
    assert not (tmp_path / "control.sock").exists(), "no control socket was opened"
    assert not any("READY=1" in n for n in notes(notify))
    no_traceback(caplog)


def test_ready_waits_for_a_pass_that_programmed_the_table(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    notify = notify_socket(tmp_path, monkeypatch)
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])
    sh.kernel.fail = lambda op: errno.ENOMEM if op.startswith("-A ") else None

    async def go() -> None:
        d = await sh.start()
        await sh.until(lambda: any(isinstance(e, bus.PassDone) and e.error for e in sh.events), "a failed pass")
        assert not any("READY=1" in n for n in notes(notify)), "a failed first pass is not ready"
        sh.kernel.fail = None
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in once the kernel takes it")
        await sh.until(lambda: d.ready, "ready")
        assert await sh.stop() == 0

    run(go)
    assert any("READY=1" in n for n in notes(notify))


def test_kernel_errors_back_off_are_counted_published_and_saved_before(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2"])
    sh.kernel.fail = lambda op: errno.EIO if op.startswith("-a ") and ":2 " in op else None
    events_file = tmp_path / "events.jsonl"

    async def go() -> None:
        d = await sh.start(events_file=str(events_file))
        await sh.until(lambda: sum(1 for e in sh.events if isinstance(e, bus.PassDone) and e.error) >= 4,
                       "four failed passes")
        assert d.reconciler is not None and d.reconciler.mirror is None, "the mirror is dropped after a failure"
        state = json.loads((tmp_path / "state" / "state.json").read_text())
        assert [s["addr"] for s in state["owned"]] == ["10.2.0.240"], "ownership saved before the kernel changed"
        assert d.metrics is not None
        failed = d.metrics.registry.get_sample_value("ipvsd_reconcile_operations_failed_total", {"op": "add_dest"})
        assert failed is not None and failed >= 4
        assert await sh.stop() == 0

    run(go)
    failed = [e for e in sh.events if isinstance(e, bus.PassDone) and e.error]
    assert len(failed) >= 4
    assert all(e.failed is not None and str(e.failed).startswith("-a ") for e in failed)
    lines = [json.loads(x) for x in events_file.read_text().splitlines()]
    assert any(x["type"] == "kernel-error" and "-a -t 10.2.0.240:80 -r 127.0.0.1:2" in x["op"] for x in lines)
    no_traceback(caplog)


def test_failed_passes_back_off_exponentially(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])
    sh.kernel.fail = lambda op: errno.EIO if op == "-L" else None  # the table cannot even be read
    at: list[float] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        await sh.start()
        assert sh.daemon is not None
        sh.daemon.bus.subscribe(lambda e: at.append(loop.time()) if isinstance(e, bus.PassFailed) else None)
        await sh.until(lambda: len(at) >= 5, "five failed passes", timeout=60)
        assert await sh.stop() == 0

    run(go)
    gaps = [b - a for a, b in itertools.pairwise(at)][:4]
    # 0.5, 1, 2, 4 s between attempts, though first results of the checks asked for passes meanwhile
    assert gaps == pytest.approx([0.5, 1.0, 2.0, 4.0], abs=0.01), gaps


def test_clean_stop_without_a_kernel_says_so_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"], clean=True)

    async def go() -> int:
        await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        sh.kernel.fail = lambda op: errno.ENODEV  # the kernel is gone
        return await sh.stop()

    assert vtime.run(go()) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "clean stop" in r.getMessage()]
    assert len(errors) == 1 and "owned services stay" in errors[0]
    no_traceback(caplog)


def test_cold_start_programs_the_reals_first_and_never_the_fallback(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2"], fallback="127.0.0.9")
    sh.probes.hold = 0.3  # the first checks take a while to answer

    async def go() -> None:
        await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 1}), "both reals in")
        assert await sh.stop() == 0

    run(go)
    assert not [op for op in sh.kernel.log if "127.0.0.9" in op], sh.kernel.log
    assert sh.kernel.log[:3] == ["-A -t 10.2.0.240:80 -s rr", "-a -t 10.2.0.240:80 -r 127.0.0.1:1 -m -w 1",
                                 "-a -t 10.2.0.240:80 -r 127.0.0.1:2 -m -w 1"]


def test_a_restart_that_adopts_the_table_does_not_wait_for_the_checks(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])
    sh.probes.hold = 5.0
    first: list[float] = []

    async def go() -> None:
        from ipvsd.model import DestAttrs, Fwd, ServiceAttrs

        await sh.kernel.add_service(VIP, ServiceAttrs(scheduler="rr"))
        await sh.kernel.add_dest(VIP, DestKey.of("127.0.0.1", 1), DestAttrs(fwd=Fwd.ROUTE, weight=1))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sh.start()
        assert sh.daemon is not None
        sh.daemon.bus.subscribe(lambda e: first.append(loop.time() - t0) if isinstance(e, bus.PassDone) else None)
        await sh.until(lambda: bool(first), "a first pass")
        assert await sh.stop() == 0

    run(go)
    assert first[0] < 1.0  # did not wait the 5 s the checks take


def test_reload_says_which_settings_need_a_restart_and_applies_the_rest(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])

    async def go() -> None:
        d = await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        sh.write(["127.0.0.1:1"], metrics="127.0.0.1:0", settings="resync_interval = 7")
        text = sh.path.read_text().replace("[check_defaults]", "[settings.limits]\ncheck_concurrency = 8\n\n"
                                           "[check_defaults]")
        sh.path.write_text(text)
        r = await d.reload("SIGHUP")
        assert r.outcome == "ok" and r.restart == ("metrics_listen",)
        assert d.http is None, "the endpoint opens at the next start"
        assert d.config.settings.resync_interval == 7 and d._resync() == 7
        assert d.scheduler is not None and d.scheduler.admission.ceiling == 8
        assert await sh.stop() == 0

    run(go)
    assert any("metrics_listen changed and take effect at the next restart" in r.getMessage()
               for r in caplog.records)


def test_a_transition_names_its_reals_and_a_probe_key_its_type(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])

    async def go() -> None:
        await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        sh.probes.ok[1] = False
        await sh.until(sh.has({}), "rs1 out")
        assert await sh.stop() == 0

    run(go)
    downs = [e for e in sh.events if isinstance(e, bus.Transitioned) and not e.transition.up]
    assert downs and downs[0].reals == ((VIP, DestKey.of("127.0.0.1", 1)),)
    key: ProbeKey = downs[0].key
    assert key.type == "tcp" and str(key).startswith("tcp ")


ROOT = Path(__file__).resolve().parents[2]


def unit_lines() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / "etc" / "ipvsd.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_loads_ip_vs_and_runs_ipvsd_where_the_readme_installs_it() -> None:
    unit = unit_lines()
    (start,) = unit["ExecStart"]
    (reload,) = unit["ExecReload"]
    binary = start.split()[0]
    assert f"python3 -m venv {binary.removesuffix('/bin/ipvsd')}" in (ROOT / "README.md").read_text()
    assert reload.split()[:2] == [binary, "reload"]
    state_dir = start.split("--state-dir ")[1].split()[0]
    assert reload.endswith(f"--state-dir {state_dir}")  # the daemon's socket is STATE_DIR/control.sock
    assert any(pre.startswith("+") and pre.endswith("modprobe ip_vs") for pre in unit["ExecStartPre"])


def test_the_units_exec_reload_fails_on_a_broken_file_and_the_daemon_keeps_its_config(tmp_path: Path) -> None:
    """`systemctl reload` runs ExecReload: the same command, run here by hand against a running daemon."""
    import subprocess
    import sys

    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])
    state = tmp_path / "state"
    (reload,) = unit_lines()["ExecReload"]
    argv = [sys.executable, "-m", "ipvsd", *reload.replace("/var/lib/ipvsd", str(state)).split()[1:]]

    def exec_reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})

    async def go() -> None:
        d = await sh.start(state_dir=str(state))
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        running = d.config
        sh.path.write_text(sh.path.read_text().replace('scheduler = "rr"', 'scheduler = "rr"\nbogus = 1'))
        broken = await asyncio.to_thread(exec_reload)
        assert broken.returncode == 1, broken
        assert "reload rejected, the running configuration stays" in broken.stderr and "bogus" in broken.stderr
        assert "Traceback" not in broken.stderr + broken.stdout
        assert d.config is running
        sh.write(["127.0.0.1:1", "127.0.0.1:2"])
        fixed = await asyncio.to_thread(exec_reload)
        assert fixed.returncode == 0 and "new configuration" in fixed.stdout, fixed
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 1}), "rs2 in")
        assert await sh.stop() == 0

    run(go)


def test_ipvsd_run_on_this_host_without_ipvs_exits_with_one_line(tmp_path: Path) -> None:
    """The real netlink adapter on a kernel without IPVS (as the machines this suite runs on have)."""
    import subprocess
    import sys

    from tests.netns import ipvs_available

    if ipvs_available():
        pytest.skip("this kernel has IPVS")
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])
    got = subprocess.run([sys.executable, "-m", "ipvsd", "run", "-c", str(sh.path)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                    "PYTHONPATH": str(ROOT)})
    lines = got.stderr.splitlines()
    assert got.returncode == 1 and len(lines) == 1, got
    assert "the kernel has no IPVS" in lines[0] and "modprobe ip_vs" in lines[0]
    assert not (tmp_path / "control.sock").exists() and not (tmp_path / "state").exists()


def test_a_reload_naming_a_scheduler_this_kernel_cannot_load_is_rejected_and_the_table_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1"])

    async def go() -> None:
        d = await sh.start()
        d.schedulers = lambda name: False  # the host's module index: no ip_vs_roundrobin
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        running = d.config
        sh.path.write_text(sh.path.read_text().replace('scheduler = "rr"', 'scheduler = "roundrobin"'))
        r = await d.reload("SIGHUP")
        assert r.outcome == "error" and f"{sh.path}:" in r.error and "no module ip_vs_roundrobin" in r.error
        assert d.config is running
        assert await sh.weights() == {("127.0.0.1", 1): 1}
        assert await sh.stop() == 0

    run(go)
    no_traceback(caplog)


def test_a_reload_that_cannot_block_is_prepared_on_the_loop_and_one_that_resolves_a_name_in_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread of its own costs a small reload more than its work in the lab; a lookup must not hold the loop."""
    sh = Shell(tmp_path)
    sh.names = {"web.example": "127.0.0.3"}
    sh.write(["127.0.0.1:1"])
    on_loop: list[bool] = []
    prepare = daemon_module.prepare

    def recorded(*args: Any, **kwargs: Any) -> Any:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return prepare(*args, **kwargs)

    monkeypatch.setattr(daemon_module, "prepare", recorded)

    async def go() -> None:
        d = await sh.start()
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "rs1 in")
        sh.write(["127.0.0.1:1", "127.0.0.2:2"])
        assert (await d.reload("test")).outcome == "ok"
        sh.write(["127.0.0.1:1", "web.example:3"])
        assert (await d.reload("test")).outcome == "ok"
        assert await sh.stop() == 0

    run(go)
    # the start plans every service (in a thread), the edit of literals on the loop, the name in a thread
    assert on_loop[:3] == [False, True, False]
