"""HTTP framing against loopback servers sending exact bytes: chunk edge cases, Content-Length conflicts, digests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest

from ipvsd.checks import make_probe
from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget
from ipvsd.config.schema import HttpCheck

from .conftest import read_head, serve

TIMEOUT = 1.0
SLACK = 0.1
BODY = b"hello world"

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
# Each is a complete response whose body is BODY, framed in a way our old parser got wrong.
EDGES = {
    "trailers": CHUNKED + b"6\r\nhello \r\n5\r\nworld\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n",
    "last-chunk-extension": CHUNKED + b"6\r\nhello \r\n5;name=val\r\nworld\r\n0;ext=1\r\n\r\n",
    "last-chunk-000": CHUNKED + b"6\r\nhello \r\n5\r\nworld\r\n000\r\n\r\n",
    "identical-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Length: 11\r\n\r\n" + BODY,
}


def http(**kw: Any) -> HttpCheck:
    return HttpCheck.model_validate({"type": "http", **kw})


class Server:
    """Answers every request on a connection with the same bytes, keeps the connection open (so a reply can
    only end by its framing), and counts connections and requests."""

    def __init__(self, reply: bytes | list[bytes], pause_after_first: bool = False) -> None:
        self.parts = [reply] if isinstance(reply, bytes) else reply
        self.pause_after_first = pause_after_first
        self.connections = 0
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                return
            self.requests += 1
            for i, part in enumerate(self.parts):
                writer.write(part)
                await writer.drain()
                if i == 0 and self.pause_after_first and len(self.parts) > 1:
                    # Give the prober the first part on its own. A correct reader waits for the rest; a reader that
                    # took the first part as the end would close the connection here (then the rest is moot).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 0.05)


async def probes(server: Server, check: HttpCheck, n: int) -> list[ProbeResult]:
    """Run `n` probes of one probe object in a row (a kept connection carries over between them)."""
    p = make_probe(check)
    loop = asyncio.get_running_loop()
    results = []
    async with serve(server) as port:
        for _ in range(n):
            start = loop.time()
            results.append(await p.probe(ProbeTarget("127.0.0.1", port), timeout=TIMEOUT))
            assert loop.time() - start < TIMEOUT + SLACK
        close = getattr(p, "close", None)
        if close is not None:
            close()
    return results


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection", "keep-alive"])
@pytest.mark.parametrize("case", sorted(EDGES))
async def test_framing_edge_cases_complete_without_waiting_for_close(case: str, reuse: bool) -> None:
    server = Server(EDGES[case])
    check = http(receive="hello world", digest=hashlib.md5(BODY).hexdigest(), reuse_connection=reuse)
    results = await probes(server, check, 2)
    assert all(r.ok for r in results), results
    assert server.requests == 2
    # Keep-alive: the second probe went over the first connection, so the first reply was read to its exact end.
    assert server.connections == (1 if reuse else 2)


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection", "keep-alive"])
async def test_a_last_chunk_lookalike_inside_chunk_data_does_not_end_the_body(reuse: bool) -> None:
    data = b"before\r\n0\r\n\r\nafter"  # the bytes of an end of body, but inside one chunk
    head = CHUNKED + f"{len(data):x}\r\n".encode() + data[:13]
    server = Server([head, data[13:] + b"\r\n0\r\n\r\n"], pause_after_first=True)
    check = http(receive="after", digest=hashlib.md5(data).hexdigest(), reuse_connection=reuse)
    results = await probes(server, check, 2)
    assert all(r.ok for r in results), results
    assert server.connections == (1 if reuse else 2)


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection", "keep-alive"])
async def test_conflicting_content_lengths_are_a_protocol_failure(reuse: bool) -> None:
    # Which length is right decides where the next response starts (request smuggling): h11 refuses, so do we.
    server = Server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\n" + BODY)
    results = await probes(server, http(reuse_connection=reuse), 2)
    for r in results:
        assert not r.ok and r.kind is Kind.PROTOCOL, r
        assert "conflicting Content-Length" in r.reason
    assert server.connections == 2  # a connection that carried a bad reply is never kept


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection", "keep-alive"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_digest_covers_a_body_far_larger_than_max_body_bytes(chunked: bool, reuse: bool) -> None:
    body = bytes(range(256)) * 1200  # 300 KiB, over the default max_body_bytes of 64 KiB
    if chunked:
        reply = CHUNKED + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n"
                                   for c in (body[i:i + 70000] for i in range(0, len(body), 70000))) + b"0\r\n\r\n"
    else:
        reply = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    server = Server(reply)
    good = await probes(server, http(digest=hashlib.md5(body).hexdigest(), reuse_connection=reuse), 2)
    assert all(r.ok for r in good), good
    assert server.connections == (1 if reuse else 2)
    bad = await probes(Server(reply), http(digest=hashlib.md5(body[:65536]).hexdigest()), 1)
    assert not bad[0].ok and bad[0].kind is Kind.RECEIVE
    assert f"({len(body)} bytes)" in bad[0].reason


async def test_receive_still_looks_at_a_bounded_prefix_while_the_digest_reads_on() -> None:
    body = b"x" * 100_000 + b"needle"
    reply = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    results = await probes(Server(reply), http(receive="needle", digest=hashlib.md5(body).hexdigest()), 1)
    assert not results[0].ok and results[0].kind is Kind.RECEIVE
    assert "first 65536 bytes" in results[0].reason


async def test_https_digest_of_a_large_page(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    body = b"0123456789abcdef" * 200_000  # 3.2 MB: several of the TLS transport's reads
    reply = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    for reuse in (False, True):
        server = Server(reply)
        check = HttpCheck.model_validate({"type": "https", "digest": hashlib.md5(body).hexdigest(),
                                          "reuse_connection": reuse})
        p = make_probe(check)
        async with serve(server, ssl=ctx) as port:
            results = [await p.probe(ProbeTarget("127.0.0.1", port), timeout=5.0) for _ in range(2)]
            p.close()  # type: ignore[attr-defined]
        assert all(r.ok for r in results), results
        assert server.connections == (1 if reuse else 2)
