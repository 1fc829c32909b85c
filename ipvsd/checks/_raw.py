"""The fast path for plain-TCP probes: non-blocking sockets in one epoll set of our own, nested in the loop.

Per probe, asyncio's add_writer/add_reader/remove_* each cost selector-key lookups and a Handle, and an
`asyncio.timeout` a TimerHandle; at thousands of probes per second that is a third of the prober's CPU
(scripts/bench-probes). Here a connection's socket sits in one `epoll` of ours (C calls only), which the
asyncio loop watches as a single reader; deadlines wait in one heap of C-compared tuples behind one coarse
timer. A connection serves one exchange (connect, send, read until done) or, kept, several. TLS uses _net.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import math
import os
import select
import socket
import weakref
from collections.abc import Callable

from ipvsd.checks._net import make_socket
from ipvsd.checks.base import ProbeTarget

_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, 0)
_TICK = 0.01  # deadlines are enforced at most this late; batching them keeps the timer off the hot path

Done = Callable[[bytearray], bool]


class Poller:
    """One loop's epoll set for probe sockets, and the deadlines of the exchanges in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.live: dict[int, RawConn] = {}
        # (deadline, seq, future): a finished exchange leaves its entry behind, holding only its done future.
        self.deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.pending = 0  # exchanges waiting with a deadline in the heap
        loop.add_reader(self.ep.fileno(), self._ready)

    def _ready(self) -> None:
        live = self.live
        for fd, events in self.ep.poll(0):
            conn = live.get(fd)
            if conn is not None:
                conn.on_event(events)

    def watch(self, conn: RawConn, events: int) -> None:
        if conn.fd in self.live:
            self.ep.modify(conn.fd, events)
        else:
            self.ep.register(conn.fd, events)
            self.live[conn.fd] = conn

    def unwatch(self, conn: RawConn) -> None:
        if self.live.pop(conn.fd, None) is not None:
            self.ep.unregister(conn.fd)

    def expire_at(self, at: float, fut: asyncio.Future[None]) -> None:
        self.pending += 1
        heapq.heappush(self.deadlines, (at, next(self._seq), fut))
        if at < self._timer_at:
            self._set_timer(at)

    def finished(self) -> None:
        """An exchange given to `expire_at` is over. When none is left, every deadline is moot: drop them."""
        self.pending -= 1
        if not self.pending:
            # Without this, a lightly loaded prober woke once more per probe, at its stale deadline.
            self.deadlines.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, math.inf

    def _set_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        at = max(at, self.loop.time() + _TICK)
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self.deadlines
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            fut = heapq.heappop(heap)[2]
            if not fut.done():  # the waiting exchange unregisters its socket as it raises
                fut.set_exception(TimeoutError())
        if heap:
            self._set_timer(heap[0][0])


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()


_last: Poller | None = None  # the last one used: a WeakKeyDictionary lookup costs more than a probe's connect


def poller() -> Poller:
    """Return the running loop's poller, made on first use."""
    global _last
    loop = asyncio.get_running_loop()
    if _last is not None and _last.loop is loop:
        return _last
    p = _POLLERS.get(loop)
    if p is None:
        p = _POLLERS[loop] = Poller(loop)
    _last = p
    return p


class RawConn:
    """A TCP connection to a target: connected on the first exchange, then reusable while the peer keeps it."""

    __slots__ = ("buf", "connected", "done", "eof", "fd", "fut", "got", "limit", "payload", "poller", "sock")

    def __init__(self, target: ProbeTarget) -> None:
        self.poller = poller()
        sock = make_socket(target, socket.SOCK_STREAM)
        try:
            err = sock.connect_ex((target.addr, target.port))
            if err not in _IN_PROGRESS:
                raise OSError(err, os.strerror(err))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self.connected = self.eof = False
        self.buf = bytearray()
        self.got = False  # bytes arrived in this exchange (`done` may take them out of `buf` as they come)
        self.payload: bytes | None = None
        self.limit = 0
        self.done: Done | None = None
        self.fut: asyncio.Future[None] | None = None

    async def exchange(self, payload: bytes | None, *, limit: int, done: Done | None, deadline: float) -> bytearray:
        """Connect if needed, send `payload`, read until `done(buf)`, EOF or `limit` bytes; `done=None`: connect.

        Raises OSError for socket errors and TimeoutError at `deadline` (loop time).
        """
        p = self.poller
        fut = self.fut = p.loop.create_future()
        self.payload, self.limit, self.done, self.buf, self.got = payload, limit, done, bytearray(), False
        if self.connected:
            self._send()
        elif self._established():
            # On loopback and veth the handshake completes inside connect(): go on without a trip through epoll.
            self.connected = True
            if done is None:
                return self.buf
            self._send()
        else:
            p.watch(self, select.EPOLLOUT)
        armed = not fut.done()
        if armed:
            p.expire_at(deadline, fut)
        try:
            await fut
        finally:
            if armed:
                p.finished()
            p.unwatch(self)
            # A kept connection waits a whole interval for its next exchange: let go of this one's reader (the
            # response, its head and body) and future meanwhile, 3-4 MB at 10,000 keep-alive reals.
            self.done = self.fut = None
        return self.buf

    def _established(self) -> bool:
        try:
            self.sock.getpeername()  # ENOTCONN while the handshake is under way, or after it failed
        except OSError:
            return False
        return True

    def idle(self) -> bool:
        """Whether a kept connection is still open and silent (nothing stray to misread as the next reply)."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # returns: EOF or stray bytes
        except (BlockingIOError, InterruptedError):
            return not self.eof
        except OSError:
            return False
        return False

    def close(self) -> None:
        # Unregister before closing, though closing alone would do it: a forked child that still holds the
        # socket keeps it in the epoll set, reporting events under a descriptor number reused meanwhile.
        self.poller.unwatch(self)
        self.sock.close()

    # --- callbacks ----------------------------------------------------------------------------------------

    def on_event(self, events: int) -> None:
        if self.fut is None or self.fut.done():
            self.poller.unwatch(self)
            return
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(OSError(err, os.strerror(err)))
                return
            self.connected = True
            if self.done is None:  # connect only
                self.fut.set_result(None)
                return
            self._send()
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.eof = True
            if self.got:  # a reset after a complete-enough reply: judge what arrived
                self.fut.set_result(None)
            else:
                self.fail(e)
            return
        if data:
            self.got = True
            self.buf += data[: self.limit - len(self.buf)]
        else:
            self.eof = True
        if len(self.buf) >= self.limit:
            self.eof = True  # bounded: what we have is all we look at, and the connection is not reusable
        assert self.done is not None
        if self.eof or self.done(self.buf):
            self.fut.set_result(None)

    def _send(self) -> None:
        assert self.fut is not None
        if self.payload:
            try:
                sent = self.sock.send(self.payload)
            except OSError as e:
                self.fail(e)
                return
            if sent < len(self.payload):  # a probe request is a few hundred bytes: a short send is a broken peer
                self.fail(OSError(errno.EPIPE, "short send"))
                return
        self.poller.watch(self, select.EPOLLIN)

    def fail(self, exc: BaseException) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(exc)
        self.poller.unwatch(self)


async def exchange(target: ProbeTarget, payload: bytes | None, *, limit: int, done: Done | None,
                   deadline: float) -> bytearray:
    """One exchange on a new connection to `target`, closed after; see `RawConn.exchange`."""
    conn = RawConn(target)
    try:
        return await conn.exchange(payload, limit=limit, done=done, deadline=deadline)
    finally:
        conn.close()
