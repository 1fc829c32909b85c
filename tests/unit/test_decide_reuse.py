"""A pass handed the decision before it (decide Rule 8, desired Rule 7, plan Rule 9) decides what a pass
without it decides, and skips the services whose inputs did not move."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from ipvsd.config.schema import Config, VirtualService
from ipvsd.core import decide, desired, mirror, plan
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.core.probes import RealHealth, RealKey
from ipvsd.model import Service

SERVICES = 5
REALS = 4


def _service(i: int, rng: random.Random) -> dict[str, Any]:
    """Service `i` in one of the shapes the builder and planner treat differently."""
    svc: dict[str, Any] = {
        "address": f"10.0.0.{i + 1}", "port": 80, "protocol": rng.choice(["tcp", "tcp", "udp"]),
        "scheduler": rng.choice(["rr", "wlc"]),
        "on_failure": rng.choice(["remove", "quiesce"]),
        "drain_timeout": rng.choice([0, 30]),
        "reals": [{"address": f"10.0.{i + 1}.{j + 1}", "port": 80, "weight": rng.randint(1, 3)}
                  for j in sorted(rng.sample(range(REALS + 2), rng.randint(1, REALS)))],
    }
    if rng.random() < 0.7:
        svc["checks"] = [{"type": "tcp", "alpha": rng.random() < 0.5}]
    if rng.random() < 0.3:
        svc["quorum"] = rng.randint(1, 4)
        svc["hysteresis"] = rng.randint(0, 1)
    if rng.random() < 0.3:
        svc["fallback"] = {"address": f"10.0.9.{i + 1}", "inhibit": rng.random() < 0.5}
    if rng.random() < 0.3:  # a pass hands on the table with the ramps' weights; the next build reuses its own
        svc["slow_start"] = rng.choice([10, 60])
    return svc


def _config(services: list[VirtualService | dict[str, Any]], panic: float) -> Config:
    # Models passed in are kept as they are (the same objects), as a reread keeps the services it did not touch.
    return Config.model_validate({"settings": {"limits": {"panic_fraction": panic, "max_delete_fraction": 1.0}},
                                  "services": services})


def _health(config: Config, health: dict[RealKey, RealHealth], rng: random.Random) -> dict[RealKey, RealHealth]:
    """Some checked reals' health moved (most keep theirs)."""
    out = dict(health)
    for vs in config.services:
        skey = vs.service_key()
        for r in vs.reals:
            key = (skey, r.dest_key())
            if not vs.checks_for(r):
                out.pop(key, None)
            elif key not in out or rng.random() < 0.15:
                out[key] = rng.choice([RealHealth(True, True), RealHealth(False, True, "refused"),
                                       RealHealth(True, False), RealHealth(False, False)])
    return out


def _touched(table: list[Service], rng: random.Random) -> list[Service]:
    """What the kernel did besides the plan: a hand edit of one service, connections, or a fresh read."""
    roll = rng.random()
    if roll < 0.15:  # a fresh read: equal entries, new objects
        return [replace(s) for s in table]
    if roll < 0.35 and table:
        i = rng.randrange(len(table))
        s = table[i]
        if s.dests and rng.random() < 0.5:
            d = rng.choice(s.dests)
            dests = tuple(x for x in s.dests if x is not d) if rng.random() < 0.5 else tuple(
                replace(x, attrs=replace(x.attrs, weight=rng.randint(0, 3)), active_conns=rng.randint(0, 2))
                if x is d else x for x in s.dests)
            table = [*table[:i], replace(s, dests=dests), *table[i + 1:]]
        else:
            table = [*table[:i], replace(s, dests=tuple(replace(x, inact_conns=1) for x in s.dests)), *table[i + 1:]]
    return table


def _same(a: decide.Decision, b: decide.Decision) -> None:
    assert a.built.table == b.built.table
    assert a.built.quorum == b.built.quorum
    assert a.built.fail_open == b.built.fail_open
    assert a.built.reals == b.built.reals
    for f in ("ops", "drains", "owned", "drift", "refused", "withheld", "removals", "counted", "cuts"):
        assert getattr(a.plan, f) == getattr(b.plan, f), f
    assert (a.ramps, a.due, a.lost_at) == (b.ramps, b.due, b.lost_at)


@pytest.mark.parametrize("seed", range(12))
def test_a_pass_with_the_decision_before_decides_as_one_without(seed: int) -> None:
    rng = random.Random(seed)
    panic = rng.choice([1.0, 0.5])
    models: list[VirtualService | dict[str, Any]] = [_service(i, rng) for i in range(SERVICES)]
    config = _config(models, panic)
    models = list(config.services)
    health: dict[RealKey, RealHealth] = {}
    table: list[Service] = []
    memory = decide.Memory()
    maintenance: frozenset[MaintenanceKey] = frozenset()
    last: decide.Decision | None = None
    now = 1000.0
    for _ in range(60):
        roll = rng.random()
        if roll < 0.2:  # a reload that touched one service: the others keep their models
            i = rng.randrange(SERVICES)
            models[i] = _service(i, rng) if rng.random() < 0.7 else models[i]
            config = _config(models, panic)
            models = list(config.services)
        elif roll < 0.25:
            maintenance = frozenset({MaintenanceKey(f"10.0.{rng.randint(1, SERVICES)}.1")}) if not maintenance \
                else frozenset()
        health = _health(config, health, rng)
        table = _touched(table, rng)
        now += rng.choice([0.5, 5.0, 40.0])
        full = decide.decide(config, health, table, memory, now=now, maintenance=maintenance)
        again = decide.decide(config, health, table, memory, now=now, maintenance=maintenance, reuse=last)
        _same(again, full)
        last = again
        memory = decide.planned(memory, again)
        if again.plan.refused is None:
            table = mirror.patched(table, again.plan.ops)
            memory = decide.applied(memory, again)
            if again.plan.ops and rng.random() < 0.8:  # as the reconciler does after applying every op
                last = replace(again, plan=plan.settled(again.plan, again.built.table, table))


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"part": 0, "sync": 0}
    part, sync = desired._part, plan._sync_service

    def counted_part(*a: Any, **k: Any) -> Any:
        calls["part"] += 1
        return part(*a, **k)

    def counted_sync(*a: Any, **k: Any) -> Any:
        calls["sync"] += 1
        return sync(*a, **k)

    monkeypatch.setattr(desired, "_part", counted_part)
    monkeypatch.setattr(plan, "_sync_service", counted_sync)
    return calls


