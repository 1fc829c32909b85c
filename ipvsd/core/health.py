"""The health state machine of one probe: results in, up/down transitions and the next probe delay out.

Pure: no I/O, no clock, no randomness. Time (`now`) and the warmup draw (`u`) are parameters, so unit tests
drive it with a fake clock and the scheduler supplies `loop.time()`.

Rules (everything that decides a transition lives in this file):

1. A probe is UP or DOWN. `streak` counts consecutive results that *disagree* with the current state
   (failures while UP, successes while DOWN); a result that agrees resets it to 0.
2. UP goes DOWN when `streak` reaches `fall`; DOWN goes UP when it reaches `rise` (table `_THRESHOLD`).
3. Before the first result the state is provisional (`settled=False`). The start state comes from `Start`:
   UP (keepalived without `alpha`), DOWN (keepalived `alpha`: down until the first success), or ADOPT (as
   the kernel shows it, ldirectord: weight > 0 means up). While provisional, one success is enough to go UP;
   failures still need `fall`, as keepalived still applies `retry` to a real assumed up at start.
4. Next probe: after a transition, or a result that agrees with the state, wait `interval` (`down_interval`
   while DOWN, when set). While a streak is under way, wait `retry_delay` (keepalived delay_before_retry;
   HAProxy calls this fastinter).
5. A sentinel event (`urgent`) asks for a probe now. While urgent, a failure schedules the next probe at
   once, so the fall count is met by the confirming probe and its immediate retries. Urgency ends at the
   first success or when the state is DOWN.
6. Only a change of UP/DOWN yields a `Transition`; it carries the result that caused it.
7. A result of kind LOCAL (the prober itself ran out of descriptors, buffers or memory) says nothing about
   the real: the state is unchanged, and the probe runs again after `retry_delay`. A daemon short of file
   descriptors must not take healthy reals out (seen in the lab at 1,000 reals before ipvsd.shell.fdlimit).

Mapping from the peers (see docs/checks.md):
- ldirectord `failurecount = N`, `checkinterval = I`: fall=N, rise=1, interval=I, retry_delay=I, start=ADOPT.
- keepalived `retry = R`, `delay_before_retry = D`, `delay_loop = I`: fall=R+1, rise=1, retry_delay=D,
  interval=I, start=DOWN with `alpha` else UP; `warmup = W`: first probe at a uniform draw in [0, W].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from ipvsd.checks.base import Kind, ProbeResult


class Start(Enum):
    """The state of a probe before its first result."""

    UP = "up"
    DOWN = "down"
    ADOPT = "adopt"


@dataclass(frozen=True, slots=True)
class Policy:
    """Timing and thresholds of one probe."""

    interval: float = 5.0
    timeout: float = 5.0
    rise: int = 1
    fall: int = 1
    retry_delay: float | None = None  # None: same as interval
    down_interval: float | None = None  # None: same as interval
    start: Start = Start.UP
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("interval and timeout must be positive")

    @property
    def retry(self) -> float:
        """Seconds before a retry: `retry_delay`, or `interval` when unset."""
        return self.interval if self.retry_delay is None else self.retry_delay


@dataclass(frozen=True, slots=True)
class HealthState:
    """Where one probe stands; runtime only, never part of a config."""

    up: bool
    settled: bool
    streak: int
    since: float
    urgent: bool = False
    transitions: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of UP/DOWN, with the result that caused it."""

    up: bool
    at: float
    result: ProbeResult

    def __str__(self) -> str:
        return f"{'UP' if self.up else 'DOWN'}: {self.result.reason}"


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of folding one result: new state, optional transition, seconds until the next probe."""

    state: HealthState
    transition: Transition | None
    delay: float
    retry: bool = False  # `delay` is a retry's (rules 4 and 7), not the steady interval: the scheduler jitters it


# (up, result ok) -> name of the Policy threshold that ends a disagreeing streak; None: the result agrees.
_THRESHOLD: dict[tuple[bool, bool], str | None] = {
    (True, True): None,
    (True, False): "fall",
    (False, False): None,
    (False, True): "rise",
}


def initial(policy: Policy, *, now: float, kernel_up: bool | None = None) -> HealthState:
    """Return the provisional state of a new probe (rule 3); `kernel_up` matters only for ADOPT."""
    up = {Start.UP: True, Start.DOWN: False, Start.ADOPT: bool(kernel_up)}[policy.start]
    return HealthState(up=up, settled=False, streak=0, since=now)


def first_delay(policy: Policy, *, u: float) -> float:
    """Return the delay before the first probe: a draw `u` in [0, 1) spread over `warmup`."""
    return policy.warmup * u


def fold(state: HealthState, result: ProbeResult, *, now: float, policy: Policy) -> Step:
    """Return the step that follows `result` (rules 1-7)."""
    if result.kind is Kind.LOCAL:
        return Step(state, None, policy.retry, retry=True)
    threshold = _THRESHOLD[(state.up, result.ok)]
    if threshold is None:
        if state.settled and not state.streak and not state.urgent:
            return Step(state, None, _steady(state, policy))  # the common case: nothing changes, nothing allocated
        new = replace(state, settled=True, streak=0, urgent=False)
        return Step(new, None, _steady(new, policy))
    need = getattr(policy, threshold)
    if threshold == "rise" and not state.settled:
        need = 1
    streak = state.streak + 1
    if streak >= need:
        new = HealthState(up=not state.up, settled=True, streak=0, since=now, urgent=False,
                          transitions=state.transitions + 1)
        return Step(new, Transition(up=new.up, at=now, result=result), _steady(new, policy))
    urgent = state.urgent and not result.ok
    new = replace(state, settled=True, streak=streak, urgent=urgent)
    return Step(new, None, 0.0 if urgent else policy.retry, retry=True)


def sentinel_event(state: HealthState) -> HealthState:
    """Return the state after the sentinel connection broke: urgent while UP (rule 5), unchanged while DOWN."""
    return replace(state, urgent=True) if state.up else state


def _steady(state: HealthState, policy: Policy) -> float:
    if not state.up and policy.down_interval is not None:
        return policy.down_interval
    return policy.interval
