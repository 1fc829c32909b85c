"""Send a string over TCP and expect a reply matching a regex (ldirectord service=simpletcp)."""

from __future__ import annotations

import re

from ipvsd.checks._net import connect
from ipvsd.checks.base import Kind, ProbeFailure, ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import SimpleTcpCheck

_LIMIT = 65536


@register("simpletcp")
class SimpleTcpProbe:
    """Connect, send `send`, read until `expect` matches or the peer closes; no `expect` means any reply."""

    def __init__(self, spec: SimpleTcpCheck) -> None:
        self.payload = spec.send.encode()
        self.expect = re.compile(spec.expect.encode()) if spec.expect is not None else None

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        return await run_bounded(lambda: self._once(target), timeout=timeout)

    async def _once(self, target: ProbeTarget) -> str:
        conn = await connect(target, limit=_LIMIT)
        try:
            if self.payload:
                conn.write(self.payload)
            expect = self.expect
            if expect is None:
                # Any reply (or a clean close after our send) is good; wait for the first bytes only.
                buf = await conn.read_until(lambda b: len(b) > 0)
                return f"reply {bytes(buf[:40])!r}" if buf else "sent, peer closed"
            buf = await conn.read_until(lambda b: expect.search(b) is not None)
        finally:
            conn.close()
        if expect.search(buf) is None:
            raise ProbeFailure(Kind.RECEIVE, f"reply {bytes(buf[:40])!r} does not match /{expect.pattern.decode()}/")
        return "reply matches"
