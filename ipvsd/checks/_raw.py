"""The fast path for plain-TCP probes: non-blocking sockets in one epoll set of our own, nested in the loop.

Per probe, asyncio's add_writer/add_reader/remove_* each cost selector-key lookups and a Handle, and an
`asyncio.timeout` a TimerHandle; at thousands of probes per second that is a third of the prober's CPU
(scripts/bench-probes). Here a connection's socket sits in one `epoll` of ours (C calls only), which the
asyncio loop watches as a single reader; deadlines wait in one heap of C-compared tuples behind one coarse
timer. A connection serves one exchange (connect, send, read until done) or, kept, several. TLS uses _net.

An exchange ends by calling its `end` callback once, from the socket's event: `start` is that interface, for
a prober that runs without a task per probe (the scheduler's direct probes, docs/checks.md); `exchange` is the
same wrapped in a future, for probe bodies written as coroutines.
"""

from __future__ import annotations

import asyncio
import errno
import functools
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
End = Callable[[BaseException | None], None]
Ended = Callable[[BaseException | None, float], None]  # OneShot's: the exchange's error (or None), the loop time


class Poller:
    """One loop's epoll set for probe sockets, and the deadlines of the exchanges in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.live: dict[int, RawConn] = {}
        # (deadline, seq, conn): the exchange numbered seq times out then, if it is still the conn's (`xid`).
        # A finished exchange leaves its entry behind until the heap empties or the deadline passes.
        self.deadlines: list[tuple[float, int, RawConn]] = []
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

    def expire_at(self, at: float, conn: RawConn) -> None:
        self.pending += 1
        conn.xid = seq = next(self._seq)
        heapq.heappush(self.deadlines, (at, seq, conn))
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
            _, seq, conn = heapq.heappop(heap)
            if conn.xid == seq and conn.end is not None:
                conn.fail(TimeoutError())
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

    __slots__ = ("armed", "buf", "connected", "done", "end", "eof", "fd", "got", "limit", "payload", "poller", "sock",
                 "xid")

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
        self.end: End | None = None  # set while an exchange runs
        self.armed = False  # the running exchange has a deadline in the poller's heap
        self.xid = -1  # the running exchange's number in that heap

    def start(self, payload: bytes | None, *, limit: int, done: Done | None, deadline: float, end: End) -> None:
        """Connect if needed, send `payload`, read until `done(buf)`, EOF or `limit` bytes; `done=None`: connect.

        Then `end(None)`, the reply in `buf`; or `end(exc)`: OSError for socket errors, TimeoutError at
        `deadline` (loop time). `end` is called once, from the loop, and may be called before this returns
        (a handshake that completed inside connect()). `close()` abandons the exchange without calling it.
        """
        self.payload, self.limit, self.done, self.buf, self.got = payload, limit, done, bytearray(), False
        self.end = end
        if self.connected:
            self._send()
        elif self._established():
            # On loopback and veth the handshake completes inside connect(): go on without a trip through epoll.
            self.connected = True
            if done is None:
                self._finish(None)
                return
            self._send()
        else:
            self.poller.watch(self, select.EPOLLOUT)
        if self.end is not None:
            self.armed = True
            self.poller.expire_at(deadline, self)

    async def exchange(self, payload: bytes | None, *, limit: int, done: Done | None, deadline: float) -> bytearray:
        """`start` as a coroutine: return `buf`, or raise what `end` would be given."""
        fut = self.poller.loop.create_future()
        self.start(payload, limit=limit, done=done, deadline=deadline, end=functools.partial(_settle, fut))
        try:
            await fut
        except asyncio.CancelledError:
            self._finish(None, call=False)
            raise
        return self.buf

    def _finish(self, exc: BaseException | None, *, call: bool = True) -> None:
        end, self.end = self.end, None
        if end is None:
            return
        if self.armed:
            self.armed = False
            self.poller.finished()
        self.poller.unwatch(self)
        # A kept connection waits a whole interval for its next exchange: let go of this one's reader (the
        # response, its head and body) meanwhile, 3-4 MB at 10,000 keep-alive reals.
        self.done = None
        if call:
            end(exc)

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
        """Close the connection; an exchange still running is abandoned (its `end` is not called)."""
        self._finish(None, call=False)
        # Unregister before closing, though closing alone would do it: a forked child that still holds the
        # socket keeps it in the epoll set, reporting events under a descriptor number reused meanwhile.
        self.poller.unwatch(self)
        self.sock.close()

    # --- callbacks ----------------------------------------------------------------------------------------

    def on_event(self, events: int) -> None:
        if self.end is None:
            self.poller.unwatch(self)
            return
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(OSError(err, os.strerror(err)))
                return
            self.connected = True
            if self.done is None:  # connect only
                self._finish(None)
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
                self._finish(None)
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
            self._finish(None)

    def _send(self) -> None:
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
        self._finish(exc)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class OneShot:
    """One exchange on a new connection to `target`, closed before `end(exc, now)` is called; `end` never runs
    before the constructor returns (an exchange over at once is reported on the loop's next turn), and
    `cancel()` drops it without a call. The task-free counterpart of `exchange`."""

    __slots__ = ("conn", "end", "handle", "loop", "starting")

    def __init__(self, target: ProbeTarget, payload: bytes | None, *, limit: int, done: Done | None,
                 deadline: float, end: Ended) -> None:
        p = poller()
        self.loop = p.loop
        self.end = end
        self.handle: asyncio.Handle | None = None
        self.starting = True
        try:
            self.conn: RawConn | None = RawConn(target)
        except OSError as exc:
            self.conn = None
            self.handle = self.loop.call_soon(self._report, exc)
            return
        self.conn.start(payload, limit=limit, done=done, deadline=deadline, end=self._ended)
        self.starting = False

    def _ended(self, exc: BaseException | None) -> None:
        assert self.conn is not None
        self.conn.close()
        if self.starting:
            self.handle = self.loop.call_soon(self._report, exc)
        else:
            self.end(exc, self.loop.time())

    def _report(self, exc: BaseException | None) -> None:
        self.end(exc, self.loop.time())

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.conn is not None:
            self.conn.close()


async def exchange(target: ProbeTarget, payload: bytes | None, *, limit: int, done: Done | None,
                   deadline: float) -> bytearray:
    """One exchange on a new connection to `target`, closed after; see `RawConn.exchange`."""
    conn = RawConn(target)
    try:
        return await conn.exchange(payload, limit=limit, done=done, deadline=deadline)
    finally:
        conn.close()
