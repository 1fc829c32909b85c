"""Run `ipvsd run` as a real process in the director's namespace, read what it logs; a keep-alive request helper."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kernel.lab import Lab, wait_until


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
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    starts: int = 0

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / "ipvsd.log"

    def start(self) -> Ipvsd:
        self.starts += 1
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
