"""The daemon's wall clock, watched for steps (an NTP correction, an operator's `date -s`, a VM resumed late).

Drains, slow starts and announce graces are durations that must outlive a restart, so they start at wall-clock
times (kept in the state file) and end at `since + length`. A step of the wall clock would stretch or cut every
one under way: +1 h ends a ramp or a drain at once, -1 h holds a real at a quarter of its weight for an hour. The
monotonic clock does not step; comparing how far each moved between two passes tells a step from time passing,
and the daemon then moves the starts under way by the step, so each lasts what it was meant to. Absolute times
an operator gave (`ipvsd drain --until`) are not moved: they mean that time on the (corrected) clock.
"""

from __future__ import annotations

from collections.abc import Callable

TOLERANCE = 1.0  # seconds the two clocks may part between passes and still be time passing (NTP slews slower)


class StepWatch:
    """Tells how far the wall clock jumped between two calls of `step`, beyond what the monotonic clock moved."""

    def __init__(self, wall: Callable[[], float], mono: Callable[[], float], tolerance: float = TOLERANCE) -> None:
        self.wall = wall
        self.mono = mono
        self.tolerance = tolerance
        self._last: tuple[float, float] | None = None

    def step(self) -> float:
        """The step since the last call, in seconds (positive: forward); 0.0 for none (or the first call)."""
        now = (self.wall(), self.mono())
        last, self._last = self._last, now
        if last is None:
            return 0.0
        jump = (now[0] - last[0]) - (now[1] - last[1])
        return jump if abs(jump) >= self.tolerance else 0.0
