"""An event loop on virtual time: when nothing is ready, its clock jumps to the next timer instead of waiting.

Timing tests of the scheduler and the daemon run on it, so they assert exact schedules (not wall-clock
thresholds that a loaded machine breaks) and a test of a 30 s timeout takes milliseconds. While a job runs in
the loop's executor (`asyncio.to_thread`: config loads, name resolution) the loop waits for real and lets its
clock advance by what really passed, so virtual time never runs ahead of a thread's work.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

_T = TypeVar("_T")
_REAL_SLICE = 0.005  # seconds of real waiting per turn while an executor job runs


class _Selector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._vloop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._vloop
        if loop.busy:
            start = time.monotonic()
            wait = _REAL_SLICE if timeout is None else min(timeout, _REAL_SLICE)
            events = super().select(wait)
            loop.now += time.monotonic() - start
            return events
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # no timer at all: only I/O can wake us, so wait for it for real
            return super().select(None)
        loop.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is virtual (see the module docstring)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0  # executor jobs in flight
        super().__init__(selector=_Selector(self))

    def time(self) -> float:
        return self.now

    def run_in_executor(self, executor: Any, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        self.busy += 1
        fut = super().run_in_executor(executor, func, *args)

        def done(_: asyncio.Future[_T] | ThreadFuture[_T]) -> None:
            self.busy -= 1

        fut.add_done_callback(done)
        return fut


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run `coro` to completion on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)
