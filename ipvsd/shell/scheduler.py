"""The probe scheduler: one timer heap for every distinct probe, exact cadence, jittered retries, adaptive in-flight.

Probes are identified by `ProbeKey` (ipvsd.core.probes), so two virtual services that share a real and a check
share one probe. A probe has an asyncio task only while it runs (waiting for admission included): between runs
it is an item in the heap, which at 10,000 reals spares ~7 MB of idle tasks, coroutines and futures. A probe
that can run without a task (`direct`: plain http and tcp, ipvsd.checks.base.DirectProbe) runs on callbacks
alone: queued in admission as a callback, started from the timer (or from the release of a place), its
result settled from the socket's event, with no task, coroutine or future, and one trip through the loop fewer.
`update()` is warm: probes whose key survives keep their health state; only their timing
policy is replaced. Transitions go out through the `on_transition` callback; the daemon decides what they mean
for the table. Time is `loop.time()`, so a test's virtual-time loop drives the whole schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from ipvsd.checks import make_probe
from ipvsd.checks.base import DirectProbe, Kind, Probe, ProbeResult, ProbeTarget
from ipvsd.checks.sentinel import Sentinel
from ipvsd.config.schema import Check
from ipvsd.core.health import HealthState, Policy, Start, Transition, first_delay, fold, initial, sentinel_event
from ipvsd.core.probes import ProbeKey, policy_of
from ipvsd.shell.admission import Admission

log = logging.getLogger(__name__)

GRACE = 0.15  # seconds past a probe's own timeout before the watchdog cuts it off (a probe bug, never normal)
WATCHDOG_TICK = 0.1
LOCAL_WARN_EVERY = 10.0


@dataclass
class SchedulerStats:
    """Counters a benchmark or metrics exporter reads; lag is the delay between due time and probe start."""

    probes: int = 0
    transitions: int = 0
    sentinel_events: int = 0
    local_errors: int = 0  # probes this host could not run (ipvsd.core.health rule 7)
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=65536))


@dataclass(eq=False, slots=True)
class _Entry:
    key: ProbeKey
    check: Check
    probe: Probe
    policy: Policy
    state: HealthState
    next_at: float = 0.0
    slot: int = -1  # the heap item that schedules this entry (an older one, left by a poke, is skipped)
    task: asyncio.Task[None] | None = None  # the run in progress (admission, probe, verdict); None between runs
    direct: bool = False  # the probe can run without a task
    # A direct run: drops it while in flight (`_queued` or `_settling` before and after that); None between runs
    abort: Callable[[], None] | None = None
    stopped: bool = False
    last: ProbeResult | None = None
    cut: bool = False
    repoke: bool = False  # a sentinel event arrived while a probe was in flight: that result predates it

    @property
    def idle(self) -> bool:
        """Between runs: neither a task nor a direct run (queued, in flight or settling)."""
        return self.task is None and self.abort is None


def _cut_off(timeout: float) -> ProbeResult:
    """The verdict of a run the watchdog cut off after `timeout` (and the grace)."""
    return ProbeResult.down(Kind.TIMEOUT, f"timed out after {timeout:g}s (cut off by the scheduler)", timeout + GRACE)


def _raised(key: ProbeKey, exc: Exception) -> ProbeResult:
    """The verdict of a probe that raised (called in the handler): a probe bug must not stop the schedule; it
    counts as a failure, logged with its traceback."""
    log.exception("probe %s raised", key)
    return ProbeResult.down(Kind.ERROR, f"probe error: {type(exc).__name__}: {exc}")


def _settling() -> None:
    """A direct run's `abort` while its result is being settled: there is nothing left to abandon."""


def _queued() -> None:
    """A direct run's `abort` while it waits in admission's queue: stopped, it is skipped when its turn comes."""


TransitionSink = Callable[[ProbeKey, Transition], None]
ResultSink = Callable[[ProbeKey, ProbeResult, HealthState], None]


