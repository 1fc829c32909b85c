"""The three daemons under test: equivalent configurations, and start/reload/stop in the director's namespace.

Every daemon checks GET /index.html on each real's port 80 for the receive string, with the same interval,
timeout, failure count (1) and rise (1); a failed real is removed (ldirectord quiescent=no, keepalived without
inhibit_on_failure, ipvsd on_failure=remove); new reals start down until a first good check (ldirectord does
this by itself, keepalived `alpha`, ipvsd `alpha = true`). All run in the foreground, as a supervisor would run
them: ldirectord `supervised=yes`, keepalived `-n -C` (checker only, no VRRP), ipvsd `run`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.kernel import installed
from tests.kernel.lab import RECEIVE

ROOT = Path(__file__).resolve().parents[2]
DAEMONS = ("ipvsd", "ldirectord", "keepalived")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Virtual:
    """A virtual service VIP:port (TCP, rr, NAT) with reals on the same port."""

    vip: str
    port: int
    reals: tuple[str, ...]
    checked: bool = True
    """False: no health check at all (the real is always up), for the programming scenario."""
    rport: int = 0
    """The reals' port (and the checks'); 0: the service's port."""

    @property
    def real_port(self) -> int:
        return self.rport or self.port


@dataclass(frozen=True)
class Settings:
    """What all three daemons are told, each in its own words."""

    interval: int = 1
    timeout: int = 1
    receive: str = RECEIVE
    path: str = "/index.html"
    keep_on_stop: bool = False
    """Leave the table in place when stopped (ldirectord cleanstop=no, keepalived -I, ipvsd clean_stop=false)."""
    comment: str = ""
    autoreload: bool = False
    """ipvsd: reload when the file changes (`watch_config`); the peers are sent SIGHUP either way."""


def ipvsd_conf(virtuals: list[Virtual], s: Settings, workdir: Path) -> str:
    lines = [f"# {s.comment}", "[settings]", 'metrics_listen = ""', f'control_socket = "{workdir}/ipvsd.sock"',
             f'state_dir = "{workdir}/state"', f"clean_stop = {str(not s.keep_on_stop).lower()}",
             f"watch_config = {str(s.autoreload).lower()}", "drain_timeout = 0", "", "[settings.limits]",
             "max_delete_fraction = 1.0", "check_concurrency = 1024", "",
             "[check_defaults]", f"interval = {s.interval}", f"timeout = {s.timeout}", "rise = 1", "fall = 1",
             "alpha = true"]
    for v in virtuals:
        lines += ["", "[[services]]", f'address = "{v.vip}"', f"port = {v.port}", 'scheduler = "rr"',
                  'forward = "masq"', 'on_failure = "remove"']
        if v.checked:
            lines += ["[[services.checks]]", 'type = "http"', f'path = "{s.path}"', f'receive = "{s.receive}"']
        for r in v.reals:
            lines += ["[[services.reals]]", f'address = "{r}"', f"port = {v.real_port}"]
    return "\n".join(lines) + "\n"


def ldirectord_conf(virtuals: list[Virtual], s: Settings, workdir: Path) -> str:
    lines = [f"# {s.comment}", f"checktimeout={s.timeout}", f"negotiatetimeout={s.timeout}",
             f"checkinterval={s.interval}", "failurecount=1", "autoreload=no", "quiescent=no", "fork=no",
             "supervised=yes", f"cleanstop={'no' if s.keep_on_stop else 'yes'}",
             f'logfile="{workdir}/ldirectord.log"']
    for v in virtuals:
        lines.append(f"virtual={v.vip}:{v.port}")
        lines += [f"\treal={r}:{v.real_port} masq 1" for r in v.reals]
        if v.checked:
            lines += ["\tservice=http", "\tchecktype=negotiate", f'\trequest="{s.path.lstrip("/")}"',
                      f'\treceive="{s.receive}"']
        else:
            lines.append("\tchecktype=on")
        lines += ["\tscheduler=rr", "\tprotocol=tcp"]
    return "\n".join(lines) + "\n"


