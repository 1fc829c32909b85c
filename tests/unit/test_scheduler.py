"""The probe scheduler: dedup by ProbeKey, transitions out, warm update, concurrency, hard bound, sentinels."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget
from ipvsd.config.schema import Config, TcpCheck
from ipvsd.core.health import Transition
from ipvsd.core.probes import ProbeKey, plan_probes, policy_of, real_health
from ipvsd.shell.scheduler import Scheduler
from tests.support import vtime
from tests.support.probes import Direct, Scripted

FAST = {"interval": 0.02, "timeout": 0.2, "warmup": 0}


async def until(cond: Callable[[], bool], deadline: float = 3.0) -> None:
    """Wait until `cond()` holds, or fail after `deadline` seconds."""
    async with asyncio.timeout(deadline):
        while not cond():
            await asyncio.sleep(0.005)


def config(*services: dict[str, Any]) -> Config:
    return Config.model_validate({"services": list(services)})


def svc(vip: str, *reals: int, checks: list[dict[str, Any]] | None = None, port: int = 80) -> dict[str, Any]:
    return {"address": vip, "port": port, "reals": [{"address": "127.0.0.1", "port": p} for p in reals],
            "checks": checks if checks is not None else [{"type": "tcp", **FAST}]}


@contextlib.asynccontextmanager
async def scheduler(factory: Any = None, **kw: Any) -> Any:
    events: list[tuple[ProbeKey, Transition]] = []
    s = Scheduler(on_transition=lambda k, t: events.append((k, t)), factory=factory or Scripted(), **kw)
    s.events = events  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        await s.close()


def test_shared_real_and_check_is_one_probe() -> None:
    plan = plan_probes(config(svc("10.0.0.1", 8080, 8081), svc("10.0.0.2", 8080), svc("10.0.0.3", 8080, port=443)))
    assert len(plan.jobs) == 2  # 127.0.0.1:8080 and :8081, whatever the VIP
    assert len(plan.reals) == 4
    assert len({keys for keys in plan.reals.values()}) == 2


def test_timing_is_not_identity_but_parameters_are() -> None:
    a = plan_probes(config(svc("10.0.0.1", 8080, checks=[{"type": "tcp", "interval": 1}]))).jobs
    b = plan_probes(config(svc("10.0.0.1", 8080, checks=[{"type": "tcp", "interval": 9, "fall": 3}]))).jobs
    c = plan_probes(config(svc("10.0.0.1", 8080, checks=[{"type": "tcp", "interval": 1, "mark": 7}]))).jobs
    assert a.keys() == b.keys()
    assert a.keys() != c.keys()


def test_external_checks_see_the_virtual_service_and_do_not_dedup_across_it() -> None:
    ext = [{"type": "external", "command": "/bin/true"}]
    plan = plan_probes(config(svc("10.0.0.1", 8080, checks=ext), svc("10.0.0.2", 8080, checks=ext)))
    assert sorted(k.target.vip for k in plan.jobs) == ["10.0.0.1", "10.0.0.2"]


def test_several_checks_per_real_all_must_pass() -> None:
    """One real, two checks on different ports: one answers, one is refused; the real is down, settled."""
    checks = [{"type": "tcp", **FAST, "port": 1}, {"type": "tcp", **FAST, "port": 2}]
    plan = plan_probes(config(svc("10.0.0.1", 8080, checks=checks)))
    ((_, keys),) = plan.reals.items()
    assert sorted(k.target.port for k in keys) == [1, 2]

    async def go() -> tuple[bool, bool, bool, bool]:
        factory = Scripted()
        factory.ok[2] = False
        async with scheduler(factory) as s:
            s.update(plan.jobs)
            await until(lambda: all(st.settled for st in s.states().values()))
            states = [s.state(k) for k in keys]
            one_up = any(st is not None and st.up for st in states)
            health = real_health(states)
            factory.ok[2] = True
            await until(lambda: all(st.up for st in s.states().values()))
            return one_up, health.up, health.settled, real_health(s.state(k) for k in keys).up

    one_up, up, settled, up_after = vtime.run(go())
    assert one_up and settled and not up  # an up probe beside a down one: the real is down
    assert up_after  # both up: the real is up
    assert real_health([]).up and not real_health([None]).up


def test_policy_maps_alpha_and_warmup() -> None:
    p = policy_of(TcpCheck(type="tcp", interval=4, alpha=False))
    assert (p.start.value, p.warmup) == ("up", 4)
    assert policy_of(TcpCheck(type="tcp", warmup=0)).start.value == "down"


async def test_transitions_follow_results() -> None:
    factory = Scripted()
    plan = plan_probes(config(svc("10.0.0.1", 1, 2, checks=[{"type": "tcp", **FAST, "fall": 2}])))
    async with scheduler(factory) as s:
        s.update(plan.jobs)
        await until(lambda: len(s.events) == 2)  # alpha: both start down and go up at the first success
        assert all(t.up for _, t in s.events)
        factory.ok[2] = False
        await until(lambda: len(s.events) == 3)
        key, t = s.events[2]
        assert key.target.port == 2 and not t.up and t.result.kind is Kind.REFUSED
        assert s.state(key) is not None and s.state(key).transitions == 2  # type: ignore[union-attr]
        factory.ok[2] = True
        await until(lambda: len(s.events) == 4)
        assert s.events[3][1].up


async def test_warm_update_keeps_state_of_unchanged_probes() -> None:
    factory = Scripted()
    old = plan_probes(config(svc("10.0.0.1", 1, 2))).jobs
    async with scheduler(factory) as s:
        s.update(old)
        await until(lambda: len(s.events) == 2)
        kept = next(k for k in old if k.target.port == 1)
        before = s.state(kept)
        # Retimed (interval changed), one real dropped, one added: the kept one neither restarts nor flaps.
        new = plan_probes(config(svc("10.0.0.1", 1, 3, checks=[{"type": "tcp", **FAST, "interval": 0.03}]))).jobs
        s.update(new)
        assert s.keys() == set(new)
        assert s.state(kept) is before or s.state(kept).since == before.since  # type: ignore[union-attr]
        await until(lambda: len(s.events) == 3)
        assert s.events[2][0].target.port == 3  # only the new probe transitioned
        assert s.policy(kept) == policy_of(new[kept])


async def test_adopt_starts_as_the_kernel_shows() -> None:
    factory = Scripted()
    factory.ok[1] = False
    jobs = plan_probes(config(svc("10.0.0.1", 1, checks=[{"type": "tcp", **FAST, "warmup": 5}]))).jobs
    async with scheduler(factory) as s:
        s.update(jobs, kernel_up=dict.fromkeys(jobs, True))
        assert all(st.up for st in s.states().values())


@pytest.mark.parametrize("make", [Scripted, Direct], ids=["task", "direct"])
async def test_global_concurrency_limit(make: type[Scripted]) -> None:
    """The runs that find admission full wait in its queue (a direct probe's as a callback, holding no task)
    and start as places free up."""
    factory = make()
    factory.hold = 0.02
    jobs = plan_probes(config(svc("10.0.0.1", *range(1, 21)))).jobs
    async with scheduler(factory, concurrency=3) as s:
        s.update(jobs)
        await until(lambda: s.admission.waiting > 0)
        if isinstance(factory, Direct):
            assert len(asyncio.all_tasks()) <= 2  # the test and the watchdog
        await until(lambda: sum(factory.calls.values()) >= 40)
    assert factory.max_in_flight == 3
    if isinstance(factory, Direct):
        assert factory.started == sum(factory.calls.values())


@pytest.mark.parametrize("make", [Scripted, Direct], ids=["task", "direct"])
def test_a_probe_that_ignores_its_timeout_is_cut_off(make: type[Scripted]) -> None:
    async def go() -> tuple[float, Kind, int, int]:
        factory = make()
        factory.hang = True
        jobs = plan_probes(config(svc("10.0.0.1", 1, checks=[{"type": "tcp", **FAST, "alpha": False}]))).jobs
        async with scheduler(factory) as s:
            loop = asyncio.get_running_loop()
            start = loop.time()
            s.update(jobs)
            await until(lambda: len(s.events) == 1)
            took = loop.time() - start
            aborted = factory.aborted if isinstance(factory, Direct) else 1  # a task is cancelled instead
            return took, s.events[0][1].result.kind, aborted, s.admission.in_flight

    took, kind, aborted, in_flight = vtime.run(go())
    assert kind is Kind.TIMEOUT and aborted == 1
    assert in_flight <= 1  # the next run may have started; the cut one gave its place back
    # cut at timeout + GRACE, seen by the watchdog at its next tick (virtual time: no machine-load slack)
    assert 0.2 + 0.15 <= took <= 0.2 + 0.15 + 0.1 + 0.01


class Timed(Scripted):
    """Scripted, and records when each port was probed (loop time)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[int, list[float]] = {}

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        self.at.setdefault(target.port, []).append(asyncio.get_running_loop().time())
        return await super().probe(target, timeout=timeout)


class Highest:
    """An rng whose every draw is the top of [0, 1): jitter, where applied, is always +10 %."""

    def random(self) -> float:
        return 0.999


def test_steady_cadence_is_exact_and_retries_are_jittered() -> None:
    factory = Timed()
    factory.ok[2] = False  # port 2 fails for good: fall=50 keeps it retrying
    steady = [{"type": "tcp", "interval": 0.05, "timeout": 0.2, "warmup": 0, "alpha": False}]
    retry = [{"type": "tcp", "interval": 5, "retry_delay": 0.05, "fall": 50, "timeout": 0.2, "warmup": 0,
              "alpha": False}]
    jobs = plan_probes(config(svc("10.0.0.1", 1, checks=steady), svc("10.0.0.2", 2, checks=retry))).jobs

    async def go() -> Scheduler:
        async with scheduler(factory, rng=Highest()) as s:
            s.update(jobs)
            await until(lambda: len(factory.at.get(1, [])) >= 11 and len(factory.at.get(2, [])) >= 11)
            return s

    s = vtime.run(go())
    ten_steady = factory.at[1][10] - factory.at[1][0]
    ten_retries = factory.at[2][10] - factory.at[2][0]
    assert ten_steady == pytest.approx(0.5)  # due times advance by exactly the interval (jittered: 0.55)
    assert ten_retries == pytest.approx(0.5 * 1.0998)  # each retry_delay carries the +10 % draw (0.999 -> +9.98 %)
    assert s.stats.probes >= 22
    assert max(s.stats.lags) == pytest.approx(0.0)


# --- sentinels over real loopback sockets ---


class Backend:
    """A TCP (and minimal HTTP) server on 127.0.0.1 that can drop its idle connections, or die."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        if await reader.read(1024):  # a probe: answer as an HTTP server would; a sentinel sends nothing
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            writer.close()

    def drop_idle(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def die(self) -> None:
        assert self.server is not None
        self.server.close()
        self.drop_idle()
        await self.server.wait_closed()


@pytest.mark.parametrize("kind", ["tcp", "http"])
async def test_sentinel_sees_a_dead_real_long_before_the_next_probe(kind: str) -> None:
    backend = Backend()
    await backend.start()
    check = {"type": kind, "interval": 30, "timeout": 0.3, "warmup": 0, "fall": 3, "retry_delay": 5}
    jobs = plan_probes(config(svc("10.0.0.1", backend.port, checks=[check]))).jobs
    events: list[Transition] = []
    s = Scheduler(on_transition=lambda k, t: events.append(t))
    try:
        s.update(jobs)
        await until(lambda: len(events) == 1 and events[0].up)
        sentinel = s.sentinels()[0]
        await until(lambda: sentinel.connected)
        loop = asyncio.get_running_loop()
        died = loop.time()
        await backend.die()
        await until(lambda: any(not t.up for t in events))
        assert loop.time() - died < 0.2  # three confirming probes, all refused at once; interval is 30 s
        down = next(t for t in events if not t.up)
        assert down.result.kind is Kind.REFUSED
        assert s.stats.sentinel_events == 1
    finally:
        await s.close()


async def test_sentinel_closed_by_a_live_server_costs_one_probe_and_reopens() -> None:
    backend = Backend()
    await backend.start()
    check = {"type": "tcp", "interval": 30, "timeout": 0.3, "warmup": 0}
    jobs = plan_probes(config(svc("10.0.0.1", backend.port, checks=[check]))).jobs
    events: list[Transition] = []
    s = Scheduler(on_transition=lambda k, t: events.append(t), sentinel_backoff=0.01)
    try:
        s.update(jobs)
        await until(lambda: len(events) == 1)
        sentinel = s.sentinels()[0]
        await until(lambda: sentinel.connected)
        probes = s.stats.probes
        backend.drop_idle()  # an idle timeout on the server: not a failure
        await until(lambda: sentinel.opens == 2 and sentinel.connected)
        assert s.stats.probes == probes + 1  # exactly one confirming probe
        assert len(events) == 1  # no flap
    finally:
        await s.close()
        await backend.die()


async def test_cadence_is_kept_when_probes_take_time() -> None:
    starts: list[float] = []

    class Slow(Scripted):
        async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
            starts.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.03)
            return ProbeResult.up("fine")

    jobs = plan_probes(config(svc("10.0.0.1", 1, checks=[{"type": "tcp", **FAST, "interval": 0.05}]))).jobs
    async with scheduler(Slow(), jitter=0) as s:
        s.update(jobs)
        await until(lambda: len(starts) >= 12)
    periods = sorted(b - a for a, b in itertools.pairwise(starts))
    assert periods[len(periods) // 2] < 0.065  # one interval apart, not interval + probe duration (0.08)


def test_a_probe_between_runs_holds_no_task() -> None:
    """At 10,000 reals an idle task, coroutine and future per real were ~7 MB: between runs a probe is only an
    item in the timer heap, and tasks exist for the runs in progress."""
    slow = [{"type": "tcp", "interval": 5, "timeout": 0.2, "warmup": 0}]
    plan = plan_probes(config(svc("10.0.0.1", *range(9000, 9200), checks=slow)))

    async def go() -> tuple[int, int, int]:
        factory = Scripted()
        async with scheduler(factory) as s:
            s.update(plan.jobs, now=True)
            await until(lambda: len(factory.calls) == 200)
            await asyncio.sleep(1.0)  # every probe ran once and waits for its next slot
            idle = len(asyncio.all_tasks())
            await asyncio.sleep(5.0)  # the second round
            return idle, len(factory.calls), min(factory.calls.values())

    idle, probed, runs = vtime.run(go())
    assert probed == 200 and runs == 2
    assert idle <= 3, f"{idle} tasks while every probe waits (the test, the watchdog, no probe)"


# --- direct probes: run on callbacks alone, without a task ---------------------------------------------------


async def test_direct_probes_run_without_tasks_and_follow_results() -> None:
    factory = Direct()
    factory.hold = 0.01
    plan = plan_probes(config(svc("10.0.0.1", 1, 2, checks=[{"type": "tcp", **FAST, "fall": 2}])))
    async with scheduler(factory) as s:
        s.update(plan.jobs)
        await until(lambda: len(s.events) == 2)
        assert all(t.up for _, t in s.events)
        await until(lambda: factory.in_flight > 0)
        assert len(asyncio.all_tasks()) <= 2  # the test and the watchdog: a run in flight holds no task
        factory.ok[2] = False
        await until(lambda: len(s.events) == 3)
        key, t = s.events[2]
        assert key.target.port == 2 and not t.up and t.result.kind is Kind.REFUSED
        assert s.last(key) == t.result
    assert factory.started == sum(factory.calls.values()) >= 6  # every run went direct (none queued)
    assert s.admission.in_flight == 0


async def test_stopping_a_queued_direct_probe_withdraws_it() -> None:
    factory = Direct()
    factory.hang = True
    jobs = plan_probes(config(svc("10.0.0.1", 1, 2))).jobs
    async with scheduler(factory, concurrency=1) as s:
        s.update(jobs, now=True)
        await until(lambda: factory.in_flight == 1 and s.admission.waiting == 1)
        s.update({})
        assert factory.aborted == 1 and factory.in_flight == 0  # the one started; the queued one never starts
        assert s.admission.in_flight == 0 and s.admission.waiting == 0
        await asyncio.sleep(0.05)
        assert factory.started == 1


async def test_stopping_a_direct_probe_in_flight_abandons_it() -> None:
    factory = Direct()
    factory.hang = True
    jobs = plan_probes(config(svc("10.0.0.1", 1, 2))).jobs
    async with scheduler(factory) as s:
        s.update(jobs, now=True)
        await until(lambda: factory.in_flight == 2)
        s.update({})
        assert factory.aborted == 2 and factory.in_flight == 0
        assert s.admission.in_flight == 0 and not s.keys()


async def test_a_poke_during_a_direct_run_probes_again_after_it() -> None:
    factory = Direct()
    factory.hold = 0.05
    slow = [{"type": "tcp", "interval": 60, "timeout": 0.2, "warmup": 0}]
    jobs = plan_probes(config(svc("10.0.0.1", 1, checks=slow))).jobs
    (key,) = jobs
    async with scheduler(factory) as s:
        s.update(jobs, now=True)
        await until(lambda: factory.in_flight == 1)
        s.poke(key)  # the run in flight started before the event: its result cannot confirm it
        await until(lambda: factory.calls.get(1, 0) == 2)
        await asyncio.sleep(0.2)
        assert factory.calls[1] == 2  # one confirmation, not one per poke and result


async def test_a_direct_probe_that_raises_at_start_is_a_failure_not_a_stop() -> None:
    factory = Direct()
    factory.fail_to_start = True
    jobs = plan_probes(config(svc("10.0.0.1", 1, checks=[{"type": "tcp", **FAST, "alpha": False}]))).jobs
    async with scheduler(factory) as s:
        s.update(jobs)
        await until(lambda: len(s.events) == 1)
        assert s.events[0][1].result.kind is Kind.ERROR
        await until(lambda: s.stats.probes >= 3)  # the schedule goes on
        assert s.admission.in_flight <= 1


async def test_stopping_thousands_of_queued_direct_probes_at_once() -> None:
    """A reload that drops thousands of reals while their runs wait for admission: each freed place passes
    over the stopped runs in a loop, not by one call inside the other (that was a RecursionError)."""
    factory = Direct()
    factory.hang = True
    jobs = plan_probes(config(svc("10.0.0.1", *range(1, 3001)))).jobs
    async with scheduler(factory, concurrency=2) as s:
        s.update(jobs, now=True)
        await until(lambda: s.admission.waiting == 2998)
        s.update({})
        assert factory.started == 2 and factory.aborted == 2
        assert s.admission.in_flight == 0 and s.admission.waiting == 0