def test_only_the_services_whose_inputs_moved_are_built_and_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    config = _config([_service(i, rng) | {"checks": [{"type": "tcp"}], "quorum": 0, "fallback": None}
                      for i in range(SERVICES)], 1.0)
    health = {(vs.service_key(), r.dest_key()): RealHealth(True, True) for vs in config.services for r in vs.reals}
    d = decide.decide(config, health, [], decide.Memory(), now=0.0)
    memory = decide.applied(decide.planned(decide.Memory(), d), d)
    table = mirror.patched([], d.plan.ops)
    calls = _counting(monkeypatch)

    def step(config: Config, health: Mapping[RealKey, RealHealth]) -> decide.Decision:
        nonlocal d, memory, table
        d = decide.decide(config, health, table, memory, now=1.0, reuse=d)
        memory = decide.applied(decide.planned(memory, d), d)
        table = mirror.patched(table, d.plan.ops)
        return d

    step(config, dict(health))  # the table as planned: every service compared once, then quiet
    calls.update(part=0, sync=0)
    assert step(config, dict(health)).plan.ops == ()
    assert calls == {"part": 0, "sync": 0}
    vs = config.services[2]
    down = {**health, (vs.service_key(), vs.reals[0].dest_key()): RealHealth(False, True, "refused")}
    assert len(step(config, down).plan.ops) == 1  # one real's health: its service alone
    assert calls == {"part": 1, "sync": 1}
    # The op gave that service a new kernel entry: compared once more, not built (its reals are settled, so
    # none asked the kernel's weight).
    assert step(config, down).plan.ops == ()
    assert calls == {"part": 1, "sync": 2}
    calls.update(part=0, sync=0)
    vs = config.services[3]
    reals = (vs.reals[0].model_copy(update={"weight": 9}), *vs.reals[1:])
    edited = _config([*config.services[:3], vs.model_copy(update={"reals": reals}), *config.services[4:]], 1.0)
    assert len(step(edited, down).plan.ops) == 1  # an edit of one service: that service alone
    assert calls == {"part": 1, "sync": 1}


def _one(**vs: Any) -> Config:
    return _config([{"address": "10.0.0.1", "port": 80, "checks": [{"type": "tcp"}],
                     "reals": [{"address": f"10.0.1.{j}", "port": 80, "weight": 1} for j in (1, 2, 3)], **vs}], 1.0)


def _healths(config: Config, *up: bool) -> dict[RealKey, RealHealth]:
    vs = config.services[0]
    return {(vs.service_key(), r.dest_key()): RealHealth(u, True) for r, u in zip(vs.reals, up, strict=True)}


def test_a_part_is_made_again_when_the_quorum_before_it_moved() -> None:
    """Hysteresis: the same live weight keeps quorum that was held and does not gain quorum that was not."""
    config = _one(quorum=2, hysteresis=1, fallback={"address": "10.0.9.9"})
    health = _healths(config, True, True, False)  # live weight 2: inside the band [1, 3)
    skey = config.services[0].service_key()
    first = desired.build(config, health, quorum={skey: False})
    assert first.quorum == {skey: False}
    held = desired.build(config, health, quorum={skey: True}, reuse=first)
    assert held.quorum == desired.build(config, health, quorum={skey: True}).quorum == {skey: True}


def test_a_service_in_its_grace_is_made_again_once_the_grace_ends() -> None:
    config = _one(quorum=3)
    health = _healths(config, True, True, False)  # quorum lost
    skey = config.services[0].service_key()
    during = desired.build(config, health, quorum={skey: False}, grace={skey: 10.0}, now=5.0)  # lost before
    assert {dd.want for dd in during.table[skey].dests.values()} == {plan.Want.KEEP, plan.Want.SERVE}
    after = desired.build(config, health, quorum={skey: False}, grace={skey: 10.0}, now=11.0, reuse=during)
    assert after.table == desired.build(config, health, quorum={skey: False}, grace={skey: 10.0}, now=11.0).table
    assert after.table != during.table


def test_the_planner_compares_a_quiet_service_again_when_its_kernel_entry_is_another() -> None:
    """Plan Rule 9 on its own: the same desired entry against a kernel entry a hand edit replaced."""
    config = _one(checks=[])
    built = desired.build(config, {})
    limits = desired.limits(config)
    first = plan.plan(built.table, [], owned=(), limits=limits, now=0.0, drains={})
    table = mirror.patched([], first.ops)
    quiet = plan.plan(built.table, table, owned=first.owned, limits=limits, now=0.0, drains={}, reuse=first)
    assert quiet.ops == () and quiet.quiet
    s = table[0]
    edited = [replace(s, dests=tuple(replace(d, attrs=replace(d.attrs, weight=5)) for d in s.dests))]
    again = plan.plan(built.table, edited, owned=first.owned, limits=limits, now=0.0, drains={}, reuse=quiet)
    assert len(again.ops) == 3
