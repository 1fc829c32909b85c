"""Loopback servers for probe tests: small asyncio servers on 127.0.0.1 / ::1 whose misbehaviour we script."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipvsd.checks.base import ProbeResult, ProbeTarget

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# How a probe runs: as a coroutine in a task, or on callbacks alone (a direct probe, as the scheduler runs
# plain http and tcp). Every verdict must be the same both ways.
WAYS = ("task", "direct")


async def run_probe(probe: Any, target: ProbeTarget, timeout: float, way: str) -> ProbeResult:
    """Probe `target` once, the given way (a probe that cannot run directly runs as a task either way)."""
    if way == "task" or not getattr(probe, "direct", False):
        return await probe.probe(target, timeout=timeout)  # type: ignore[no-any-return]
    loop = asyncio.get_running_loop()
    got: asyncio.Future[ProbeResult] = loop.create_future()
    returned = False

    def report(result: ProbeResult) -> None:
        if got.done():
            got.set_exception(AssertionError(f"reported twice: {got.result()} then {result}"))
        elif not returned:
            got.set_exception(AssertionError("reported before start() returned"))
        else:
            got.set_result(result)

    probe.start(target, timeout=timeout, now=loop.time(), report=report)
    returned = True
    result = await got
    await asyncio.sleep(0.05)  # a second report would come now
    return result


@contextlib.asynccontextmanager
async def serve(handler: Handler, host: str = "127.0.0.1", **kw: object) -> AsyncIterator[int]:
    """Run `handler` for each connection on an ephemeral port of `host`; yield the port."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, host, 0, **kw)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        # Connections still open (slowloris, endless bodies) are aborted rather than awaited.
        with contextlib.suppress(AttributeError):
            server.close_clients()  # type: ignore[attr-defined]


def response(status: str = "200 OK", body: bytes = b"hello world", headers: str = "") -> bytes:
    """An HTTP/1.1 response with Content-Length and Connection: close."""
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def replying(data: bytes, *, read_request: bool = True) -> Handler:
    """A handler that reads the request head and writes `data`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if read_request:
            await read_head(reader)
        writer.write(data)
        await writer.drain()

    return handler


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full, so new SYNs are dropped and connects hang (loopback, no routing)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for CN=localhost (and IP 127.0.0.1), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key
