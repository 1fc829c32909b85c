"""Event-driven failure detection: one idle TCP connection per real, whose close or reset asks for a probe now.

A periodic prober cannot see a dead real sooner than its next probe. A process that dies, or a host that
shuts down cleanly, closes its sockets: the FIN or RST reaches the held connection at once. The sentinel only
*reports* the event; the scheduler answers it with a confirming probe, so an idle timeout on the server side
costs one extra probe, never a false DOWN. Reopening is bounded by an exponential backoff that resets only
once a connection has lived long enough, so a server closing idle connections at once cannot make us spin.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from ipvsd.checks._net import make_socket
from ipvsd.checks.base import ProbeTarget

MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0
STABLE = 30.0  # a connection that lived this long resets the backoff


class Sentinel:
    """Holds one idle connection to `target` while armed; calls `on_event()` when the peer closes it.

    Callback-driven, without a task: a connect, a reader callback and at most one timer, so that ten thousand
    idle sentinels cost little memory and no CPU. States: idle, connecting, held, backing off.
    """

    def __init__(self, target: ProbeTarget, on_event: Callable[[], None], *, timeout: float = 5.0,
                 min_backoff: float = MIN_BACKOFF, max_backoff: float = MAX_BACKOFF, stable: float = STABLE) -> None:
        self.target = target
        self.on_event = on_event
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable = stable
        self.events = 0
        self.opens = 0
        self.connected = False
        self.armed = False
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None  # connect timeout or backoff
        self._backoff = min_backoff
        self._opened = 0.0

    def arm(self) -> None:
        """Hold a connection (the real is up)."""
        self.armed = True
        if self._sock is None and self._timer is None:
            self._connect()

    def disarm(self) -> None:
        """Stop holding a connection (the real is down or unknown); an open one is closed without an event."""
        self.armed = False
        self._drop()
        self._cancel_timer()

    async def close(self) -> None:
        self.disarm()

    # --- callbacks ----------------------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            sock = make_socket(self.target, socket.SOCK_STREAM)
        except OSError:
            self._back_off()
            return
        err = sock.connect_ex((self.target.addr, self.target.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._back_off()
            return
        self._sock = sock
        self._loop.add_writer(sock.fileno(), self._on_connected)
        self._timer = self._loop.call_later(self.timeout, self._on_connect_timeout)

    def _on_connected(self) -> None:
        assert self._sock is not None
        self._loop.remove_writer(self._sock.fileno())
        self._cancel_timer()
        if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not self.armed:
            self._drop()
            self._back_off()
            return
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self.connected = True
        self.opens += 1
        self._opened = self._loop.time()

    def _on_connect_timeout(self) -> None:
        self._timer = None
        if self._sock is not None:
            self._loop.remove_writer(self._sock.fileno())
        self._drop()
        self._back_off()

    def _on_readable(self) -> None:
        if self._sock is None:
            return
        try:
            data = self._sock.recv(4096)  # banners, a 408: discarded; only the end of the connection matters
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return
        if self._loop.time() - self._opened >= self.stable:
            self._backoff = self.min_backoff
        self._drop()
        self.events += 1
        self.armed = False  # the scheduler re-arms once the confirming probe succeeds
        self._back_off()
        self.on_event()

    def _back_off(self) -> None:
        """Wait before the next connect; the confirming probe, not the sentinel, decides up or down."""
        self._cancel_timer()
        self._timer = self._loop.call_later(self._backoff, self._retry)
        self._backoff = min(self._backoff * 2, self.max_backoff)

    def _retry(self) -> None:
        self._timer = None
        if self.armed and self._sock is None:
            self._connect()

    def _drop(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.connected = False

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
