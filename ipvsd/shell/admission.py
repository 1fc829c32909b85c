"""How many probes may be in flight: a limit that shrinks when the event loop falls behind and grows back.

Why: a daemon short of CPU that starts every probe that is due makes each one wait behind all the others,
so replies that arrived on time are read after the probe's timeout and healthy reals flap (seen in the lab
at 500 reals/s on one emulated core: 2,000 false transitions in two minutes). With fewer probes in flight
each one finishes quickly; the ones not admitted start late. The daemon then checks as many reals per second
as its CPU allows, with stretched intervals (visible as schedule lag), and never reports a timeout it caused.

The controller is additive-increase / multiplicative-decrease on the loop's lateness, which the scheduler's
watchdog measures on every tick. `observe()` is pure arithmetic on what it is given, for tests.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

Start = Callable[[], bool]  # a queued start: True if it took the place it was given

LATE_HIGH = 0.1  # the loop is this late (s): fewer in flight
LATE_LOW = 0.03  # and below this, with probes waiting: more
FLOOR = 4


class Admission:
    """A counting gate whose size adapts between FLOOR and `ceiling`."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.shrinks = 0  # how often the loop was found late: a sign the daemon is short of CPU
        # In arrival order: a task's future, or a direct probe's start (called once admitted, holding a place).
        self._waiters: deque[asyncio.Future[None] | Start] = deque()

    def resize(self, ceiling: int) -> None:
        """Take a new ceiling (a reload changed check_concurrency); probes in flight finish as they are."""
        self.ceiling = max(1, ceiling)
        self.limit = min(self.limit, float(self.ceiling))
        if self._waiters:
            self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def observe(self, late: float) -> None:
        """Adjust the limit to how late (s) the loop ran a callback that was due on time."""
        floor = min(FLOOR, self.ceiling)
        if late > LATE_HIGH:
            if self.limit > floor:
                self.shrinks += 1
            self.limit = max(floor, min(self.limit, self.in_flight) / 2)
        elif late < LATE_LOW and self._waiters:
            self.limit = min(self.ceiling, self.limit + max(1.0, self.limit / 8))
            self._wake()

    def try_acquire(self) -> bool:
        """Take a place if one is free and nobody waits for one; never waits."""
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            return True
        return False

    def queue(self, start: Start) -> None:
        """Call `start()` when a place is free (now, if one is): it keeps the place, or returns False to give it
        back (what it was to start was stopped meanwhile: withdrawing it from the queue would cost a search)."""
        if self.try_acquire():
            if not start():
                self.in_flight -= 1
        else:
            self._waiters.append(start)

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # admitted, then cancelled before running: give it back
                self.release()
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    self.in_flight += 1
                    waiter.set_result(None)
            else:
                self.in_flight += 1
                if not waiter():
                    self.in_flight -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
