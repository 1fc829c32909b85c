"""The pure desired-table builder: config + per-real health + maintenance -> what the planner should reach.

Rules
-----
Rule 1: each configured real is in one state, decided in this order:
        MAINT   it matches a maintenance entry                -> Want.DRAIN (weight 0, deleted once idle)
        UP      it has no checks, or its health is settled up -> serves at its configured weight
        DOWN    settled down, or not settled yet with `alpha` -> on_failure "quiesce": weight 0;
                and not serving in the kernel                     "remove": Want.ABSENT
        UNKNOWN not settled (or no health yet) without alpha, -> Want.KEEP: the kernel's entry stays as it is
                or with alpha but serving in the kernel           and an absent one is not put in
        `alpha` keeps a never-checked real out; it does not take out one the kernel already serves with, or a
        restart (whose checks have not run yet) would empty the table it adopts.
        A real is down for the pool if any of its checks says so ("all must pass"); folding several probes
        into one `RealHealth` per (service, dest) is `ipvsd.core.probes`'s rule.
Rule 2: fail open (panic). When more than `limits.panic_fraction` of the non-maintenance reals are settled
        DOWN, every DOWN real serves as if UP (envoy's panic threshold). Unsettled reals never count as failed,
        or `alpha` at start would open everything.
Rule 3: quorum. The live weight is the configured weight of UP reals plus the kernel weight of UNKNOWN reals
        (so a restart that adopts a serving table keeps quorum). As keepalived: quorum is gained when live
        weight >= quorum + hysteresis and lost when it is < quorum - hysteresis; with no previous state, it
        holds iff live weight >= quorum + hysteresis.
Rule 4: fallback (sorry server). Without quorum and with a fallback configured, the fallback serves and the
        UP reals leave as failed ones do (keepalived removes the alive reals while the sorry server is in).
        With quorum it is absent (so it drains out), or at weight 0 when `inhibit` is set.
Rule 5: withdraw before you drain (`ipvsd.core.announce`). A service without quorum whose `grace` has not ended
        at `now` keeps its reals as the kernel has them (Want.KEEP for those Rules 1 and 4 would take out): the
        routers are moving its flows to other directors meanwhile.
Rule 6: reals are keyed by their resolved address: an IP literal as is, a hostname through `resolved`; a
        hostname with no resolution is left out of the table (the caller keeps the last good answer). So is a
        fallback whose name does not resolve.
Rule 7: reuse. A build may be handed the previous one (`reuse`). A service whose inputs are the ones its part
        of that build was made from gets that part back, the same objects: the same model object (a reload
        keeps the models of the services it did not touch), the health of its checked reals, its quorum
        before (when it has a hysteresis: without one, quorum has no memory), the same maintenance, resolved
        names and panic fraction, and the same kernel entry object (the mirror keeps those no op touched)
        when one of its reals asked the kernel's weight (Rule 1's UNKNOWN); a service in its grace (Rule 5)
        is made again unless it had quorum. The result is the build without `reuse`
        (tests/unit/test_decide_reuse.py); the planner skips a service whose desired entry and kernel entry
        are the objects it last found nothing to do for. A part that depends on none of these inputs but its
        model (no checked real, no real that asked the kernel, no hysteresis, quorum held) is matched by
        identity alone, in C; and when few parts differ from the previous build's, position by position, its
        table is copied and only they are put in (at 1,000 services, a Python step each was most of a
        reload's build in the lab).
"""

from __future__ import annotations

import itertools
import operator
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from ipvsd.config.schema import Config, RealServer, VirtualService
from ipvsd.core import plan
from ipvsd.core.maintenance import MaintenanceKey, in_maintenance
from ipvsd.core.plan import DesiredDest, DesiredService, Want
from ipvsd.core.probes import RealHealth, literal, patch_limit
from ipvsd.model import DestKey, Service, ServiceKey


