"""The fast path for plain-TCP probes: a non-blocking socket driven by add_writer/add_reader callbacks.

No transport, no protocol, no StreamReader: connect, send one small request, read into one bounded buffer,
close. Against asyncio's sock_connect + create_connection this roughly halves the CPU per probe, which is
what decides how many reals one core can check each second (scripts/bench-probes). TLS keeps using _net.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable

from ipvsd.checks._net import SO_MARK
from ipvsd.checks.base import ProbeTarget

_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, 0)


class _Exchange:
    """One connection's life: connect, optionally send, read until `done(buf)`, EOF or `limit` bytes."""

    __slots__ = ("buf", "done", "fd", "fut", "limit", "loop", "payload", "reading", "sock", "writing")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, payload: bytes | None, limit: int,
                 done: Callable[[bytearray], bool] | None) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.payload = payload
        self.limit = limit
        self.done = done
        self.buf = bytearray()
        self.fut: asyncio.Future[None] = loop.create_future()
        # Which callbacks are registered: each add/remove costs a selector call and a transport-table lookup.
        self.writing = self.reading = False

    def on_connect(self) -> None:
        self.loop.remove_writer(self.fd)
        self.writing = False
        if self.fut.done():
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fut.set_exception(OSError(err, os.strerror(err)))
            return
        if self.done is None:  # connect only
            self.fut.set_result(None)
            return
        if self.payload:
            try:
                sent = self.sock.send(self.payload)
            except OSError as e:
                self.fut.set_exception(e)
                return
            if sent < len(self.payload):  # a probe request is a few hundred bytes: a short send is a broken peer
                self.fut.set_exception(OSError(errno.EPIPE, "short send"))
                return
        self.loop.add_reader(self.fd, self.on_read)
        self.reading = True

    def on_read(self) -> None:
        if self.fut.done():
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if self.buf:  # a reset after a complete-enough reply: judge what arrived
                self.fut.set_result(None)
            else:
                self.fut.set_exception(e)
            return
        if data:
            self.buf += data[: self.limit - len(self.buf)]
        assert self.done is not None
        if not data or len(self.buf) >= self.limit or self.done(self.buf):
            self.fut.set_result(None)


async def exchange(target: ProbeTarget, payload: bytes | None, *, limit: int,
                   done: Callable[[bytearray], bool] | None) -> bytearray:
    """Connect to `target`, send `payload`, read until `done(buf)`; `done=None` only connects.

    Socket errors propagate as OSError, to be classified by `run_bounded`.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in target.addr else socket.AF_INET, socket.SOCK_STREAM)
    ex: _Exchange | None = None
    try:
        sock.setblocking(False)
        if target.mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, target.mark)
        if target.source is not None:
            sock.bind((target.source, 0))
        err = sock.connect_ex((target.addr, target.port))
        if err not in _IN_PROGRESS:
            raise OSError(err, os.strerror(err))
        ex = _Exchange(loop, sock, payload, limit, done)
        loop.add_writer(ex.fd, ex.on_connect)
        ex.writing = True
        await ex.fut
        return ex.buf
    finally:
        if ex is not None and ex.writing:
            loop.remove_writer(ex.fd)
        if ex is not None and ex.reading:
            loop.remove_reader(ex.fd)
        sock.close()