def keepalived_conf(virtuals: list[Virtual], s: Settings, workdir: Path) -> str:
    lines = [f"# {s.comment}", "global_defs {", "    router_id bench", "}"]
    for v in virtuals:
        lines += [f"virtual_server {v.vip} {v.port} {{", f"    delay_loop {s.interval}", "    lb_algo rr",
                  "    lb_kind NAT", "    protocol TCP"]
        if v.checked:
            lines.append("    alpha")
        for r in v.reals:
            lines += [f"    real_server {r} {v.real_port} {{", "        weight 1"]
            if v.checked:
                # regex: the body must contain the receive string, like ldirectord's receive
                # one keyword per line: keepalived's parser drops what follows the first on a line
                lines += ["        HTTP_GET {", "            url {", f"                path {s.path}",
                          "                status_code 200", f"                regex {s.receive}", "            }",
                          f"            connect_timeout {s.timeout}", "            retry 0",
                          f"            delay_before_retry {s.interval}", "        }"]
            lines.append("    }")
        lines.append("}")
    return "\n".join(lines) + "\n"


RENDER = {"ipvsd": ipvsd_conf, "ldirectord": ldirectord_conf, "keepalived": keepalived_conf}
SUFFIX = {"ipvsd": "toml", "ldirectord": "cf", "keepalived": "conf"}


def tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return out


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """User and system (kernel) CPU seconds of these processes and every child they reaped.

    Apart because a probe's TCP connection costs kernel time that a faster prober cannot save: the split says
    how much of a gap to a peer is the daemon's own code (user) and how much the kernel's work (system: its
    connections and system calls, and the network softirqs that ran while it did, as the kernel charges them).
    """
    user = system = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            user += int(fields[11]) + int(fields[13])  # utime + cutime
            system += int(fields[12]) + int(fields[14])  # stime + cstime
    return user / TICK, system / TICK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


@dataclass
class Daemon:
    """One daemon under test, run in namespace `ns` with its config and logs in `workdir`."""

    kind: str
    workdir: Path
    ns: str = "lb"
    settings: Settings = Settings()
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def conf(self) -> Path:
        return self.workdir / f"{self.kind}.{SUFFIX[self.kind]}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.kind}.out"

    def write(self, virtuals: list[Virtual], **changes: object) -> None:
        """Write the config atomically (what an editor that renames does)."""
        if changes:
            self.settings = Settings(**{**self.settings.__dict__, **changes})
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(RENDER[self.kind](virtuals, self.settings, self.workdir))
        tmp.rename(self.conf)

    def argv(self) -> list[str]:
        d, c = self.workdir, str(self.conf)
        if self.kind == "ipvsd":
            return [*installed.daemon_python(), "-m", "ipvsd", "run", "-c", c, "--state-dir", str(d / "state")]
        if self.kind == "ldirectord":
            return ["/usr/sbin/ldirectord", c, "start"]
        return ["keepalived", "-n", "-C", "-l", "-D", "-G", "-f", c, "-p", f"{d}/ka.pid", "-c", f"{d}/ka-chk.pid",
                "-r", f"{d}/ka-vrrp.pid", *(["-I"] if self.settings.keep_on_stop else [])]

    def start(self) -> float:
        """Start the daemon; return the monotonic time just before the fork."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.kind} already running"
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"--- start {self.starts} ---\n")
            log.flush()
            t0 = time.monotonic()
            # `ip netns exec` execs the daemon: the pid is the daemon's own
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *self.argv()], cwd=ROOT,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        return t0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.running and self.proc else []

    def reload(self) -> float:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        return t0

    def stop(self, timeout: float = 120.0) -> float:
        """SIGTERM and wait (the daemon's own shutdown: cleanstop or not); return the seconds it took."""
        if not self.running or self.proc is None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_orphans()
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL the whole process tree at once (a crash, or systemd's final kill), and reap it."""
        if self.proc is None:
            return
        for p in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._reap_orphans()

    def _reap_orphans(self) -> None:
        """keepalived's checker child may outlive its parent for a moment: wait for the session to empty."""
        if self.proc is None:
            return
        sid = self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _session_alive(sid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGKILL)


def _session_alive(sid: int) -> bool:
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()
                if int(fields[3]) == sid and fields[0] != "Z":
                    return True
    return False