class RealState(Enum):
    """Where a real stands for the desired table (Rule 1)."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"
    MAINT = "maint"


@dataclass(frozen=True)
class Built:
    """The desired table plus what the builder decided along the way, for the shell to keep and report."""

    table: dict[ServiceKey, DesiredService]
    quorum: dict[ServiceKey, bool]  # pass back as `quorum` next time (hysteresis)
    fail_open: frozenset[ServiceKey]
    # Rule 7: each service's part with the inputs it was made from, by id() of its model (the part holds the
    # model, so the id is not reused while the part may be looked up by it), and the inputs common to all.
    parts: Mapping[int, _Part] = field(default_factory=dict, compare=False, repr=False)
    common: _Common | None = field(default=None, compare=False, repr=False)
    # The table as the build made it: a pass may hand on a changed copy as `table` (slow start's weights),
    # and the next build patches this one (Rule 7).
    made: dict[ServiceKey, DesiredService] | None = field(default=None, compare=False, repr=False)

    @property
    def reals(self) -> dict[tuple[ServiceKey, DestKey], RealState]:
        """Each real's state (Rule 1), by key: made when asked (a pass does not need it)."""
        return {(p.key, k): st for p in self.parts.values() for k, st in p.reals.items()}


@dataclass(frozen=True, slots=True)
class _Common:
    """The inputs every service's part depends on (Rule 7)."""

    maintenance: frozenset[MaintenanceKey]
    resolved: Mapping[str, str]
    panic_fraction: float


_UNASKED = object()  # a part no real of which needed the kernel's entry: any entry gives the same part


@dataclass(frozen=True, slots=True)
class _Part:
    """One service's share of a build and the inputs it came from (Rule 7)."""

    service: VirtualService
    kernel: object  # the kernel's entry it was built against (by identity), or _UNASKED
    checked: tuple[tuple[ServiceKey, DestKey], ...]  # its checked reals' keys
    health: tuple[RealHealth | None, ...]  # their health then
    before: bool | None  # its quorum at the pass before
    key: ServiceKey
    desired: DesiredService
    quorum: bool
    opened: bool
    reals: dict[DestKey, RealState]
    free: bool  # serves again whenever its model does: no input but the model it depends on (Rule 7)


class _Absent:
    """Stands for a service the reused build has no part for, where the identity checks look at a part."""

    __slots__ = ()
    service = None
    free = False


_ABSENT = _Absent()
_SERVICE, _FREE = operator.attrgetter("service"), operator.attrgetter("free")
_KEY, _DESIRED, _QUORUM, _OPENED = (operator.attrgetter(n) for n in ("key", "desired", "quorum", "opened"))


def build(
    config: Config,
    health: Mapping[tuple[ServiceKey, DestKey], RealHealth],
    *,
    maintenance: Iterable[MaintenanceKey] = (),
    observed: Iterable[Service] = (),
    quorum: Mapping[ServiceKey, bool] | None = None,
    resolved: Mapping[str, str] | None = None,
    grace: Mapping[ServiceKey, float] | None = None,
    now: float = 0.0,
    reuse: Built | None = None,
) -> Built:
    """Return the desired table for `config` given each real's health (see Rules above); `reuse`: the previous
    build, whose parts serve again where their inputs hold (Rule 7)."""
    common = _Common(frozenset(maintenance), dict(resolved or {}), config.settings.limits.panic_fraction)
    old = reuse.parts if reuse is not None and reuse.common == common else {}
    kernel: dict[ServiceKey, Service] | None = None  # made when a part asks for it: most passes never do

    def kernel_map() -> dict[ServiceKey, Service]:
        nonlocal kernel
        if kernel is None:
            kernel = {s.key: s for s in observed}
        return kernel

    services = config.services
    ids = list(map(id, services))
    found: list[_Part | _Absent] = list(map(old.get, ids, itertools.repeat(_ABSENT)))
    # Rule 7: a free part whose model is the same object serves again, found and compared in C; the others
    # are looked at one by one, each input looked up only when the part depends on it.
    quick = map(operator.and_, map(operator.is_, map(_SERVICE, found), services), map(_FREE, found))
    for i in itertools.compress(range(len(ids)), map(operator.not_, quick)):
        vs, part = services[i], found[i]
        if not isinstance(part, _Part) or not (
                part.service is vs
                and (part.kernel is _UNASKED or part.kernel is kernel_map().get(part.key))
                and (not vs.hysteresis or part.before == (None if quorum is None else quorum.get(part.key)))
                and (part.quorum or not grace or part.key not in grace)
                and (not part.checked or tuple(map(health.get, part.checked)) == part.health)):
            part = _part(vs, kernel_map(), health, common, quorum, grace, now)
        found[i] = part
    chosen = typing.cast(list[_Part], found)
    table, quorums, opened = _patched(reuse, old, chosen) if reuse is not None and old else (None, None, None)
    if table is None or quorums is None or opened is None:
        table = dict(zip(map(_KEY, chosen), map(_DESIRED, chosen), strict=True))
        quorums = dict(zip(map(_KEY, chosen), map(_QUORUM, chosen), strict=True))
        opened = frozenset(itertools.compress(map(_KEY, chosen), map(_OPENED, chosen)))
    return Built(table=table, quorum=quorums, fail_open=opened, parts=dict(zip(ids, chosen, strict=True)),
                 common=common, made=table)


