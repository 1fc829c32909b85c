"""What a probe is: its key, the probe plan of a config, and the rule that turns a real's probe states into its health.

Pure: name resolution comes in as a function, so the plan can say which reals are out because a name did not
resolve (they are down with reason `dns`, never up without checks).

Rules
-----
Rule 1: a probe is identified by `ProbeKey`: its target and its check's parameters without timing, so two
        virtual services that share a real and a check share one probe (keepalived issue #2358, seesaw
        `dedup`). The check's type is a field of the key, not something read back out of its text.
Rule 2: a real whose own name does not resolve is not in the table at all (it has no address to key it by):
        the plan lists it in `unresolved`, with why.
Rule 3: a real that resolves but one of whose checks goes to a name that does not (`connect_ip` given as a
        host name) is down for the pool: that check cannot pass. The plan lists it in `down`, with why.
Rule 4: a real is up when every one of its probes is up (keepalived: no checker failed), and settled when
        every probe has a result; a real without checks is up (and never asks for a health entry).
"""

from __future__ import annotations

import itertools
import json
import operator
import sys
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ipvsd.checks.base import ProbeTarget
from ipvsd.config.schema import Check, CheckTiming, Config, RealServer, VirtualService
from ipvsd.core.health import HealthState, Policy, Start
from ipvsd.model import AF_INET, AF_INET6, DestKey, ServiceKey, is_ip

_TIMING_FIELDS = frozenset(CheckTiming.model_fields)
RealKey = tuple[ServiceKey, DestKey]
Resolve = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class ProbeKey:
    """The identity of a probe: where it goes and what it checks, not how often (Rule 1)."""

    target: ProbeTarget
    type: str  # the check's type ("tcp", "http", ...)
    check: str  # canonical JSON of the check's parameters minus its timing
    # Every probe's result is looked up by its key several times (its health, the live view's statistics):
    # the hash, which goes through the target's fields, is worked out once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.target, self.type, self.check)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, target: ProbeTarget, check: Any) -> ProbeKey:
        return cls(target, str(check.type), check_identity(check))

    def __str__(self) -> str:
        return f"{self.type} {self.target}"


@dataclass(frozen=True, slots=True)
class RealHealth:
    """A real's combined health (Rule 4); `reason` says why it is down when the plan decided it (Rule 3)."""

    up: bool
    settled: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _ServicePart:
    """What one service adds to a plan, with the answers for the names it asked (reusable while they hold)."""

    service: VirtualService  # kept so that its id() is not reused while the part may be looked up by it
    names: tuple[tuple[str, int], ...]  # service_names(service)
    answers: tuple[tuple[str, str | None], ...]  # (host name, its address or None) as `resolve` answered
    jobs: tuple[tuple[ProbeKey, Check], ...]
    reals: dict[RealKey, tuple[ProbeKey, ...]]  # a dict: a plan's update() from it need not hash the keys again
    unresolved: tuple[tuple[tuple[ServiceKey, str], str], ...]
    down: tuple[tuple[RealKey, str], ...]
    judged: tuple[RealKey, ...]  # its reals that health_of() judges (a real key belongs to one service alone)


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """Every distinct probe of a config, which probes decide each real, and the reals names keep out."""

    jobs: dict[ProbeKey, Check]
    reals: dict[RealKey, tuple[ProbeKey, ...]]
    unresolved: dict[tuple[ServiceKey, str], str]  # (service, configured name) -> why (Rule 2)
    down: dict[RealKey, str]  # resolved reals with a check that cannot run -> why (Rule 3)
    decides: dict[ProbeKey, tuple[RealKey, ...]]  # the reals each probe decides (`reals`, inverted)
    parts: dict[int, _ServicePart] = field(default_factory=dict, compare=False, repr=False)  # by id(service)
    # The reals health_of() judges (checked, or down by the plan), in `reals`' order: a configuration of 10,000
    # reals without checks asks for its health several times a pass and need not look through them all.
    # plan_probes gathers them from its parts; a plan made without them works them out (judged_reals()).
    judged: tuple[RealKey, ...] = field(default=(), compare=False, repr=False)
    # How many services' parts plan each probe: a reload patches only the parts it changed into a copy of the
    # plan while no probe it touches is shared with a service it kept (plan_probes).
    shared: dict[ProbeKey, int] = field(default_factory=dict, compare=False, repr=False)
    asking: tuple[int, ...] = field(default=(), compare=False, repr=False)  # positions of parts that asked names

    def __post_init__(self) -> None:
        # any() over the tuples runs in C: a plan with nothing to judge (no checks at all) costs no Python loop
        if not self.judged and (self.down or any(self.reals.values())):
            object.__setattr__(self, "judged", self.judged_reals())

    def judged_reals(self) -> tuple[RealKey, ...]:
        """The reals health_of() judges, worked out from `reals` and `down` (what `judged` holds)."""
        return tuple(r for r, keys in self.reals.items() if keys or r in self.down)

    @classmethod
    def empty(cls) -> ProbePlan:
        return cls({}, {}, {}, {}, {})


