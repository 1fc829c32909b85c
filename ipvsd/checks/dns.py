"""DNS check (ldirectord service=dns, keepalived DNS_CHECK): a query answered NOERROR with records.

dnspython builds and parses messages; the socket is ours, so the source address and SO_MARK apply here too.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING

from ipvsd.checks._net import connect, make_socket
from ipvsd.checks.base import Kind, ProbeFailure, ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import DnsCheck

if TYPE_CHECKING:
    import dns.message


@register("dns")
class DnsProbe:
    """Ask `name`/`qtype`; up when the answer is NOERROR, non-empty, and holds `expect` when set."""

    def __init__(self, spec: DnsCheck) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        return await run_bounded(lambda: self._once(target), timeout=timeout)

    async def _once(self, target: ProbeTarget) -> str:
        # dnspython is imported on first use: 38 modules that a daemon with no DNS check should not load
        import dns.exception
        import dns.message

        query = dns.message.make_query(self.spec.name, self.spec.qtype)
        wire = query.to_wire()
        raw = await (self._tcp(target, wire) if self.spec.transport == "tcp" else self._udp(target, wire))
        try:
            reply = dns.message.from_wire(raw)
        except dns.exception.DNSException as e:
            raise ProbeFailure(Kind.PROTOCOL, f"not a DNS reply: {e}") from None
        if reply.id != query.id:
            raise ProbeFailure(Kind.PROTOCOL, "DNS reply id does not match the query")
        return self._verdict(reply)

    async def _udp(self, target: ProbeTarget, wire: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        sock = make_socket(target, socket.SOCK_DGRAM)
        try:
            sock.connect((target.addr, target.port))  # datagram connects do not block
            await loop.sock_sendall(sock, wire)
            return await loop.sock_recv(sock, 65535)
        finally:
            sock.close()

    async def _tcp(self, target: ProbeTarget, wire: bytes) -> bytes:
        conn = await connect(target, limit=65537)
        try:
            conn.write(struct.pack("!H", len(wire)) + wire)
            buf = await conn.read_until(lambda b: len(b) >= 2 and len(b) >= 2 + struct.unpack("!H", b[:2])[0])
        finally:
            conn.close()
        if len(buf) < 2:
            raise ProbeFailure(Kind.PROTOCOL, "connection closed before a DNS reply")
        return bytes(buf[2:2 + struct.unpack("!H", buf[:2])[0]])

    def _verdict(self, reply: dns.message.Message) -> str:
        import dns.rcode
        import dns.rdatatype

        rcode = reply.rcode()
        if rcode != dns.rcode.NOERROR:
            raise ProbeFailure(Kind.DNS, f"{self.spec.name} {self.spec.qtype}: {dns.rcode.to_text(rcode)}")
        want = dns.rdatatype.from_text(self.spec.qtype)
        records = [rd.to_text() for rrset in reply.answer if rrset.rdtype == want for rd in rrset]
        if not records:
            raise ProbeFailure(Kind.DNS, f"{self.spec.name} {self.spec.qtype}: no answer")
        if self.spec.expect is not None and self.spec.expect not in records:
            raise ProbeFailure(Kind.DNS, f"{self.spec.name} {self.spec.qtype}: {', '.join(records[:3])}, "
                                         f"expected {self.spec.expect}")
        return f"{self.spec.name} {self.spec.qtype}: {records[0]}"