class Scheduler:
    """Runs probes on their schedule and reports transitions; `update()` starts, stops and retimes them."""

    def __init__(self, *, on_transition: TransitionSink, on_result: ResultSink | None = None,
                 concurrency: int = 256, jitter: float = 0.1, rng: random.Random | None = None,
                 factory: Callable[[Any], Probe] = make_probe, sentinels: bool = True,
                 sentinel_backoff: float = 1.0) -> None:
        self.on_transition = on_transition
        self.on_result = on_result
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.factory = factory
        self.use_sentinels = sentinels
        self.sentinel_backoff = sentinel_backoff
        self.stats = SchedulerStats()
        self.admission = Admission(concurrency)  # adapts to the CPU: see ipvsd.shell.admission
        self._entries: dict[ProbeKey, _Entry] = {}
        # One sentinel per distinct (addr, port, source, mark), shared by every probe of that real.
        self._sentinels: dict[ProbeTarget, tuple[Sentinel, set[ProbeKey]]] = {}
        # Probes in flight and when they must be over. One watchdog task enforces the bound for all of them,
        # which costs far less than a timeout context per probe at thousands of probes per second.
        self._in_flight: dict[_Entry, float] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._local_warned = -math.inf
        # The running loop, kept: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public API ---------------------------------------------------------------------------------------

    def update(self, jobs: Mapping[ProbeKey, Check], *, kernel_up: Mapping[ProbeKey, bool] | None = None,
               now: bool = False) -> None:
        """Make the running probes exactly `jobs`, keeping the state of those that stay; all or nothing.

        `kernel_up` adopts the kernel's view as the start state of new probes (ldirectord at start/reload).
        `now`: new probes run at once instead of spread over their warmup (a cold start waits for them).
        Every new probe is built before anything changes, so a probe that cannot be built leaves the running
        set as it was.
        """
        loop = self._loop = asyncio.get_running_loop()
        policies: dict[int, Policy] = {}  # one per check model: reals that share a check share its policy
        new: list[_Entry] = []
        for key, check in jobs.items():
            policy = policies.get(id(check))
            if policy is None:
                policy = policies[id(check)] = policy_of(check)
            if key in self._entries:
                continue
            if kernel_up is not None and key in kernel_up:
                state = initial(replace(policy, start=Start.ADOPT), now=loop.time(), kernel_up=kernel_up[key])
            else:
                state = initial(policy, now=loop.time())
            probe = self.factory(check)
            entry = _Entry(key, check, probe, policy, state, direct=getattr(probe, "direct", False))
            entry.next_at = loop.time() + (0.0 if now else first_delay(policy, u=self.rng.random()))
            new.append(entry)
        # Nothing below can fail: from here on, the update happens whole.
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch(), name="probe watchdog")
        self._stop_all([k for k in self._entries if k not in jobs])
        for key, check in jobs.items():
            kept = self._entries.get(key)
            if kept is not None:
                kept.check, kept.policy = check, policies[id(check)]
        for entry in new:
            self._entries[entry.key] = entry
            self._schedule(entry)
            if self.use_sentinels and getattr(entry.check, "sentinel", False):
                self._subscribe(entry.key)

    def resize(self, concurrency: int) -> None:
        """Take a new ceiling of probes in flight (a reload changed check_concurrency)."""
        self.admission.resize(concurrency)

    def last(self, key: ProbeKey) -> ProbeResult | None:
        """The latest result of a probe, None before its first."""
        entry = self._entries.get(key)
        return entry.last if entry is not None else None

    def state(self, key: ProbeKey) -> HealthState | None:
        entry = self._entries.get(key)
        return entry.state if entry is not None else None

    def states(self) -> dict[ProbeKey, HealthState]:
        return {k: e.state for k, e in self._entries.items()}

    def keys(self) -> set[ProbeKey]:
        return set(self._entries)

    def sentinels(self) -> list[Sentinel]:
        """The sentinels currently held, one per distinct real."""
        return [sentinel for sentinel, _ in self._sentinels.values()]

    def policy(self, key: ProbeKey) -> Policy | None:
        entry = self._entries.get(key)
        return entry.policy if entry is not None else None

    def poke(self, key: ProbeKey) -> None:
        """Run the probe of `key` now, as urgent (rule 5 of ipvsd.core.health)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.state = sentinel_event(entry.state)
        entry.next_at = asyncio.get_running_loop().time()
        if entry.idle:  # between runs: due now
            self._schedule(entry)
        else:
            entry.repoke = True

    async def close(self) -> None:
        """Stop every probe and sentinel and wait for them."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        self._stop_all(list(self._entries))
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sentinel, _ in self._sentinels.values():
            await sentinel.close()
        self._sentinels.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    # --- the probe loop -----------------------------------------------------------------------------------

    async def _run(self, entry: _Entry) -> None:
        """One run of a probe: admission, the probe, its verdict; then the next run goes into the heap."""
        loop = self._loop
        assert loop is not None
        try:
            async with self.admission:
                self.stats.lags.append(loop.time() - entry.next_at)
                result = await self._probe_once(entry)
        except asyncio.CancelledError:
            entry.task = None
            raise
        self._settle(entry, result, loop.time())

    def _queue(self, entry: _Entry) -> None:
        """Have admission start a direct probe when a place is free (at once, if one is)."""
        entry.abort = _queued
        self.admission.queue(functools.partial(self._start, entry))

    def _start(self, entry: _Entry) -> bool:
        """Run a direct probe that was admitted: its result comes back to `_reported`. False: it was stopped
        while queued, and gives its place back."""
        if entry.stopped:
            return False
        assert self._loop is not None
        now = self._loop.time()
        self.stats.lags.append(now - entry.next_at)
        timeout = entry.policy.timeout
        self._in_flight[entry] = now + timeout + GRACE
        report = functools.partial(self._reported, entry)
        probe = cast(DirectProbe, entry.probe)  # `direct` says it is one
        try:
            entry.abort = probe.start(entry.key.target, timeout=timeout, now=now, report=report)
        except Exception as exc:
            entry.abort = self._loop.call_soon(report, _raised(entry.key, exc)).cancel
        return True

    def _reported(self, entry: _Entry, result: ProbeResult) -> None:
        del self._in_flight[entry]
        self.admission.release()
        entry.abort = _settling  # still running for poke() until the next run is scheduled
        assert self._loop is not None
        self._settle(entry, result, self._loop.time())

    def _abandon(self, entry: _Entry) -> None:
        """Drop a direct run queued or in progress (stopped, or cut off by the watchdog): no result will come."""
        abort, entry.abort = entry.abort, None
        if abort is None:
            return
        abort()  # drops its exchange (a queued run is skipped when its turn comes: it is stopped)
        if self._in_flight.pop(entry, None) is not None:
            self.admission.release()

    def _settle(self, entry: _Entry, result: ProbeResult, now: float) -> None:
        """A run's verdict: fold the result into the state, report, and put the next run in the heap."""
        self.stats.probes += 1
        if result.kind is Kind.LOCAL:
            self._local_error(entry, result, now)
        step = fold(entry.state, result, now=now, policy=entry.policy)
        entry.state = step.state
        entry.last = result
        if self.on_result is not None:
            self.on_result(entry.key, result, step.state)
        if step.transition is not None:
            self.stats.transitions += 1
            self.on_transition(entry.key, step.transition)
        self._arm(entry)
        delay = step.delay
        if entry.repoke:  # confirm with a probe that starts after the event
            entry.repoke = False
            entry.state = sentinel_event(entry.state)
            delay = 0.0
        if delay > 0 and self.jitter and step.retry:
            # Only retries are jittered: failures that come together (a switch reboots) would otherwise
            # retry in lockstep. The steady cadence stays exact, as the peers' (and HAProxy's default):
            # `warmup` already spread the probes, and a fixed period detects a fault soonest on average.
            delay *= 1 + self.jitter * (2 * self.rng.random() - 1)
        # Keep the cadence: the next run is due one delay after this one was *due*, not after it started,
        # so schedule lag does not stretch the interval (a real probed at 1 Hz stays at 1 Hz). A probe
        # that overran its slot runs again at once, never in a burst to catch up.
        entry.next_at = max(entry.next_at + delay, now) if delay > 0 else now
        entry.task = entry.abort = None
        if not entry.stopped:
            self._schedule(entry)

    def _local_error(self, entry: _Entry, result: ProbeResult, now: float) -> None:
        """Count a probe that failed on this host's side; warn at most every LOCAL_WARN_EVERY seconds."""
        self.stats.local_errors += 1
        if now - self._local_warned >= LOCAL_WARN_EVERY:
            self._local_warned = now
            log.warning("probe %s could not run: %s (%d such failures so far; reals keep their state)",
                        entry.key, result.reason, self.stats.local_errors)

    async def _probe_once(self, entry: _Entry) -> ProbeResult:
        timeout = entry.policy.timeout
        entry.cut = False
        assert self._loop is not None
        self._in_flight[entry] = self._loop.time() + timeout + GRACE
        try:
            return await entry.probe.probe(entry.key.target, timeout=timeout)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not entry.cut or task is None:
                raise
            task.uncancel()
            return _cut_off(timeout)
        except Exception as exc:
            return _raised(entry.key, exc)
        finally:
            del self._in_flight[entry]

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + WATCHDOG_TICK
            await asyncio.sleep(WATCHDOG_TICK)
            now = loop.time()
            self.admission.observe(now - due)
            for entry, deadline in list(self._in_flight.items()):
                if now <= deadline or entry.cut:  # (only a task's run is cut off while it unwinds)
                    continue
                log.warning("probe %s overran its timeout; cutting it off", entry.key)
                if entry.task is not None:
                    entry.cut = True  # its run reports the cut-off as it unwinds
                    entry.task.cancel()
                else:  # a direct run, whose `abort` is set while it is in flight: nothing of it will report
                    self._abandon(entry)
                    self._settle(entry, _cut_off(entry.policy.timeout), now)

    def _schedule(self, entry: _Entry) -> None:
        """Put the entry in the heap at its `next_at` (an item it had there before is skipped from now on)."""
        entry.slot = seq = next(self._seq)
        heapq.heappush(self._heap, (entry.next_at, seq, entry))
        if entry.next_at < self._timer_at:
            self._set_timer(entry.next_at)

    # One timer for the whole schedule: a heap of (due, seq, entry) in C-compared tuples costs far less per
    # probe than one asyncio TimerHandle each (whose heap compares in Python). A poked or stopped probe leaves
    # an item whose seq is no longer its entry's slot, which the dispatcher skips.

    def _set_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        assert self._loop is not None
        self._timer = self._loop.call_at(at, self._dispatch)

    def _dispatch(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        assert self._loop is not None
        now = self._loop.time()
        while heap and heap[0][0] <= now:
            _, seq, entry = heapq.heappop(heap)
            if seq == entry.slot and entry.idle and not entry.stopped:
                if entry.direct:
                    self._queue(entry)
                else:  # unnamed: a name per run would cost a string each
                    entry.task = self._loop.create_task(self._run(entry))
        if heap:
            self._set_timer(heap[0][0])

    def _stop_all(self, keys: list[ProbeKey]) -> None:
        for key in keys:  # first, so that none of them starts when a place another one held frees up
            self._entries[key].stopped = True
        for key in keys:
            self._stop(key)

    def _stop(self, key: ProbeKey) -> None:
        entry = self._entries.pop(key)
        entry.stopped = True
        if entry.task is not None:
            entry.task.cancel()
        self._abandon(entry)
        close = getattr(entry.probe, "close", None)
        if close is not None:  # a probe holding a connection between runs (http reuse_connection)
            close()
        self._unsubscribe(key)

    # --- sentinels ----------------------------------------------------------------------------------------

    def _subscribe(self, key: ProbeKey) -> None:
        t = key.target
        skey = ProbeTarget(t.addr, t.port, source=t.source, mark=t.mark)
        if skey not in self._sentinels:
            timeout = self._entries[key].policy.timeout
            sentinel = Sentinel(skey, lambda: self._sentinel_event(skey), timeout=timeout,
                                min_backoff=self.sentinel_backoff)
            self._sentinels[skey] = (sentinel, set())
        self._sentinels[skey][1].add(key)

    def _unsubscribe(self, key: ProbeKey) -> None:
        t = key.target
        skey = ProbeTarget(t.addr, t.port, source=t.source, mark=t.mark)
        held = self._sentinels.get(skey)
        if held is None:
            return
        held[1].discard(key)
        if not held[1]:
            del self._sentinels[skey]
            asyncio.get_running_loop().create_task(held[0].close())

    def _sentinel_event(self, skey: ProbeTarget) -> None:
        self.stats.sentinel_events += 1
        for key in self._sentinels[skey][1]:
            self.poke(key)

    def _arm(self, entry: _Entry) -> None:
        t = entry.key.target
        held = self._sentinels.get(ProbeTarget(t.addr, t.port, source=t.source, mark=t.mark))
        if held is None or entry.key not in held[1]:
            return
        sentinel, keys = held
        # Hold the connection only while every probe of this real just succeeded: up, settled, no failure streak.
        states = [self._entries[k].state for k in keys if k in self._entries]
        if all(s.up and s.settled and s.streak == 0 for s in states):
            sentinel.arm()
        else:
            sentinel.disarm()