def _patched(reuse: Built, old: Mapping[int, _Part], chosen: list[_Part]
             ) -> tuple[dict[ServiceKey, DesiredService] | None, dict[ServiceKey, bool] | None,
                        frozenset[ServiceKey] | None]:
    """`reuse`'s table, quorums and open services with the parts that differ from its own at the same position
    put in place of theirs (Rule 7), or Nones when the services are not as many, or many parts differ."""
    before = list(old.values())
    if reuse.made is None or len(before) != len(chosen):
        return None, None, None
    moved = list(itertools.compress(range(len(chosen)), map(operator.is_not, chosen, before)))
    if len(moved) > patch_limit(len(chosen)):
        return None, None, None
    # copy(), not dict(): a patched dict has the holes its deletions left, which dict() walks entry by entry
    table, quorums = reuse.made.copy(), reuse.quorum.copy()
    opened = set(reuse.fail_open)
    for i in moved:  # every key out first: an edit may give one service's key to another
        key = before[i].key
        table.pop(key, None)
        quorums.pop(key, None)
        opened.discard(key)
    for i in moved:
        p = chosen[i]
        table[p.key], quorums[p.key] = p.desired, p.quorum
        if p.opened:
            opened.add(p.key)
    return table, quorums, frozenset(opened)


def _part(vs: VirtualService, kernel: Mapping[ServiceKey, Service],
          health: Mapping[tuple[ServiceKey, DestKey], RealHealth], common: _Common,
          quorum: Mapping[ServiceKey, bool] | None, grace: Mapping[ServiceKey, float] | None, now: float) -> _Part:
    """Build one service's part (Rules 1-6)."""
    skey = vs.service_key()
    have = kernel.get(skey)
    in_kernel = _Weights(have)
    resolved = common.resolved
    states = _real_states(vs, skey, health, common.maintenance, resolved, in_kernel)
    checked = tuple((skey, k) for k, (r, _) in states.items() if vs.checks_for(r))
    live = [s for s in states.values() if s[1] is not RealState.MAINT]
    failed = sum(1 for s in live if s[1] is RealState.DOWN)
    opened = bool(live) and failed / len(live) > common.panic_fraction
    if opened:
        states = {k: (r, RealState.UP if st is RealState.DOWN else st) for k, (r, st) in states.items()}
    weight = sum(r.weight if st is RealState.UP else in_kernel.get(k)
                 for k, (r, st) in states.items() if st in (RealState.UP, RealState.UNKNOWN))
    before = None if quorum is None else quorum.get(skey)
    has_quorum = _quorum(vs, weight, before)
    held = not has_quorum and grace is not None and now < grace.get(skey, now)
    desired = DesiredService(vs.service_attrs(), _dests(vs, states, has_quorum, resolved, held), vs.drain_timeout)
    asked = have if in_kernel.asked else _UNASKED  # after a fresh read or an op, an unasked part still holds
    free = asked is _UNASKED and not checked and not vs.hysteresis and has_quorum
    return _Part(vs, asked, checked, tuple(map(health.get, checked)), before, skey, desired, has_quorum, opened,
                 {k: st for k, (_, st) in states.items()}, free)


