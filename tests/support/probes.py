"""A probe factory for tests whose probes answer from a verdict table instead of the network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


class Direct(Scripted):
    """Scripted, and a direct probe (ipvsd.checks.base.DirectProbe): `start` answers by callback `hold` seconds
    later, or never when `hang`; `aborted` counts the runs the scheduler abandoned."""

    direct = True

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.aborted = 0
        self.fail_to_start = False

    def start(self, target: ProbeTarget, *, timeout: float, now: float,
              report: Callable[[ProbeResult], None]) -> Callable[[], None]:
        if self.fail_to_start:
            raise RuntimeError("a probe bug")
        self.started += 1
        self.calls[target.port] = self.calls.get(target.port, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def answer() -> None:
            self.in_flight -= 1
            report(ProbeResult.up("fine") if self.ok.get(target.port, True)
                   else ProbeResult.down(Kind.REFUSED, "connection refused"))

        handle = None if self.hang else asyncio.get_running_loop().call_later(self.hold, answer)

        def abort() -> None:
            self.aborted += 1
            self.in_flight -= 1
            if handle is not None:
                handle.cancel()

        return abort