def check_identity(check: Any) -> str:
    """Return the canonical text of a check's parameters, timing excluded (interned: reals share one check)."""
    return sys.intern(json.dumps(check.model_dump(mode="json", exclude=_TIMING_FIELDS), sort_keys=True,
                                 separators=(",", ":")))


def policy_of(check: CheckTiming) -> Policy:
    """Return the health policy of a check model (warmup None: spread over one interval)."""
    return Policy(interval=check.interval, timeout=check.timeout, rise=check.rise, fall=check.fall,
                  retry_delay=check.retry_delay, start=Start.DOWN if check.alpha else Start.UP,
                  warmup=check.interval if check.warmup is None else check.warmup)


def target_of(service: VirtualService, real: RealServer, check: Check, *, real_addr: str | None = None) -> ProbeTarget:
    """Return where `check` of `real` goes; only external checks see the virtual service (so others dedup)."""
    addr = check.address or real_addr or real.address
    port = check.port or real.port or service.port
    vip, vport = "", 0
    if check.type == "external" and check.pass_target:
        vip = service.address if service.address is not None else str(service.fwmark)
        vport = service.port
    return ProbeTarget(addr, port, vip, vport, check.bindto, check.mark)


def literal(name: str) -> str | None:
    """The resolver that knows no names: an IP literal is itself, anything else does not resolve."""
    return name if is_ip(name) else None


def is_name(address: str) -> bool:
    """True for a host name, False for an IP literal."""
    return literal(address) is None


def service_names(vs: VirtualService) -> tuple[tuple[str, int], ...]:
    """The host names a service uses (reals, check addresses, its fallback), each with the family it needs."""
    family = AF_INET6 if vs.af == AF_INET6 else AF_INET
    out: dict[str, int] = {}
    for real in vs.reals:
        if not real.is_literal:
            out.setdefault(real.address, family)
        for check in vs.checks_for(real):
            if check.address and is_name(check.address):
                out.setdefault(check.address, family)
    if vs.fallback is not None and is_name(vs.fallback.address):
        out.setdefault(vs.fallback.address, family)
    return tuple(out.items())


