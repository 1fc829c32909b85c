"""A probe factory for tests whose probes answer from a verdict table instead of the network."""

from __future__ import annotations

import asyncio
from typing import Any

from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget


class Scripted:
    """A probe factory whose probes answer from a mutable verdict table: key port -> ok."""

    def __init__(self) -> None:
        self.ok: dict[int, bool] = {}
        self.calls: dict[int, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold = 0.0
        self.hang = False

    def __call__(self, check: Any) -> Scripted:
        return self

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        self.calls[target.port] = self.calls.get(target.port, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hang:
                await asyncio.sleep(3600)  # a buggy probe that ignores its timeout
            if self.hold:
                await asyncio.sleep(self.hold)
        finally:
            self.in_flight -= 1
        if self.ok.get(target.port, True):
            return ProbeResult.up("fine")
        return ProbeResult.down(Kind.REFUSED, "connection refused")
