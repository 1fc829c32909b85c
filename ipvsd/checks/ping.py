"""ICMP echo check (ldirectord ping, keepalived PING_CHECK): up when one of `count` echo requests is answered.

Uses an unprivileged ICMP datagram socket where net.ipv4.ping_group_range allows it (the kernel then fills
in the identifier and filters replies), and a raw socket otherwise, which needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from ipvsd.checks._net import prepare
from ipvsd.checks.base import Kind, ProbeFailure, ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import PingCheck
from ipvsd.model import AF_INET6, family_of

_ECHO: dict[int, tuple[int, int]] = {socket.AF_INET: (8, 0), AF_INET6: (128, 129)}  # (request type, reply type)


def checksum(data: bytes) -> int:
    """Return the Internet checksum of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(af: int, ident: int, seq: int, payload: bytes) -> bytes:
    """Return an ICMP(v6) echo request; the v6 checksum is left to the kernel (it needs the pseudo-header)."""
    kind = _ECHO[af][0]
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if af == AF_INET6:
        return head + payload
    return struct.pack("!BBHHH", kind, 0, checksum(head + payload), ident, seq) + payload


def _open(af: int) -> tuple[socket.socket, bool]:
    proto = socket.IPPROTO_ICMPV6 if af == AF_INET6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(af, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        try:
            return socket.socket(af, socket.SOCK_RAW, proto), True
        except PermissionError:
            raise ProbeFailure(Kind.ERROR, "ping needs root, CAP_NET_RAW or net.ipv4.ping_group_range") from None


def is_reply(packet: bytes, af: int, *, raw: bool, ident: int, seq: int) -> bool:
    """True when `packet` is the echo reply to (ident, seq); raw IPv4 packets carry their IP header."""
    if raw and af == socket.AF_INET:
        packet = packet[(packet[0] & 0x0F) * 4:]
    if len(packet) < 8:
        return False
    kind, _, _, rid, rseq = struct.unpack("!BBHHH", packet[:8])
    # A datagram socket rewrites the identifier to its own port, so only the sequence is ours to compare.
    return kind == _ECHO[af][1] and rseq == seq and (not raw or rid == ident)


@register("ping")
class PingProbe:
    """Send up to `count` echo requests, one per `timeout / count` slice; the first reply wins."""

    def __init__(self, spec: PingCheck) -> None:
        self.count = spec.count

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        return await run_bounded(lambda: self._once(target, timeout), timeout=timeout)

    async def _once(self, target: ProbeTarget, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        af = family_of(target.addr)
        sock, raw = _open(af)
        try:
            prepare(sock, target)
            sock.connect((target.addr, 0))  # datagram connects do not block
            ident = os.getpid() & 0xFFFF
            for seq in range(1, self.count + 1):
                await loop.sock_sendall(sock, echo_request(af, ident, seq, b"ipvsd-ping"))
                try:
                    async with asyncio.timeout(timeout / self.count):
                        while not is_reply(await loop.sock_recv(sock, 2048), af, raw=raw, ident=ident, seq=seq):
                            pass
                    return f"echo reply (seq {seq})"
                except TimeoutError:
                    continue
        finally:
            sock.close()
        raise ProbeFailure(Kind.TIMEOUT, f"no echo reply to {self.count} request(s)")
