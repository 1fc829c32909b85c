"""UDP check (keepalived UDP_CHECK): send a datagram, then expect a matching reply or at least no ICMP error.

A connected UDP socket turns an ICMP port unreachable into ECONNREFUSED, which is how a closed port is seen.
Without `expect`, silence until near the timeout counts as up, as in keepalived; a host that vanished
without sending ICMP therefore looks up: configure `expect` where the service answers.
"""

from __future__ import annotations

import asyncio
import os
import socket

from ipvsd.checks._net import make_socket
from ipvsd.checks.base import Kind, ProbeFailure, ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import UdpCheck

_SILENCE_SHARE = 0.8  # of the timeout: how long silence must last to count as "no error" without `expect`


def matches(reply: bytes, pattern: str) -> bool:
    """True when `reply` starts with the hex `pattern`, where an X nibble matches anything."""
    text = reply.hex()
    return len(text) >= len(pattern) and all(p in ("x", c) for p, c in zip(pattern, text, strict=False))


@register("udp")
class UdpProbe:
    """Send `payload` (random when unset); judge the reply, or the silence, as keepalived does."""

    def __init__(self, spec: UdpCheck) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        return await run_bounded(lambda: self._once(target, timeout), timeout=timeout)

    async def _once(self, target: ProbeTarget, timeout: float) -> str:
        spec = self.spec
        loop = asyncio.get_running_loop()
        payload = bytes.fromhex(spec.payload) if spec.payload is not None else os.urandom(16)
        sock = make_socket(target, socket.SOCK_DGRAM)
        try:
            sock.connect((target.addr, target.port))  # datagram connects do not block
            await loop.sock_sendall(sock, payload)
            if spec.expect is None:
                try:
                    async with asyncio.timeout(timeout * _SILENCE_SHARE):
                        reply = await loop.sock_recv(sock, 65535)
                except TimeoutError:
                    return "no reply, no ICMP error"
            else:
                reply = await loop.sock_recv(sock, 65535)
        finally:
            sock.close()
        if not spec.min_reply_length <= len(reply) <= spec.max_reply_length:
            raise ProbeFailure(Kind.RECEIVE, f"reply of {len(reply)} bytes, expected "
                                             f"{spec.min_reply_length}-{spec.max_reply_length}")
        if spec.expect is not None and not matches(reply, spec.expect):
            raise ProbeFailure(Kind.RECEIVE, f"reply {reply[:16].hex()} does not match {spec.expect}")
        return f"reply of {len(reply)} bytes"
