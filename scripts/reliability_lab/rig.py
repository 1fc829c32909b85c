"""The reliability suite's rig: the lab, one `ipvsd run` under test, its configuration as a model, steady traffic.

The configuration is a main file plus one drop-in per service (conf.d/NAME.toml), rendered from `Layout`, so an
edit is a change of the model and the table it should produce is a pure function of the model and of what the rig
did to the reals (`expected`). The daemon is started with NOTIFY_SOCKET pointing at a datagram socket of ours, so
"ready" is systemd's READY=1, not a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ipvsd.shell import control
from scripts.bench_lab.peers import ROOT, rss_kib, tree
from scripts.bench_lab.poll import Table, Watcher
from scripts.bench_lab.traffic import Traffic
from tests.kernel import installed
from tests.kernel.daemon import keepalive_request
from tests.kernel.lab import RECEIVE, Lab
from tests.netns import join_netns, sh

VIP = "10.2.0.240"
RESYNC = 2.0  # resync_interval: how soon a hand edit of an owned entry must be repaired
Result = dict[str, Any]


@dataclass(frozen=True)
class Real:
    addr: str
    port: int = 80
    weight: int = 1

    @property
    def dest(self) -> str:
        return f"{self.addr}:{self.port}"


@dataclass(frozen=True)
class Service:
    """One virtual service (TCP, NAT) in its own drop-in, checked by GET /index.html for the receive string."""

    name: str
    port: int
    reals: tuple[Real, ...]
    scheduler: str = "rr"

    @property
    def key(self) -> str:
        return f"TCP {VIP}:{self.port}"

    def toml(self) -> str:
        lines = ["[[services]]", f'name = "{self.name}"', f'address = "{VIP}"', f"port = {self.port}",
                 f'scheduler = "{self.scheduler}"', 'forward = "masq"', 'on_failure = "remove"', "",
                 "[[services.checks]]", 'type = "http"', 'path = "/index.html"', f'receive = "{RECEIVE}"']
        for r in self.reals:
            lines += ["", "[[services.reals]]", f'address = "{r.addr}"', f"port = {r.port}", f"weight = {r.weight}"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Layout:
    """The whole configuration: the services, by drop-in name."""

    services: tuple[Service, ...]

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def with_service(self, svc: Service) -> Layout:
        rest = tuple(s for s in self.services if s.name != svc.name)
        return Layout(tuple(sorted((*rest, svc), key=lambda s: s.name)))

    def without(self, name: str) -> Layout:
        return Layout(tuple(s for s in self.services if s.name != name))


def main_toml() -> str:
    return "\n".join([
        "# ipvsd under the reliability suite (scripts/reliability)",
        'include = ["conf.d/*.toml"]',
        "[settings]",
        'metrics_listen = ""',
        f"resync_interval = {RESYNC}",
        "clean_stop = false",  # a stop or a crash leaves the table serving: restarts must be hitless
        "watch_config = true",
        "drain_timeout = 0",
        "dns_ttl = 2",  # a name that stops resolving (the faults scenario) is seen within seconds
        "",
        "[settings.limits]",
        # The blast-radius guard has tests of its own; here it would refuse a 2-real service losing one real.
        "max_delete_fraction = 1.0",
        "",
        "[check_defaults]",
        "interval = 1",
        "timeout = 1",
        "rise = 1",
        "fall = 1",
    ]) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """What an editor that renames does: readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def expected(layout: Layout, down: set[str], drained: set[str]) -> Table:
    """The table `layout` should produce when the reals in `down` (dest strings) fail their checks and those in
    `drained` are in maintenance (weight 0)."""
    out: Table = {}
    for s in layout.services:
        out[s.key] = {r.dest: (0 if r.dest in drained else r.weight) for r in s.reals if r.dest not in down}
    return out


class Notify:
    """Our end of the daemon's NOTIFY_SOCKET: every datagram, with the monotonic time it arrived."""

    def __init__(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)  # an unprivileged daemon must be able to send to it
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="notify", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
                self._cond.notify_all()

    def wait(self, needle: str, *, since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, m in self.messages:
                    if t >= since and needle in m.splitlines():
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))


