"""systemd's notify protocol (Type=notify): READY, RELOADING, STOPPING and STATUS lines on $NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    """Sends sd_notify datagrams; does nothing when not started by systemd (no NOTIFY_SOCKET)."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._addr: str | None = None
        self._sock: socket.socket | None = None
        if addr:
            # "@name" is an abstract socket: the leading NUL is how the kernel spells it.
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, **fields: str | int) -> None:
        if self._sock is None or self._addr is None:
            return
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        # systemd gone or socket full: status is advisory, never a reason to stop serving
        with contextlib.suppress(OSError):
            self._sock.sendto(msg.encode(), self._addr)

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd >= 253 match the reload to this notification.
        self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def status(self, status: str) -> None:
        self.send(status=status)

    def stopping(self) -> None:
        self.send(stopping=1)
