"""Sockets for probes: a stream connection on a bare asyncio Protocol, with source address and SO_MARK.

Probes use a Protocol with one bounded buffer rather than asyncio streams or an HTTP client: at thousands
of probes per second the per-connection Python overhead is what limits a prober (see scripts/bench-probes).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from ipvsd.checks.base import Kind, ProbeFailure, ProbeTarget
from ipvsd.model import family_of

SO_MARK = getattr(socket, "SO_MARK", 36)


def prepare(sock: socket.socket, target: ProbeTarget) -> None:
    """Make `sock` non-blocking, marked and bound to the target's source (bindto), as the check asks."""
    if sock.gettimeout() != 0.0:  # made with SOCK_NONBLOCK: already non-blocking, spare the ioctl
        sock.setblocking(False)
    if target.mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, target.mark)
    if target.source is not None:
        sock.bind((target.source, 0))


def make_socket(target: ProbeTarget, kind: int) -> socket.socket:
    """Return a non-blocking socket toward `target`, bound to its source and marked, not yet connected."""
    sock = socket.socket(family_of(target.addr), kind | socket.SOCK_NONBLOCK)
    try:
        prepare(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock


class Conn(asyncio.Protocol):
    """A client connection that buffers what it receives, up to `limit` bytes, and wakes one waiter."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.got = False  # bytes arrived since the last `exchange` (a `done` may take them out of `buf`)
        self.eof = False
        self.error: Exception | None = None
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got = True
        room = self.limit - len(self.buf)
        self.buf += data[:room]
        if len(self.buf) >= self.limit and self.transport is not None:
            # Bounded: stop reading, the peer may send a gigabyte; what we have is all we will look at.
            self.transport.pause_reading()
            self.eof = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def read_until(self, done: Callable[[bytearray], bool]) -> bytearray:
        """Wait until `done(buf)` holds or the peer closed (or the buffer is full); return the buffer."""
        while not done(self.buf) and not self.eof:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.error is not None and not self.got:
            raise self.error
        return self.buf

    async def exchange(self, payload: bytes, *, limit: int, done: Callable[[bytearray], bool],
                       deadline: float) -> bytearray:
        """Send `payload` and read a fresh reply until `done(buf)`: RawConn's interface for a kept connection.

        `limit` was fixed when connecting, and the caller bounds the time (`deadline` is RawConn's concern).
        """
        self.buf, self.got = bytearray(), False
        self.write(payload)
        buf = await self.read_until(done)
        self.buf = bytearray()  # what arrives from now on, before the next request, is stray
        return buf

    def idle(self) -> bool:
        """Whether a kept connection is still open and nothing stray arrived since the last reply."""
        return not self.eof and not self.buf

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(target: ProbeTarget, *, limit: int = 65536, tls: ssl.SSLContext | None = None,
                  server_hostname: str | None = None) -> Conn:
    """Open a TCP (optionally TLS) connection to `target`; socket errors propagate to be classified."""
    loop = asyncio.get_running_loop()
    sock = make_socket(target, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, (target.addr, target.port))
        _, conn = await loop.create_connection(
            lambda: Conn(limit), sock=sock, ssl=tls, server_hostname=(server_hostname or "") if tls else None)
    except BaseException:
        sock.close()
        raise
    return conn


def require_bytes(buf: bytes | bytearray, what: str) -> None:
    """Raise a protocol failure when the peer closed without sending anything."""
    if not buf:
        raise ProbeFailure(Kind.PROTOCOL, f"connection closed before {what}")
