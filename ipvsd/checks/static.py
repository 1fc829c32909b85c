"""The `on` and `off` checks (ldirectord checktype=on/off): a fixed verdict, for tests and maintenance."""

from __future__ import annotations

from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget, register
from ipvsd.config.schema import StaticCheck


@register("on", "off")
class StaticProbe:
    """Always up (`on`) or always down (`off`), without touching the network."""

    def __init__(self, spec: StaticCheck) -> None:
        self.up = spec.type == "on"

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        if self.up:
            return ProbeResult.up("always up (check type on)")
        return ProbeResult.down(Kind.STATIC, "always down (check type off)")
