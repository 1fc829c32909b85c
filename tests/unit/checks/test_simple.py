"""tcp, simpletcp, static, external, udp, dns, greeting and ping probes against loopback peers."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest

from ipvsd.checks import make_probe
from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget
from ipvsd.config.schema import (
    DnsCheck,
    ExternalCheck,
    FtpCheck,
    MailboxCheck,
    NntpCheck,
    PingCheck,
    SimpleTcpCheck,
    SmtpCheck,
    StaticCheck,
    TcpCheck,
    UdpCheck,
)

from .conftest import WAYS, blackhole, reset, run_probe, serve

TIMEOUT = 0.5


async def run(check: Any, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT, way: str = "task",
              **target: Any) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await run_probe(make_probe(check), ProbeTarget(host, port, **target), timeout, way)
    assert loop.time() - start < timeout + 0.1
    assert result.reason
    return result


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)


# --- tcp ---


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_tcp_connect_up(host: str, way: str) -> None:
    async with serve(idle, host) as port:
        result = await run(TcpCheck(type="tcp"), port, host, way=way)
    assert result.ok and result.reason == "connected"


@pytest.mark.parametrize("way", WAYS)
async def test_tcp_refused_and_timeout(way: str) -> None:
    async with serve(idle) as port:
        pass
    assert (await run(TcpCheck(type="tcp"), port, way=way)).kind is Kind.REFUSED
    with blackhole() as port:
        assert (await run(TcpCheck(type="tcp"), port, way=way)).kind is Kind.TIMEOUT


@pytest.mark.parametrize("way", WAYS)
async def test_tcp_bindto_source_address(way: str) -> None:
    peers: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])

    async with serve(handler, "127.0.0.1") as port:
        assert (await run(TcpCheck(type="tcp"), port, way=way, source="127.0.0.9")).ok
        async with asyncio.timeout(2):
            while not peers:
                await asyncio.sleep(0.01)
    assert peers == ["127.0.0.9"]


# --- simpletcp ---


async def echo_upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(b"+PONG " + line.upper())


@pytest.mark.parametrize(("expect", "ok"), [(r"\+PONG", True), (r"PING", True), (r"^-ERR", False), (None, True)])
async def test_simpletcp_send_expect(expect: str | None, ok: bool) -> None:
    async with serve(echo_upper) as port:
        result = await run(SimpleTcpCheck(type="simpletcp", send="ping\n", expect=expect), port)
    assert result.ok is ok
    if not ok:
        assert result.kind is Kind.RECEIVE


async def test_simpletcp_reset() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        reset(writer)

    async with serve(handler) as port:
        result = await run(SimpleTcpCheck(type="simpletcp", send="x\n", expect="ok"), port)
    assert not result.ok and result.kind in (Kind.RESET, Kind.RECEIVE)


# --- static ---


async def test_on_and_off() -> None:
    assert (await run(StaticCheck(type="on"), 0)).ok
    off = await run(StaticCheck(type="off"), 0)
    assert not off.ok and off.kind is Kind.STATIC


# --- external ---


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


async def test_external_gets_ldirectord_arguments(tmp_path: Path) -> None:
    out = tmp_path / "args"
    cmd = script(tmp_path, f'echo "$@" > {out}\necho all good\n')
    result = await run(ExternalCheck(type="external", command=cmd), 8080, vip="10.0.0.1", vport=80)
    assert result.ok and "exited 0: all good" in result.reason
    assert out.read_text().split() == ["10.0.0.1", "80", "127.0.0.1", "8080"]


async def test_external_exit_code(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo backend sad >&2\nexit 3\n")
    result = await run(ExternalCheck(type="external", command=cmd), 80)
    assert not result.ok and result.kind is Kind.EXIT_CODE
    assert "exited 3: backend sad" in result.reason


async def test_external_hang_is_killed_with_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    cmd = script(tmp_path, f"sleep 30 &\necho $! > {pidfile}\nwait\n")
    result = await run(ExternalCheck(type="external", command=cmd), 80)
    assert not result.ok and result.kind is Kind.TIMEOUT and "killed after 0.5s" in result.reason
    child = int(pidfile.read_text())
    async with asyncio.timeout(2):  # the background sleep was in the group: it must be gone (or a zombie)
        while True:
            try:
                state = Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            await asyncio.sleep(0.01)


async def test_external_runs_with_a_cleared_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPVSD_TEST_SECRET", "hunter2")
    cmd = script(tmp_path, 'echo "$(pwd) $(env | grep -v -e ^PWD= -e ^SHLVL= -e ^_= | sort | tr "\\n" " ")"\n')
    result = await run(ExternalCheck(type="external", command=cmd), 80)
    assert result.ok, result.reason
    assert result.reason.endswith("exited 0: / PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), \
        result.reason


async def test_external_runs_without_a_shell() -> None:
    # each argument reaches the command as written: no expansion, no word splitting, no second command
    check = ExternalCheck(type="external", command="/bin/echo", args=("$HOME; echo pwned", "`id`", "a  b|cat"),
                          pass_target=False)
    result = await run(check, 80)
    assert result.ok and result.reason == "echo exited 0: $HOME; echo pwned `id` a  b|cat", result.reason


async def test_external_missing_command() -> None:
    result = await run(ExternalCheck(type="external", command="/nonexistent/check"), 80)
    assert not result.ok and result.kind is Kind.ERROR and "cannot run" in result.reason


# --- udp ---


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.reply is not None and self.transport is not None:
            self.transport.sendto(self.reply + data, addr)


async def udp_server(reply: bytes | None) -> tuple[asyncio.DatagramTransport, int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Udp(reply), local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]


@pytest.mark.parametrize(
    ("reply", "kw", "ok"),
    [(b"\xca\xfe", {"payload": "01", "expect": "cafe01"}, True), (b"\xca\xfe", {"expect": "caXX"}, True),
     (b"\xbe\xef", {"expect": "cafe"}, False), (None, {}, True), (b"\xca\xfe", {"max_reply_length": 2}, False)],
)
async def test_udp_reply(reply: bytes | None, kw: dict[str, Any], ok: bool) -> None:
    transport, port = await udp_server(reply)
    try:
        result = await run(UdpCheck(type="udp", **kw), port)
    finally:
        transport.close()
    assert result.ok is ok, result


async def test_udp_closed_port_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run(UdpCheck(type="udp"), port)
    assert not result.ok and result.kind is Kind.REFUSED


# --- dns ---


class _Dns(asyncio.DatagramProtocol):
    def __init__(self, rcode: int = 0, answer: str | None = "192.0.2.10") -> None:
        self.rcode, self.answer = rcode, answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.set_rcode(self.rcode)
        if self.answer is not None:
            q = query.question[0]
            reply.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", self.answer))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


@pytest.mark.parametrize(
    ("server", "expect", "ok", "kind"),
    [({}, None, True, Kind.OK), ({}, "192.0.2.10", True, Kind.OK), ({}, "192.0.2.99", False, Kind.DNS),
     ({"rcode": 2, "answer": None}, None, False, Kind.DNS), ({"answer": None}, None, False, Kind.DNS)],
)
async def test_dns(server: dict[str, Any], expect: str | None, ok: bool, kind: Kind) -> None:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Dns(**server), local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        result = await run(DnsCheck(type="dns", name="www.example.org", qtype="A", expect=expect), port)
    finally:
        transport.close()
    assert (result.ok, result.kind) == (ok, kind), result
    if ok:
        assert "192.0.2.10" in result.reason


# --- greetings ---


def dialogue(script: list[tuple[bytes | None, bytes]]) -> Any:
    """A line server: for each (expected command prefix or None, reply) pair, read a line then reply."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for expect, reply in script:
            if expect is not None:
                line = await reader.readline()
                assert line.startswith(expect), line
            writer.write(reply)
            await writer.drain()
        await reader.read(100)

    return handler


