"""TCP connect check (ldirectord connect, keepalived TCP_CHECK): up when the three-way handshake completes."""

from __future__ import annotations

from ipvsd.checks._raw import exchange
from ipvsd.checks.base import ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import TcpCheck


async def tcp_connect(target: ProbeTarget) -> str:
    """Connect to `target` and close at once; socket errors propagate to be classified."""
    await exchange(target, None, limit=0, done=None)
    return "connected"


@register("tcp")
class TcpProbe:
    """A bare TCP connect."""

    def __init__(self, spec: TcpCheck | None = None) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        return await run_bounded(lambda: tcp_connect(target), timeout=timeout)
