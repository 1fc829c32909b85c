"""HTTP(S) probe against real loopback servers: every verdict within timeout + 100 ms, with a reason."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest

from ipvsd.checks import make_probe
from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget
from ipvsd.config.schema import HttpCheck

from .conftest import WAYS, Handler, blackhole, read_head, replying, reset, response, run_probe, serve

TIMEOUT = 0.5
SLACK = 0.1
WAY = ["task"]  # how `probe` runs the probe: every test here runs both ways (the fixture below)


@pytest.fixture(autouse=True, params=WAYS)
def way(request: pytest.FixtureRequest) -> str:
    WAY[0] = request.param
    return str(request.param)


def http(**kw: Any) -> HttpCheck:
    return HttpCheck.model_validate({"type": "http", **kw})


async def probe(check: HttpCheck, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await run_probe(make_probe(check), ProbeTarget(host, port), timeout, WAY[0])
    elapsed = loop.time() - start
    assert elapsed < timeout + SLACK, f"verdict took {elapsed:.3f}s"
    assert result.reason
    assert 0 <= result.latency <= elapsed + 0.01
    return result


async def verdict(handler: Handler, check: HttpCheck | None = None, host: str = "127.0.0.1") -> ProbeResult:
    async with serve(handler, host) as port:
        return await probe(check or http(), port, host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_right_status_is_up(host: str) -> None:
    result = await verdict(replying(response()), host=host)
    assert result.ok and result.kind is Kind.OK
    assert result.reason == "200 OK"


async def test_request_carries_method_path_and_host() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_head(reader))
        writer.write(response())

    result = await verdict(handler, http(method="HEAD", path="health", host="www.example.org"))
    assert result.ok
    assert seen[0].startswith(b"HEAD /health HTTP/1.1\r\n")
    assert b"\r\nHost: www.example.org\r\n" in seen[0]


async def test_host_defaults_to_address_and_port() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_head(reader))
        writer.write(response())

    async with serve(handler, "::1") as port:
        assert (await probe(http(), port, "::1")).ok
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in seen[0]


@pytest.mark.parametrize(
    ("status", "expect", "ok"),
    [("503 Service Unavailable", None, False), ("404 Not Found", None, False), ("204 No Content", None, True),
     ("404 Not Found", "404", True), ("301 Moved", "200,300-399", True), ("200 OK", "201-299", False)],
)
async def test_expected_status_lists_and_ranges(status: str, expect: str | None, ok: bool) -> None:
    check = http() if expect is None else http(expect_status=expect)
    result = await verdict(replying(response(status)), check)
    assert result.ok is ok
    if not ok:
        assert result.kind is Kind.STATUS
        assert status.split()[0] in result.reason


async def test_redirect_is_not_followed_and_named() -> None:
    result = await verdict(replying(response("302 Found", headers="Location: http://elsewhere/\r\n")))
    assert not result.ok and result.kind is Kind.STATUS
    assert "302" in result.reason and "http://elsewhere/" in result.reason


@pytest.mark.parametrize(
    ("kw", "ok"),
    [({"receive": "world"}, True), ({"receive": "planet"}, False), ({"regex": r"hel+o\s+w"}, True),
     ({"regex": r"^world"}, False), ({"regex_no_match": "error"}, True), ({"regex_no_match": "wor.d"}, False),
     ({"digest": hashlib.md5(b"hello world").hexdigest()}, True), ({"digest": "00" * 16}, False)],
)
async def test_body_receive_regex_and_digest(kw: dict[str, str], ok: bool) -> None:
    result = await verdict(replying(response()), http(**kw))
    assert result.ok is ok
    if not ok:
        assert result.kind is Kind.RECEIVE


async def test_chunked_body_is_dechunked_before_matching() -> None:
    body = b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(data)
        await asyncio.sleep(10)  # keep the connection open: completion must come from the last chunk

    assert (await verdict(handler, http(receive="hello world"))).ok


async def test_refused() -> None:
    async with serve(replying(b"")) as port:
        pass
    result = await probe(http(), port)
    assert not result.ok and result.kind is Kind.REFUSED


async def test_reset_before_reply() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        reset(writer)

    result = await verdict(handler)
    assert not result.ok and result.kind is Kind.RESET


async def test_close_without_reply_is_protocol_failure() -> None:
    result = await verdict(replying(b""))
    assert not result.ok and result.kind is Kind.PROTOCOL


async def test_connect_timeout_on_full_accept_queue() -> None:
    with blackhole() as port:
        result = await probe(http(), port)
    assert not result.ok and result.kind is Kind.TIMEOUT
    assert "0.5s" in result.reason


async def test_server_that_accepts_and_never_answers_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    result = await verdict(handler)
    assert not result.ok and result.kind is Kind.TIMEOUT


async def test_slowloris_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for byte in response():
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)

    result = await verdict(handler)
    assert not result.ok and result.kind is Kind.TIMEOUT


@pytest.mark.parametrize(("kw", "ok"), [({}, True), ({"receive": "needle"}, False)])
async def test_gigabyte_body_is_read_bounded(kw: dict[str, str], ok: bool) -> None:
    chunk = b"x" * 65536
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_head(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
        while sent < 1 << 30:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()

    result = await verdict(handler, http(**kw))
    assert result.ok is ok
    if not ok:
        assert result.kind is Kind.RECEIVE and "first 65536 bytes" in result.reason
    assert sent < 64 << 20  # we stopped reading long before a gigabyte


async def test_garbage_instead_of_http() -> None:
    result = await verdict(replying(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    assert not result.ok and result.kind is Kind.PROTOCOL
    assert "SSH-2.0" in result.reason


async def test_garbage_without_blank_line_is_protocol_failure_at_close() -> None:
    result = await verdict(replying(b"\x00\x01\x02 binary", read_request=False))
    assert not result.ok and result.kind is Kind.PROTOCOL


def _tls_server(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest.mark.parametrize(
    ("kw", "ok"),
    [({"tls_verify": True}, False), ({"tls_verify": False}, True), ({"tls_verify": True, "ca": True}, True),
     ({"tls_verify": True, "ca": True, "sni": "wrong.example"}, False),
     ({"tls_verify": True, "ca": True, "sni": "localhost"}, True)],
)
async def test_https_self_signed(self_signed: tuple[Path, Path], kw: dict[str, Any], ok: bool) -> None:
    cert, key = self_signed
    if kw.pop("ca", False):
        kw["ca_file"] = str(cert)
    async with serve(replying(response()), ssl=_tls_server(cert, key)) as port:
        result = await probe(HttpCheck.model_validate({"type": "https", **kw}), port)
    assert result.ok is ok, result
    if not ok:
        assert result.kind is Kind.TLS and "verify" in result.reason


async def test_http_against_tls_port_is_protocol_failure(self_signed: tuple[Path, Path]) -> None:
    async with serve(replying(response()), ssl=_tls_server(*self_signed)) as port:
        result = await probe(http(), port)
    assert not result.ok and result.kind in (Kind.PROTOCOL, Kind.RESET, Kind.TIMEOUT)


async def test_connect_rounds_alternate_cheap_connects_and_full_checks() -> None:
    full = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal full
        if await reader.read(1):
            full += 1
            await read_head(reader)
            writer.write(response("500 Oops"))

    async with serve(handler) as port:
        p = make_probe(http(connect_rounds=2))
        results = [await p.probe(ProbeTarget("127.0.0.1", port), timeout=TIMEOUT) for _ in range(6)]
    assert [r.ok for r in results] == [False, True, True, False, True, True]
    assert full == 2


async def test_reuse_connection_keeps_one_connection_and_survives_an_idle_close() -> None:
    connections = 0
    requests: list[bytes] = []
    close_after: list[int] = [2]  # the server closes the connection after its second response

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        served = 0
        while True:
            try:
                head = await read_head(reader)
            except asyncio.IncompleteReadError:
                return
            requests.append(head)
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
            await writer.drain()
            if connections == 1 and served == close_after[0]:
                writer.close()
                return

    async with serve(handler) as port:
        p = make_probe(http(reuse_connection=True, receive="world"))
        target = ProbeTarget("127.0.0.1", port)
        results = [await p.probe(target, timeout=TIMEOUT) for _ in range(4)]
        p.close()  # type: ignore[attr-defined]
    assert all(r.ok for r in results), results
    assert connections == 2  # two requests on the first connection, then a new one after the server closed it
    assert all(b"Connection: keep-alive" in r for r in requests)


async def test_reuse_connection_replaces_a_connection_with_stray_bytes() -> None:
    # Bytes that arrive between two probes would be read as the next reply: the kept connection is dropped.
    connections = 0
    stray_sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()
            if first:
                writer.write(b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                stray_sent.set()
                first = False

    async with serve(handler) as port:
        p = make_probe(http(reuse_connection=True, receive="hello"))
        target = ProbeTarget("127.0.0.1", port)
        first = await p.probe(target, timeout=TIMEOUT)
        await asyncio.wait_for(stray_sent.wait(), TIMEOUT)
        second = await p.probe(target, timeout=TIMEOUT)
        p.close()  # type: ignore[attr-defined]
    assert first.ok and second.ok, (first, second)
    assert connections == 2


async def test_reuse_connection_times_out_on_a_silent_kept_connection() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                return
            served += 1
            if served == 1:  # the first reply only; the kept connection then stays silent
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

    async with serve(handler) as port:
        p = make_probe(http(reuse_connection=True))
        target = ProbeTarget("127.0.0.1", port)
        assert (await p.probe(target, timeout=TIMEOUT)).ok
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await p.probe(target, timeout=TIMEOUT)
        elapsed = loop.time() - start
        p.close()  # type: ignore[attr-defined]
    assert not result.ok and result.kind is Kind.TIMEOUT, result
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


async def test_a_deadline_outlives_a_finished_exchange_and_goes_with_the_last() -> None:
    from ipvsd.checks import _raw

    async with serve(replying(response())) as port:
        with blackhole() as silent:
            fast, slow = await asyncio.gather(probe(http(), port, timeout=2.0), probe(http(), silent))
    assert fast.ok, fast
    assert slow.kind is Kind.TIMEOUT, slow  # the fast probe finishing first did not drop the slow one's deadline
    poller = _raw.poller()
    assert poller.pending == 0 and not poller.deadlines  # the fast one's (later) deadline would wake the loop


@pytest.mark.parametrize("host", ["é.example", "a\r\nb"])
async def test_a_host_no_request_can_carry_ends_alike_both_ways(host: str) -> None:
    """The request is made before connecting; what refusing it gives (a verdict, or an error the scheduler
    logs as a probe bug) is the same whether the probe runs in a task or directly."""
    outcomes = []
    with blackhole() as port:
        for way in WAYS:
            try:
                r = await run_probe(make_probe(http(host=host)), ProbeTarget("127.0.0.1", port), TIMEOUT, way)
                outcomes.append((r.ok, r.kind))
            except Exception as e:
                outcomes.append((False, type(e).__name__))
    assert outcomes[0] == outcomes[1] and not outcomes[0][0], outcomes