@pytest.mark.parametrize(
    ("check", "script", "ok"),
    [
        (SmtpCheck(type="smtp", helo="probe"), [(None, b"220 mx ESMTP\r\n"),
                                                (b"EHLO probe", b"250-mx\r\n250 SIZE 1000\r\n")], True),
        (SmtpCheck(type="smtp"), [(None, b"554 go away\r\n")], False),
        (FtpCheck(type="ftp"), [(None, b"220 ftp\r\n"), (b"USER anonymous", b"331 pass?\r\n"),
                                (b"PASS ", b"230 in\r\n")], True),
        (FtpCheck(type="ftp", login="u", password="bad"), [(None, b"220 ftp\r\n"), (b"USER u", b"331 p\r\n"),
                                                           (b"PASS bad", b"530 no\r\n")], False),
        (MailboxCheck(type="pop"), [(None, b"+OK POP3 ready\r\n")], True),
        (MailboxCheck(type="pop", login="u", password="p"), [(None, b"+OK\r\n"), (b"USER u", b"+OK\r\n"),
                                                             (b"PASS p", b"-ERR denied\r\n")], False),
        (MailboxCheck(type="imap"), [(None, b"* OK IMAP4rev1 ready\r\n")], True),
        (MailboxCheck(type="imap", login="u", password="p"), [(None, b"* OK\r\n"),
                                                              (b'a1 LOGIN "u" "p"', b"a1 OK done\r\n")], True),
        (NntpCheck(type="nntp"), [(None, b"200 news\r\n")], True),
        (NntpCheck(type="nntp"), [(None, b"502 no\r\n")], False),
    ],
)
async def test_greetings(check: Any, script: list[tuple[bytes | None, bytes]], ok: bool) -> None:
    async with serve(dialogue(script)) as port:
        result = await run(check, port)
    assert result.ok is ok, result
    if not ok:
        assert result.kind is Kind.PROTOCOL


@pytest.mark.parametrize(("receive", "ok"), [("sweet", True), ("sour", False)])
async def test_ftp_retrieves_a_file_over_passive_mode(receive: str, ok: bool) -> None:
    async def data_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"home sweet home\n")

    async with serve(data_handler) as data_port:
        pasv = f"227 Entering Passive Mode (127,0,0,1,{data_port // 256},{data_port % 256})\r\n".encode()
        script = [(None, b"220 ftp\r\n"), (b"USER anonymous", b"230 in\r\n"), (b"TYPE I", b"200 ok\r\n"),
                  (b"PASV", pasv), (b"RETR /index.html", b"150 sending\r\n")]
        async with serve(dialogue(script)) as port:
            result = await run(FtpCheck(type="ftp", path="/index.html", receive=receive), port)
    assert result.ok is ok, result
    if not ok:
        assert result.kind is Kind.RECEIVE


async def test_greeting_never_sent_times_out() -> None:
    async with serve(idle) as port:
        result = await run(SmtpCheck(type="smtp"), port)
    assert not result.ok and result.kind is Kind.TIMEOUT


# --- ping ---


def _can_ping() -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return True
        except PermissionError:
            continue
    return False


@pytest.mark.skipif(not _can_ping(), reason="no ICMP socket allowed (needs ping_group_range or CAP_NET_RAW)")
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_ping_loopback(host: str) -> None:
    if host == "::1" and os.geteuid() != 0:
        pytest.skip("ICMPv6 ping socket needs root here")
    result = await run(PingCheck(type="ping", count=2), 0, host)
    assert result.ok, result