def plan_probes(config: Config, *, resolve: Resolve = literal, previous: ProbePlan | None = None) -> ProbePlan:
    """Return the probes of `config`; `resolve` turns a host name into an address, or None (Rules 2, 3), and an
    IP literal into itself. A service of `previous`'s config (the same object: a reload that did not touch it)
    whose names resolve as they did is not planned again: its part of `previous` is reused."""
    if previous is not None and previous.parts:
        patched = _patched(config, resolve, previous)
        if patched is not None:
            return patched
    jobs: dict[ProbeKey, Check] = {}
    shared: dict[ProbeKey, int] = {}
    reals: dict[RealKey, tuple[ProbeKey, ...]] = {}
    unresolved: dict[tuple[ServiceKey, str], str] = {}
    down: dict[RealKey, str] = {}
    parts: dict[int, _ServicePart] = {}
    judged: list[RealKey] = []
    asking: list[int] = []
    before = previous.parts if previous is not None else {}
    for i, service in enumerate(config.services):
        part = before.get(id(service))
        if part is None or part.service is not service or _moved(part, resolve):
            part = _plan_service(service, resolve)
        parts[id(service)] = part
        if part.answers:
            asking.append(i)
        for key, check in part.jobs:
            jobs.setdefault(key, check)
            shared[key] = shared.get(key, 0) + 1
        reals.update(part.reals)
        unresolved.update(part.unresolved)
        for rkey, why in part.down:
            down.setdefault(rkey, why)
        judged += part.judged
    decides: dict[ProbeKey, list[RealKey]] = {}
    for rkey in judged:
        for key in reals[rkey]:
            decides.setdefault(key, []).append(rkey)
    return ProbePlan(jobs, reals, unresolved, down, {k: tuple(v) for k, v in decides.items()}, parts,
                     tuple(judged), shared, tuple(asking))


def _moved(part: _ServicePart, resolve: Resolve) -> bool:
    """True when a name the part asked resolves otherwise now."""
    return bool(part.answers) and any(resolve(n) != a for n, a in part.answers)


PATCH_SHARE = 8  # a reload that changed more than 1/PATCH_SHARE of the services is planned whole


