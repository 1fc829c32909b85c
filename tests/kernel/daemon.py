"""Run `ipvsd run` as a real process in the director's namespace, read what it logs; a keep-alive request helper.

With IPVSD_TEST_AS_USER=UID in the environment, every daemon of the kernel tests runs as that uid with only
CAP_NET_ADMIN and CAP_NET_RAW, as etc/ipvsd.service runs it (issue 19: every scenario passes that way); its
configuration's directory is made readable and its state directory its own, as the install and the unit do.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lab import Lab, wait_until

ROOT = Path(__file__).resolve().parents[2]
NET = "-all,+net_admin,+net_raw"  # the unit's CapabilityBoundingSet= and AmbientCapabilities=
IMPORTS = "import ipvsd.commands.run, ipvsd.kernel.netlink, ipvsd.shell.daemon, pyroute2, inotify_simple"
AS_USER = os.environ.get("IPVSD_TEST_AS_USER")


def setpriv(uid: int, caps: str = NET, gid: int | None = None) -> tuple[str, ...]:
    """Run as `uid` (group `gid`, by default the uid's number; no others) with exactly `caps` (ambient: they
    survive the exec)."""
    return ("setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}")


@functools.cache
def interpreter(uid: int, gid: int) -> tuple[str, dict[str, str] | None]:
    """An interpreter and environment with which `uid` can import ipvsd from this checkout; else skip.

    The checkout's own .venv first; when its interpreter or the checkout is out of the uid's reach (pyenv under
    a mode-0700 /root, say), the system's python of the same version with the checkout and the venv's
    site-packages on PYTHONPATH."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    same = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for python, env in ((sys.executable, None),
                        (same, {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *site])})):
        p = subprocess.run([*setpriv(uid, gid=gid), python, "-c", IMPORTS], capture_output=True, text=True,
                           env=env, timeout=300)
        if p.returncode == 0:
            print(f"uid {uid} runs ipvsd with {python}{' and the checkout on PYTHONPATH' if env else ''}")
            return python, env
        said = p.stderr.strip().splitlines()
        tried.append(f"{python}: {said[-1] if said else f'exit {p.returncode}'}")
    pytest.skip(f"uid {uid} cannot run ipvsd from {ROOT} ({'; '.join(tried)}): the checkout and its .venv must be "
                "readable by other users for this test")


def hand_over(config: Path, state_dir: Path, uid: int, gid: int) -> None:
    """Let `uid` read `config` and watch its directory, and own `state_dir` (pytest's directories are 0700)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for path in [state_dir, *state_dir.rglob("*")]:
        os.chown(path, uid, gid)
    cdir = config.resolve().parent
    cdir.chmod(cdir.stat().st_mode | 0o005)
    for d in {*cdir.parents, *state_dir.resolve().parents}:
        if not d.stat().st_mode & 0o001:
            d.chmod(d.stat().st_mode | 0o001)  # traversal only: nothing else of pytest's is listed


@dataclass
class Ipvsd:
    """One `ipvsd run` process in namespace `lab.lb`; its stderr goes to `log_path`.

    `runner` goes before the interpreter inside the namespace (`setpriv ...`: ipvsd as another user, with only
    some capabilities); `python` and `env` are the interpreter and environment that user can run ipvsd with.
    """

    lab: Lab
    config: Path
    state_dir: Path
    resync: float = 2.0
    extra: tuple[str, ...] = ()
    runner: tuple[str, ...] = ()
    python: str = sys.executable
    env: dict[str, str] | None = None
    owner: tuple[int, int] | None = None  # (uid, gid) the config and state directory are handed over to
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    starts: int = 0

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / "ipvsd.log"
        if AS_USER is not None and not self.runner:
            uid = int(AS_USER)
            self.runner, self.owner = setpriv(uid), (uid, uid)
            self.python, self.env = interpreter(uid, uid)

    def start(self) -> Ipvsd:
        self.starts += 1
        if self.owner is not None:
            hand_over(self.config, self.state_dir, *self.owner)
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.lb, *self.runner, self.python, "-m", "ipvsd", "run", "-c",
                 str(self.config), "--state-dir", str(self.state_dir), "--resync", str(self.resync), *self.extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=60)
        self.proc = None
        if self.owner is not None and sig != signal.SIGKILL:  # the daemon said whom it ran as, and with what
            said = re.findall(r"running as (uid \d+.*)$", self.log(self.starts), re.M)
            print(f"ipvsd start {self.starts}: running as {said[0] if said else '?'}")
            assert said and said[0].startswith(f"uid {self.owner[0]}") \
                and said[0].endswith("with CAP_NET_ADMIN, CAP_NET_RAW"), said
        return rc

    def log(self, run: int | None = None) -> str:
        """Everything logged so far, or only what start number `run` logged."""
        text = self.log_path.read_text()
        if run is None:
            return text
        parts = re.split(r"^--- start (\d+)\n", text, flags=re.M)
        return next((parts[i + 1] for i in range(1, len(parts), 2) if int(parts[i]) == run), "")

    def wait_log(self, pattern: str, *, timeout: float, run: int | None = None) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            assert self.proc is None or self.proc.poll() is None, f"ipvsd exited:\n{self.log()}"
            return re.search(pattern, self.log(run), re.M)
        return wait_until(found, timeout=timeout, what=f"ipvsd to log {pattern!r}")  # type: ignore[return-value]

    def control(self, *args: str, runner: tuple[str, ...] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an `ipvsd` client command against this daemon's control socket (in its state directory); as root,
        or through `runner` (`setpriv ...`) with the daemon's interpreter and environment."""
        argv = [sys.executable] if runner is None else [*runner, self.python]
        try:
            return subprocess.run([*argv, "-m", "ipvsd", *args, "--state-dir", str(self.state_dir)],
                                  capture_output=True, text=True, timeout=120, check=check,
                                  env=None if runner is None else self.env)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            raise AssertionError(f"ipvsd {' '.join(args)}: {e}\n--- its output: {e.stdout!r} {e.stderr!r}\n"
                                 f"--- the daemon's log:\n{self.log()[-6000:]}") from None

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.control("status", "--json").stdout)
        return answer

    def reload(self) -> str:
        return self.control("reload").stdout

    def ops(self, run: int | None = None) -> list[str]:
        """The kernel operations logged (in ipvsadm notation)."""
        return re.findall(r"ipvsadm (-[AEDaed] .*)$", self.log(run), re.M)


def keepalive_request(sock: socket.socket) -> str:
    sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: vip\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "the long-lived connection was closed"
        head += chunk
    header, _, body = head.partition(b"\r\n\r\n")
    length = int(next(h.split(b":")[1] for h in header.split(b"\r\n") if h.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096)
    return body.decode().strip()
