"""TCP connect check (ldirectord connect, keepalived TCP_CHECK): up when the three-way handshake completes."""

from __future__ import annotations

import asyncio

from ipvsd.checks._raw import exchange
from ipvsd.checks.base import ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import TcpCheck


async def tcp_connect(target: ProbeTarget, deadline: float) -> str:
    """Connect to `target` and close at once; socket errors and the deadline propagate to be classified."""
    await exchange(target, None, limit=0, done=None, deadline=deadline)
    return "connected"


@register("tcp")
class TcpProbe:
    """A bare TCP connect."""

    def __init__(self, spec: TcpCheck | None = None) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        deadline = asyncio.get_running_loop().time() + timeout
        return await run_bounded(lambda: tcp_connect(target, deadline), timeout=timeout, bounded=True)