def patch_limit(services: int) -> int:
    """The most of `services` that may have changed for a copy of what was made for them to be patched rather
    than everything made again (PATCH_SHARE): a reload's probe plan, a pass's desired table."""
    return max(PATCH_SHARE, services // PATCH_SHARE)


def patches(config: Config, previous: ProbePlan | None) -> bool:
    """Whether `plan_probes(config, previous=previous)` may patch `previous` rather than plan every service:
    as many services, few of them other objects (compared in C); a few ms at 10,000 reals, where planning
    them all is a hundred times that."""
    if previous is None or not previous.parts or len(config.services) != len(previous.parts):
        return False
    changed: int = sum(map(operator.ne, map(id, config.services), previous.parts))
    return changed <= patch_limit(len(config.services))


def _patched(config: Config, resolve: Resolve, previous: ProbePlan) -> ProbePlan | None:
    """`previous` with the parts of the services a reload changed planned again and put in place of theirs (a
    copy), or None for the whole planning: when services were added or dropped, when many changed, or when a
    probe they plan is shared with another service (which one's check comes first then decides). Equal to the
    whole planning but for the order of the dictionaries' keys: a changed service's come last."""
    services = config.services
    ids = tuple(map(id, services))
    before = previous.parts
    if len(ids) != len(before):
        return None
    # The positions whose service object is another one: compared in C, a Python step only where they differ.
    changed = set(itertools.compress(range(len(ids)), map(operator.ne, ids, before)))
    old_parts = list(before.values())
    plist = list(map(before.get, ids))
    for i in previous.asking:  # kept services that asked for names: do their answers still hold?
        if i not in changed and _moved(old_parts[i], resolve):
            changed.add(i)
    if not changed:
        return previous
    if len(changed) > patch_limit(len(ids)) or len(set(ids)) != len(ids):
        return None
    order = sorted(changed)
    gone = [old_parts[i] for i in order]
    new: list[_ServicePart] = []
    for i in order:
        part = plist[i]
        if part is None or part.service is not services[i] or _moved(part, resolve):
            part = plist[i] = _plan_service(services[i], resolve)
        new.append(part)
    shared = previous.shared.copy()
    for part in gone:
        for key, _ in part.jobs:
            if shared.get(key, 0) != 1:
                return None
            del shared[key]
    for part in new:
        for key, _ in part.jobs:
            if key in shared:
                return None
            shared[key] = 1
    # copy(), not dict(): a patched dict has the holes its deletions left, and dict() then inserts its 10,000
    # entries one by one (0.3 ms natively) where copy() clones the table while holes are under a third.
    jobs, reals = previous.jobs.copy(), previous.reals.copy()
    unresolved, down, decides = previous.unresolved.copy(), previous.down.copy(), previous.decides.copy()
    for part in gone:
        for key, _ in part.jobs:
            del jobs[key]
            decides.pop(key, None)
        for rkey in part.reals:
            del reals[rkey]
        for ukey, _ in part.unresolved:
            del unresolved[ukey]
        for rkey, _ in part.down:
            del down[rkey]
    for part in new:
        jobs.update(part.jobs)
        reals.update(part.reals)
        unresolved.update(part.unresolved)
        down.update(part.down)
        mine: dict[ProbeKey, list[RealKey]] = {}
        for rkey in part.judged:
            for key in part.reals[rkey]:
                mine.setdefault(key, []).append(rkey)
        decides.update((k, tuple(v)) for k, v in mine.items())
    ordered = typing.cast(list[_ServicePart], plist)  # every position that was None is in `changed`: planned
    judged = (tuple(itertools.chain.from_iterable(p.judged for p in ordered))
              if previous.judged or any(p.judged for p in new) else ())
    asking = sorted({*previous.asking} - changed | {i for i, p in zip(order, new, strict=True) if p.answers})
    return ProbePlan(jobs, reals, unresolved, down, decides, dict(zip(ids, ordered, strict=True)), judged,
                     shared, tuple(asking))


def _plan_service(service: VirtualService, resolve: Resolve) -> _ServicePart:
    answers: dict[str, str | None] = {}

    def ask(name: str) -> str | None:
        if literal(name) is not None:
            return name
        if name not in answers:
            answers[name] = resolve(name)
        return answers[name]

    jobs: dict[ProbeKey, Check] = {}
    reals: dict[RealKey, tuple[ProbeKey, ...]] = {}
    unresolved: dict[tuple[ServiceKey, str], str] = {}
    down: dict[RealKey, str] = {}
    skey = service.service_key()
    for real in service.reals:
        addr = real.address if real.is_literal else ask(real.address)
        if addr is None:
            unresolved[(skey, real.address)] = f"dns: {real.address} does not resolve"
            continue
        rkey = (skey, real.dest_key(addr))
        keys = []
        for check in service.checks_for(real):
            target = target_of(service, real, check, real_addr=addr)
            if target.addr != addr:
                connect = ask(target.addr)
                if connect is None:
                    down.setdefault(rkey, f"dns: {target.addr} ({check.type} check) does not resolve")
                    continue
                target = ProbeTarget(connect, target.port, target.vip, target.vport, target.source, target.mark)
            key = ProbeKey.of(target, check)
            jobs.setdefault(key, check)
            keys.append(key)
        reals[rkey] = tuple(keys)
    return _ServicePart(service, service_names(service), tuple(answers.items()), tuple(jobs.items()), reals,
                        tuple(unresolved.items()), tuple(down.items()),
                        tuple(r for r, keys in reals.items() if keys or r in down))


class Judged(Protocol):
    """Anything with a verdict: a probe's `HealthState`, a check's status line."""

    @property
    def up(self) -> bool: ...

    @property
    def settled(self) -> bool: ...


def real_health(states: Iterable[Judged | None]) -> RealHealth:
    """Fold a real's probe states into its health (Rule 4): up iff every probe is up, settled iff all have a result."""
    up = settled = True
    for s in states:
        up = up and s is not None and s.up
        settled = settled and s is not None and s.settled
    return RealHealth(up=up, settled=settled)


def health_of(plan: ProbePlan, states: Callable[[ProbeKey], HealthState | None]) -> dict[RealKey, RealHealth]:
    """Return the health of every checked real of `plan` (reals without checks need none: they are up)."""
    out: dict[RealKey, RealHealth] = {}
    for real in plan.judged:
        if real in plan.down:
            out[real] = RealHealth(up=False, settled=True, reason=plan.down[real])
        else:
            out[real] = real_health(states(k) for k in plan.reals[real])
    return out