@dataclass
class Rig:
    """The lab, the ipvsd under test and what the suite keeps while it runs."""

    lab: Lab
    work: Path
    layout: Layout
    prefix: tuple[str, ...] = ()
    """Runs the daemon through this (setpriv to an unprivileged user with two capabilities), or as root."""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    notify: Notify = field(init=False)
    watcher: Watcher = field(init=False)

    def __post_init__(self) -> None:
        (self.work / "run").mkdir(parents=True, exist_ok=True)
        (self.work / "state").mkdir(parents=True, exist_ok=True)
        self.notify = Notify(self.work / "run" / "notify.sock")
        self.watcher = Watcher(self.lab.lb, 0.02).start()

    # --- configuration ------------------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.work / "ipvsd.toml"

    def dropin(self, name: str) -> Path:
        return self.work / "conf.d" / f"{name}.toml"

    def write(self, layout: Layout) -> None:
        """Write the whole configuration for `layout` (drop-ins no longer in it are deleted)."""
        write_atomic(self.conf, main_toml())
        for s in layout.services:
            if not self.dropin(s.name).exists() or self.dropin(s.name).read_text() != s.toml():
                write_atomic(self.dropin(s.name), s.toml())
        names = {s.name for s in layout.services}
        for f in (self.work / "conf.d").glob("*.toml"):
            if f.stem not in names:
                f.unlink()
        self.layout = layout

    # --- the daemon ---------------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.work / "ipvsd.log"

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def start(self) -> float:
        assert not self.running, "ipvsd already running"
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "PYTHONDONTWRITEBYTECODE": "1"}
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.lb, *self.prefix, *installed.daemon_python(), "-m", "ipvsd", "run",
                 "-c", str(self.conf), "--state-dir", str(self.work / "state")],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        return t0

    def wait_ready(self, since: float, timeout: float = 180.0) -> float | None:
        return self.notify.wait("READY=1", since=since, timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` to the daemon and reap it; its exit status (negative: the signal), None if not running."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # external checks it left behind
        self.proc = None
        return rc

    def rss_kib(self) -> int:
        return rss_kib(tree(self.proc.pid)) if self.running and self.proc else 0

    def hup(self) -> float:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        return t0

    def control(self, cmd: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        """One request on the control socket, from this process (a client start costs seconds in the lab); the
        daemon's refusal comes back as {"ok": False, "error": ...}, as the daemon wrote it."""
        path = str(self.work / "state" / "control.sock")  # `--state-dir` puts it there
        try:
            return asyncio.run(asyncio.wait_for(control.request(path, cmd, **args), timeout))
        except control.ControlError as e:
            return {"ok": False, "error": str(e)}

    # --- observing ----------------------------------------------------------------------------------------------
    def table(self) -> Table:
        return self.watcher.current()

    def settle(self, want: Table, *, since: float, timeout: float) -> float | None:
        """When the table first equals `want` (at or after `since`), None if not within `timeout`."""
        return self.watcher.wait_for(lambda t: t == want, since=since, timeout=timeout)

    def changes(self, t0: float, t1: float) -> int:
        return len(self.watcher.changes_between(t0, t1))

    def close(self) -> None:
        if self.running:
            self.kill()
        self.watcher.stop()
        self.notify.sock.close()


OPS = re.compile(r"ipvsadm (-[AEDaed] .*?)(?:   \(.*\))?$", re.M)


def ops_in(text: str) -> list[str]:
    """The kernel operations a stretch of the daemon's log reports (in ipvsadm notation)."""
    return OPS.findall(text)


@dataclass
class LongLived:
    """`n` keep-alive connections through the VIP from the client, one request on each every `period` s.

    A request that fails counts as a break; the connection is then opened again (and counted as a reconnect)."""

    ns: str
    addr: str
    n: int = 4
    period: float = 1.0
    requests: int = 0
    breaks: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LongLived:
        self._thread = threading.Thread(target=self._run, name="long-lived", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)

    def _open(self) -> socket.socket | None:
        try:
            return socket.create_connection((self.addr, 80), timeout=3)
        except OSError:
            return None

    def _run(self) -> None:
        join_netns(self.ns)
        socks: list[socket.socket | None] = [self._open() for _ in range(self.n)]
        while not self._stop.wait(self.period):
            for i, s in enumerate(socks):
                ok = False
                if s is not None:
                    with contextlib.suppress(OSError, AssertionError, ValueError, StopIteration, IndexError):
                        ok = RECEIVE in keepalive_request(s)
                self.requests += 1
                if not ok:
                    self.breaks.append(time.monotonic())
                    if s is not None:
                        s.close()
                    socks[i] = self._open()
        for s in socks:
            if s is not None:
                s.close()

    def between(self, t0: float, t1: float) -> int:
        return sum(1 for t in list(self.breaks) if t0 <= t < t1)


@contextlib.contextmanager
def traffic(lab: Lab, rate: float = 20.0, long_lived: int = 4) -> Iterator[tuple[Traffic, LongLived]]:
    """New connections at `rate` per second and `long_lived` keep-alive ones, for the duration of the block."""
    t = Traffic(lab.client, lab.vip, rate=rate).start()
    ll = LongLived(lab.client, lab.vip, n=long_lived).start()
    try:
        yield t, ll
    finally:
        t.stop()
        ll.stop()


def failed(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k != "ok")


def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return dict(Counter(a) + Counter(b))


def base_layout(lab: Lab) -> Layout:
    """web (VIP:80) on rs1, rs2; api (VIP:81) on rs1, rs2, both served by the reals' nginx on port 80."""
    rs1, rs2 = lab.real("rs1").addr, lab.real("rs2").addr
    return Layout((Service("api", 81, (Real(rs1), Real(rs2))), Service("web", 80, (Real(rs1), Real(rs2)))))


def set_weight(layout: Layout, svc: str, dest: str, weight: int) -> Layout:
    s = layout.service(svc)
    return layout.with_service(replace(s, reals=tuple(replace(r, weight=weight) if r.dest == dest else r
                                                      for r in s.reals)))


def iptables(ns: str, *args: str) -> None:
    sh("iptables", *args, ns=ns)


Say = Callable[[str], None]
