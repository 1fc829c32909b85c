"""A network namespace that cannot outlive the test process: unnamed, held by one file descriptor.

A short-lived thread unshares its network namespace, opens /proc/thread-self/ns/net and goes back home; the
descriptor (and any socket made in the namespace) is all that keeps the namespace alive, so closing it, or the
process dying however it dies, removes it with every interface in it. Nothing is mounted under /run/netns,
nothing is left to clean up after a crash. Needs root (CAP_SYS_ADMIN); creating it sends no traffic.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why a private namespace cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "needs ip (iproute2) and nsenter (util-linux)"
    return None


def _in_thread(fn: Callable[[], T]) -> T:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed back to the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="private-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class PrivateNetns:
    """Use as a context manager; `ip` changes it, `socket` opens a socket inside it."""

    def __init__(self) -> None:
        def make() -> int:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.unshare(CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
                try:
                    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                finally:
                    _setns(home)
            finally:
                os.close(home)

        self.fd: int | None = _in_thread(make)

    @property
    def path(self) -> str:
        assert self.fd is not None, "closed"
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def socket(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        """A socket created inside the namespace (it stays there; the test process does not move)."""
        assert self.fd is not None, "closed"
        fd = self.fd

        def make() -> socket.socket:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
                try:
                    return socket.socket(family, type_, proto)
                finally:
                    _setns(home)
            finally:
                os.close(home)

        return _in_thread(make)

    def ip(self, *lines: str) -> None:
        """Run `ip` commands (one per line, `ip -batch` syntax) inside the namespace, in one process."""
        p = subprocess.run(["nsenter", f"--net={self.path}", "ip", "-batch", "-"], input="\n".join(lines) + "\n",
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"ip -batch in the test namespace: {p.stderr.strip()}")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> PrivateNetns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
