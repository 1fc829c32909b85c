"""Line-protocol checks (ldirectord smtp/ftp/pop/imap/nntp, keepalived SMTP_CHECK): greeting, optional login.

Each dialogue is a short script of (command, expected reply prefix) steps run over one connection.
"""

from __future__ import annotations

import re
import socket
import ssl

from ipvsd.checks._net import Conn, connect
from ipvsd.checks.base import Kind, ProbeFailure, ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import FtpCheck, MailboxCheck, NntpCheck, SmtpCheck

_LIMIT = 16384
_DATA = 65536  # bytes of a fetched FTP file we look at
Step = tuple[str | None, tuple[str, ...]]  # (line to send or None for the greeting, acceptable reply prefixes)


def _insecure_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def reply_end(buf: bytes | bytearray, start: int, *, multiline: bool) -> int:
    """Return the offset past the reply beginning at `start`, or -1 while incomplete.

    With `multiline` (SMTP, FTP), "250-..." lines continue the reply until a "250 ..." line.
    """
    pos = start
    while True:
        eol = buf.find(b"\n", pos)
        if eol < 0:
            return -1
        line = bytes(buf[pos:eol])
        pos = eol + 1
        if not multiline or len(line) < 4 or line[3:4] != b"-":
            return pos


async def dialogue(conn: Conn, steps: list[Step], *, multiline: bool, pos: int = 0) -> tuple[list[str], int]:
    """Run `steps` from buffer offset `pos`; return the last line of each reply and the new offset.

    Raise a protocol failure at the first unexpected reply.
    """
    replies: list[str] = []
    for send, expect in steps:
        if send is not None:
            conn.write(send.encode() + b"\r\n")
        start = pos
        def done(b: bytearray, at: int = start) -> bool:
            return reply_end(b, at, multiline=multiline) >= 0

        buf = await conn.read_until(done)
        end = reply_end(buf, start, multiline=multiline)
        what = "greeting" if send is None else send.split(" ")[0]
        if end < 0:
            raise ProbeFailure(Kind.PROTOCOL, f"connection closed before the {what} reply")
        lines = bytes(buf[start:end]).decode("utf-8", "replace").strip().splitlines()
        reply = lines[-1] if lines else ""
        pos = end
        if not reply.startswith(expect):
            raise ProbeFailure(Kind.PROTOCOL, f"{what}: {reply[:80]!r}")
        replies.append(reply)
    return replies, pos


class _LineProbe:
    """A dialogue over TCP (or implicit TLS), ending with a polite quit whose reply is not awaited."""

    multiline = False
    quit = "QUIT"
    tls: ssl.SSLContext | None = None

    def steps(self) -> list[Step]:
        raise NotImplementedError

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        return await run_bounded(lambda: self._once(target), timeout=timeout)

    async def _once(self, target: ProbeTarget) -> str:
        conn = await connect(target, limit=_LIMIT, tls=self.tls)
        try:
            replies, _ = await dialogue(conn, self.steps(), multiline=self.multiline)
            conn.write(self.quit.encode() + b"\r\n")
        finally:
            conn.close()
        return replies[0][:80]


@register("smtp")
class SmtpProbe(_LineProbe):
    """220 greeting, EHLO (falling back to HELO is not needed: any 250 to EHLO is accepted), QUIT."""

    multiline = True

    def __init__(self, spec: SmtpCheck) -> None:
        self.helo = spec.helo or socket.gethostname()

    def steps(self) -> list[Step]:
        return [(None, ("220",)), (f"EHLO {self.helo}", ("250",))]


@register("ftp")
class FtpProbe(_LineProbe):
    """220 greeting, USER/PASS login (230, or 331 then 230), then RETR `path` matched against `receive`."""

    multiline = True

    def __init__(self, spec: FtpCheck) -> None:
        self.spec = spec
        self.receive = re.compile(spec.receive.encode()) if spec.receive is not None else None

    def steps(self) -> list[Step]:
        return [(None, ("220",)), (f"USER {self.spec.login}", ("331", "230"))]

    async def _once(self, target: ProbeTarget) -> str:
        conn = await connect(target, limit=_LIMIT)
        try:
            replies, pos = await dialogue(conn, self.steps(), multiline=True)
            if replies[1].startswith("331"):
                password = self.spec.password or f"ipvsd@{socket.gethostname()}"
                _, pos = await dialogue(conn, [(f"PASS {password}", ("230",))], multiline=True, pos=pos)
            if self.spec.path is not None:
                await self._retrieve(conn, pos, target, self.spec.path)
            conn.write(b"QUIT\r\n")
        finally:
            conn.close()
        return replies[0][:80]

    async def _retrieve(self, conn: Conn, pos: int, target: ProbeTarget, path: str) -> None:
        """Fetch `path` over a passive data connection to the real itself (never to the address in the reply,
        which a NATed server may get wrong) and match it."""
        six = ":" in target.addr
        (_, reply), pos = await dialogue(conn, [("TYPE I", ("200",)), ("EPSV" if six else "PASV", ("229", "227"))],
                                         multiline=True, pos=pos)
        m = re.search(r"\(\|\|\|(\d+)\|\)", reply) if six else re.search(r"\d+,\d+,\d+,\d+,(\d+),(\d+)", reply)
        if m is None:
            raise ProbeFailure(Kind.PROTOCOL, f"passive mode: {reply[:80]!r}")
        port = int(m.group(1)) if six else int(m.group(1)) * 256 + int(m.group(2))
        data = await connect(ProbeTarget(target.addr, port, source=target.source, mark=target.mark), limit=_DATA)
        try:
            await dialogue(conn, [(f"RETR {path}", ("150", "125"))], multiline=True, pos=pos)
            content = await data.read_until(lambda b: False)  # the server closes it at the end of the file
        finally:
            data.close()
        if self.receive is not None and self.receive.search(content) is None:
            raise ProbeFailure(Kind.RECEIVE, f"{path} does not match /{self.spec.receive}/")


@register("pop", "imap")
class MailboxProbe(_LineProbe):
    """POP3 (+OK) or IMAP (* OK) greeting, then an optional login."""

    def __init__(self, spec: MailboxCheck) -> None:
        self.spec = spec
        self.tls = _insecure_tls() if spec.tls else None
        self.quit = "QUIT" if spec.type == "pop" else "a2 LOGOUT"

    def steps(self) -> list[Step]:
        spec = self.spec
        if spec.type == "pop":
            steps: list[Step] = [(None, ("+OK",))]
            if spec.login is not None:
                steps += [(f"USER {spec.login}", ("+OK",)), (f"PASS {spec.password or ''}", ("+OK",))]
            return steps
        steps = [(None, ("* OK", "* PREAUTH"))]
        if spec.login is not None:
            steps.append((f'a1 LOGIN "{spec.login}" "{spec.password or ""}"', ("a1 OK",)))
        return steps


@register("nntp")
class NntpProbe(_LineProbe):
    """200 or 201 greeting."""

    def __init__(self, spec: NntpCheck) -> None:
        self.spec = spec

    def steps(self) -> list[Step]:
        return [(None, ("200", "201"))]
