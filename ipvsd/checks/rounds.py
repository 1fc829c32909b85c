"""ldirectord's `checktype = N`: N cheap TCP connects, then one full protocol check, round after round."""

from __future__ import annotations

from ipvsd.checks.base import Probe, ProbeResult, ProbeTarget


class Rounds:
    """Alternate a cheap probe (`n` times) and a full probe (once); the very first round is a full one."""

    def __init__(self, full: Probe, cheap: Probe, n: int) -> None:
        self.full = full
        self.cheap = cheap
        self.n = n
        self.count = 0

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        use_full = self.count % (self.n + 1) == 0
        self.count += 1
        return await (self.full if use_full else self.cheap).probe(target, timeout=timeout)
