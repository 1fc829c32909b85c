"""TCP connect check (ldirectord connect, keepalived TCP_CHECK): up when the three-way handshake completes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from ipvsd.checks._raw import OneShot, exchange
from ipvsd.checks.base import ProbeResult, ProbeTarget, Report, failed, register, run_bounded
from ipvsd.config.schema import TcpCheck


async def tcp_connect(target: ProbeTarget, deadline: float) -> str:
    """Connect to `target` and close at once; socket errors and the deadline propagate to be classified."""
    await exchange(target, None, limit=0, done=None, deadline=deadline)
    return "connected"


@register("tcp")
class TcpProbe:
    """A bare TCP connect."""

    direct = True  # it can run without a task: `start`

    def __init__(self, spec: TcpCheck | None = None) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        deadline = asyncio.get_running_loop().time() + timeout
        return await run_bounded(lambda: tcp_connect(target, deadline), timeout=timeout, bounded=True)

    def start(self, target: ProbeTarget, *, timeout: float, now: float, report: Report) -> Callable[[], None]:
        """`probe` without a task: see ipvsd.checks.base.DirectProbe."""
        shot = OneShot(target, None, limit=0, done=None, deadline=now + timeout,
                       end=functools.partial(_ended, now, timeout, report))
        return shot.cancel


def _ended(began: float, timeout: float, report: Report, exc: BaseException | None, now: float) -> None:
    latency = now - began
    report(ProbeResult.up("connected", latency) if exc is None else failed(exc, timeout, latency))