def limits(config: Config, *, force: bool = False) -> plan.PlanLimits:
    """Return the planner's limits from the config's settings."""
    s = config.settings
    return plan.PlanLimits(max_delete_share=s.limits.max_delete_fraction, max_deletes=s.limits.max_deletes,
                       drain_timeout=s.drain_timeout, force=force)


class _Weights:
    """A service's dests' weights in the kernel, by key, made on first use: most passes never ask (a real
    without checks, or with a settled health, needs neither its kernel entry nor its weight)."""

    __slots__ = ("_service", "_weights")

    def __init__(self, service: Service | None) -> None:
        self._service = service
        self._weights: dict[DestKey, int] | None = None

    @property
    def asked(self) -> bool:
        """True once a weight was asked for."""
        return self._weights is not None

    def get(self, key: DestKey) -> int:
        if self._weights is None:
            self._weights = {} if self._service is None else {d.key: d.attrs.weight for d in self._service.dests}
        return self._weights.get(key, 0)


def _real_states(vs: VirtualService, skey: ServiceKey, health: Mapping[tuple[ServiceKey, DestKey], RealHealth],
                 maint: frozenset[MaintenanceKey], resolved: Mapping[str, str], in_kernel: _Weights,
                 ) -> dict[DestKey, tuple[RealServer, RealState]]:
    out: dict[DestKey, tuple[RealServer, RealState]] = {}
    for real in vs.reals:
        addr = real.address if real.is_literal else resolved.get(real.address)
        if addr is None:
            continue
        dkey = real.dest_key(addr)
        out[dkey] = (real, _state(vs, real, skey, dkey, health, maint, in_kernel))
    return out


def _state(vs: VirtualService, real: RealServer, skey: ServiceKey, dkey: DestKey,
           health: Mapping[tuple[ServiceKey, DestKey], RealHealth], maint: frozenset[MaintenanceKey],
           in_kernel: _Weights) -> RealState:
    if maint and in_maintenance(maint, skey, dkey):
        return RealState.MAINT
    checks = vs.checks_for(real)
    if not checks:
        return RealState.UP
    h = health.get((skey, dkey))
    if h is not None and h.settled:
        return RealState.UP if h.up else RealState.DOWN
    serving = in_kernel.get(dkey) > 0
    return RealState.DOWN if not serving and any(c.alpha for c in checks) else RealState.UNKNOWN


def _address(addr: str, resolved: Mapping[str, str]) -> str | None:
    return literal(addr) or resolved.get(addr)


def _quorum(vs: VirtualService, weight: int, before: bool | None) -> bool:
    if before:
        return weight >= vs.quorum - vs.hysteresis
    return weight >= vs.quorum + vs.hysteresis


def _dests(vs: VirtualService, states: Mapping[DestKey, tuple[RealServer, RealState]],
           has_quorum: bool, resolved: Mapping[str, str], held: bool = False) -> dict[DestKey, DesiredDest]:
    sorry = None
    if vs.fallback is not None and (address := _address(vs.fallback.address, resolved)) is not None:
        sorry = vs.fallback_dest(address)
    use_sorry = sorry is not None and not has_quorum and not held
    out: dict[DestKey, DesiredDest] = {}
    for dkey, (real, st) in states.items():
        if st is RealState.MAINT:
            out[dkey] = DesiredDest(real.dest_attrs(0), Want.DRAIN)
        elif st is RealState.UNKNOWN or (held and st is RealState.DOWN):
            out[dkey] = DesiredDest(real.dest_attrs(), Want.KEEP)
        elif st is RealState.UP and not use_sorry:
            out[dkey] = DesiredDest(real.dest_attrs())
        elif vs.on_failure_for(real) == "quiesce":
            out[dkey] = DesiredDest(real.dest_attrs(0))
        else:
            out[dkey] = DesiredDest(real.dest_attrs(), Want.ABSENT)
    if sorry is not None and vs.fallback is not None:
        key, attrs = sorry
        if use_sorry:
            out[key] = DesiredDest(attrs)
        elif vs.fallback.inhibit:
            out[key] = DesiredDest(replace(attrs, weight=0))
    return out

