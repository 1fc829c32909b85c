"""The pure planner: desired table + observed kernel table + ownership + drains -> ordered kernel operations.

Theory of operation
-------------------
Every reconcile pass re-reads the kernel and calls `plan()` with the full desired table. The plan is the
difference, as `model` ops in a fixed order. Nothing here reads the clock or touches the kernel; time arrives
as `now`, and the only memory between passes (ownership, drain start times, the last applied table) comes in
as arguments and goes out in the returned `Plan` for the shell to persist.

`now` and drain start times are wall-clock seconds (`time.time()`), not `loop.time()`: drains are written to
the state file and must keep meaning across a restart.

What a desired dest asks for (`Want`):

    want     in kernel                         not in kernel
    -------  --------------------------------  -------------
    SERVE    EditDest if attrs differ           AddDest
    KEEP     untouched (adopt, first check      nothing (an unchecked real is
             not done yet)                      never put in)
    DRAIN    weight 0 now; DelDest once          nothing
             active+inactive == 0 or the
             drain deadline passed; UDP: DelDest
             at once (kube-proxy)
    ABSENT   DelDest now                        nothing

A dest of an owned service that the desired table does not mention is DRAIN: it was removed from the config
or added by hand, and either way its clients deserve a graceful exit.

Rules
-----
Rule 1: only services in `owned | desired.keys()` are ever edited or deleted, nor their dests. Every other
        service in the kernel is foreign (made by hand or another tool) and never appears in an op. No flush.
Rule 2: a service whose attrs differ is edited (EditService), a dest whose attrs differ is edited (EditDest):
        never delete and re-add, which would cut every connection.
Rule 3: an owned service that is no longer desired is retired: its dests drain as DRAIN dests do; once none
        would be left, the service is deleted (one DelService, no DelDest before it). UDP retires at once.
Rule 4: a drain starts at `drains[(service, dest)]` if known, else `now`; its deadline is the desired
        service's `drain_timeout`, else `limits.drain_timeout`. `Plan.drains` holds every drain still
        running after this plan, and only those.
Rule 5: ops come in phases: service adds, service edits, dest adds, dest edits that keep or raise weight,
        dest edits that lower it, dest deletes, service deletes; inside a phase, by (service, dest) key.
        Capacity goes in before capacity goes out, and a service exists before its dests.
Rule 6: blast-radius guard. A *removal* takes a serving dest (weight > 0) out: deleted or set to weight 0.
        If removals > `limits.guard_floor` and removals > `limits.max_delete_share` x (dests of owned services
        in the kernel), or removals > `limits.max_deletes`, the plan is refused, whole: no ops, drains
        unchanged, `refused` says why, `withheld` lists the ops. `limits.force` lifts the guard.
Rule 7: drift. `previous` is the desired table of the last pass whose plan was applied without error (None
        after a start). An op is *drift repair* when its key's intent is the same in `previous` and `desired`:
        the config and health did not move, so the kernel did (ipvsadm -d/-e/-D by hand, another tool, a lost
        entry). An op on a key whose intent changed is a *change*. For DRAIN the steady state is "absent or
        weight 0", so a drain delete of a weight-0 dest is neither: it is time passing. DelService is never
        drift. `Plan.drift` is the subset of `ops` that are drift repairs.
Rule 8: an empty plan when nothing differs; applying a plan and planning again (same `now`, `Plan.drains`)
        gives an empty plan.
Rule 9: quiet services. A service both desired and in the kernel whose comparison gave nothing (no step, no
        drain) depended on its desired entry and its kernel entry alone; `Plan.quiet` keeps the two, and a
        plan handed that one (`reuse`) skips the service while both are the same objects (the desired
        builder hands back the same objects for a service whose inputs did not move, the mirror the same
        entry for a service no op touched). Once a plan was applied whole, `settled` adds each service it
        left without a drain, against its entry after the ops (Rule 8).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from ipvsd.model import (
    USER_FLAGS,
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Fwd,
    Op,
    Proto,
    Service,
    ServiceAttrs,
    ServiceKey,
    SvcFlag,
)

_KEY = operator.attrgetter("key")  # a kernel service's key
_WANT, _HAVE = operator.itemgetter(0), operator.itemgetter(1)  # of a quiet service's (desired, kernel) pair

DrainKey = tuple[ServiceKey, DestKey]


class Want(Enum):
    """What the desired table asks of one dest (see the table in the module docstring)."""

    SERVE = "serve"
    KEEP = "keep"
    DRAIN = "drain"
    ABSENT = "absent"


@dataclass(frozen=True)
class DesiredDest:
    """A dest as the config and health want it. `attrs` are used for SERVE only (and kept for reporting)."""

    attrs: DestAttrs
    want: Want = Want.SERVE


@dataclass(frozen=True)
class DesiredService:
    """A service as the config wants it; `drain_timeout` overrides `PlanLimits.drain_timeout` for its dests."""

    attrs: ServiceAttrs
    dests: Mapping[DestKey, DesiredDest] = field(default_factory=dict)
    drain_timeout: float | None = None


Desired = Mapping[ServiceKey, DesiredService]


@dataclass(frozen=True)
class PlanLimits:
    """Safety limits of one plan (Rule 4, Rule 6)."""

    max_delete_share: float = 0.5
    guard_floor: int = 2  # a plan removing at most this many serving dests is never refused for its share
    max_deletes: int | None = None  # absolute cap on removals in one plan; None: none
    drain_timeout: float = 300.0
    force: bool = False


@dataclass(frozen=True)
class Plan:
    """The ops to apply in order, which of them repair drift, and the state the shell must persist first."""

    ops: tuple[Op, ...]
    drains: Mapping[DrainKey, float]
    owned: frozenset[ServiceKey]
    drift: tuple[Op, ...] = ()
    refused: str | None = None
    withheld: tuple[Op, ...] = ()
    removals: int = 0
    counted: bool = False  # a drain decision read connection counters: plan on a freshly read table
    # Indices into `ops` where a phase (Rule 5) begins, the first excepted: the shell sends ops in batches
    # and cuts them there, so an op that fails stops the phases after it, as when ops went one by one.
    cuts: tuple[int, ...] = ()
    # Rule 9: the services compared without a step or a drain, with the desired and kernel entries compared.
    quiet: Mapping[ServiceKey, tuple[DesiredService, Service]] = field(default_factory=dict, compare=False,
                                                                       repr=False)

    @property
    def empty(self) -> bool:
        """Return True when there is nothing to do and nothing was refused."""
        return not self.ops and self.refused is None


# --- phases (Rule 5) ---------------------------------------------------------------------------------------

_ADD_SERVICE, _EDIT_SERVICE, _ADD_DEST, _RAISE_DEST, _LOWER_DEST, _DEL_DEST, _DEL_SERVICE = range(7)


@dataclass(frozen=True)
class _Step:
    phase: int
    op: Op
    drift: bool = False
    removals: int = 0  # serving dests this op takes out (Rule 6)

    def order(self) -> tuple[int, tuple[int, int, str, int, int], tuple[int, str, int] | tuple[()]]:
        """(phase, service key, dest key) as the keys' own order has them (dataclass order: their fields in
        turn), in plain tuples: sorting 11,000 steps compares them in C, not through the keys' __lt__."""
        op = self.op
        if isinstance(op, AddService | EditService | DelService):
            k = op.key
            return (self.phase, (k.af, k.protocol, k.addr, k.port, k.fwmark), ())
        k, d = op.service, op.key
        return (self.phase, (k.af, k.protocol, k.addr, k.port, k.fwmark), (d.af, d.addr, d.port))


# --- comparisons that ignore what the kernel does not keep meaningfully ---------------------------------------


def same_service_attrs(a: ServiceAttrs, b: ServiceAttrs) -> bool:
    """Return True when two service attribute sets configure the same behaviour.

    Timeout, netmask and persistence engine only matter for a persistent service; comparing them otherwise
    would make an adopted `ipvsadm -A` service look edited forever.
    """
    if a.scheduler != b.scheduler or (a.flags & USER_FLAGS) != (b.flags & USER_FLAGS):
        return False
    if not a.flags & SvcFlag.PERSISTENT:
        return True
    return (a.timeout, a.netmask, a.pe_name) == (b.timeout, b.netmask, b.pe_name)


def same_dest_attrs(a: DestAttrs, b: DestAttrs) -> bool:
    """Return True when two dest attribute sets configure the same behaviour (tunnel fields only for TUNNEL)."""
    if (a.fwd, a.weight, a.u_thresh, a.l_thresh) != (b.fwd, b.weight, b.u_thresh, b.l_thresh):
        return False
    if a.fwd != Fwd.TUNNEL:
        return True
    return (a.tun_type, a.tun_port, a.tun_flags) == (b.tun_type, b.tun_port, b.tun_flags)


# --- intents, for drift (Rule 7) ------------------------------------------------------------------------------


def _dest_intent(table: Desired, skey: ServiceKey, dkey: DestKey) -> DesiredDest | Want:
    svc = table.get(skey)
    dd = svc.dests.get(dkey) if svc is not None else None
    if dd is None or dd.want is Want.DRAIN:
        return Want.DRAIN  # implicit and explicit drain mean the same thing
    return dd


def _same_intent(a: DesiredDest | Want, b: DesiredDest | Want) -> bool:
    if isinstance(a, Want) or isinstance(b, Want):
        return a == b
    return a.want == b.want and (a.want is not Want.SERVE or same_dest_attrs(a.attrs, b.attrs))


# --- the planner ----------------------------------------------------------------------------------------------


@dataclass
class _Pass:
    """Inputs of one plan() call plus what it accumulates; private to this module."""

    desired: Desired
    previous: Desired | None
    drains: Mapping[DrainKey, float]
    limits: PlanLimits
    now: float
    steps: list[_Step] = field(default_factory=list)
    new_drains: dict[DrainKey, float] = field(default_factory=dict)
    counted: bool = False

    def dest_unchanged(self, skey: ServiceKey, dkey: DestKey) -> bool:
        if self.previous is None:
            return False
        return _same_intent(_dest_intent(self.previous, skey, dkey), _dest_intent(self.desired, skey, dkey))

    def service_unchanged(self, skey: ServiceKey) -> bool:
        if self.previous is None:
            return False
        before, after = self.previous.get(skey), self.desired.get(skey)
        if before is None or after is None:
            return before is after
        return same_service_attrs(before.attrs, after.attrs)

    def drain_timeout(self, skey: ServiceKey) -> float:
        svc = self.desired.get(skey)
        if svc is not None and svc.drain_timeout is not None:
            return svc.drain_timeout
        return self.limits.drain_timeout


def plan(
    desired: Desired,
    observed: Iterable[Service],
    *,
    owned: Iterable[ServiceKey],
    limits: PlanLimits,
    now: float,
    drains: Mapping[DrainKey, float],
    previous: Desired | None = None,
    reuse: Plan | None = None,
) -> Plan:
    """Return the ordered ops that make the owned part of `observed` match `desired` (see Rules above);
    `reuse`: the previous plan, whose quiet services are skipped while they hold (Rule 9)."""
    table = list(observed)
    kernel = dict(zip(map(_KEY, table), table, strict=True))
    wanted = frozenset(desired)
    # The desired table's key objects first: a set keeps the first of equal keys, and the lookups below (and
    # the next plan's, through the owned set and the quiet services) then find each key by identity.
    mine = wanted | frozenset(owned)
    p = _Pass(desired=desired, previous=previous, drains=drains, limits=limits, now=now)
    quiet: dict[ServiceKey, tuple[DesiredService, Service]] = {}
    if reuse is not None and reuse.quiet:
        # Rule 9, looked up and compared in C: the services whose desired and kernel entries are still the
        # objects last found quiet stay quiet (at 10,000 reals, a Python step each was most of a reload's plan).
        was = reuse.quiet
        keys, pairs = list(was), list(was.values())
        held = map(operator.and_, map(operator.is_, map(desired.get, keys), map(_WANT, pairs)),
                   map(operator.is_, map(kernel.get, keys), map(_HAVE, pairs)))
        quiet = dict(itertools.compress(zip(keys, pairs, strict=True), held))
    for skey in mine.difference(quiet) if quiet else mine:  # the steps are sorted at the end
        want, have = desired.get(skey), kernel.get(skey)
        if want is None and have is not None:
            _retire_service(p, have)
        elif want is not None and have is None:
            _create_service(p, skey, want)
        elif want is not None and have is not None:
            made, drained = len(p.steps), len(p.new_drains)
            _sync_service(p, want, have)
            if len(p.steps) == made and len(p.new_drains) == drained:
                quiet[skey] = (want, have)

    steps = sorted(p.steps, key=_Step.order)
    ops = tuple(s.op for s in steps)
    # A service is forgotten only once the kernel shows it gone, so a failed delete is retried next pass.
    # Owning no more than what is desired (every pass but those that drop services), it is all still owned.
    still_owned = mine if len(mine) == len(wanted) else wanted | (mine & kernel.keys())
    removals = sum(s.removals for s in steps)
    reason = None
    if removals and not limits.force:  # nothing taken out: nothing to guard, and no dests to count
        reason = _guard(limits, removals, lambda: sum(len(kernel[k].dests) for k in mine if k in kernel))
    if reason is not None:
        return Plan(ops=(), drains=dict(drains), owned=still_owned, refused=reason, withheld=ops,
                    removals=removals, counted=p.counted, quiet=quiet)
    cuts = tuple(i for i in range(1, len(steps)) if steps[i].phase != steps[i - 1].phase)
    return Plan(ops=ops, drains=p.new_drains, owned=still_owned, drift=tuple(s.op for s in steps if s.drift),
                removals=removals, counted=p.counted, cuts=cuts, quiet=quiet)


def settled(p: Plan, desired: Desired, table: Iterable[Service]) -> Plan:
    """`p` once every one of its ops was applied, `table` the kernel after them: each desired service with no
    drain under way is quiet against its entry in `table` (Rule 8, service by service), so the next plan need
    not compare it again (Rule 9): after a start's programming, every service."""
    draining = {skey for skey, _ in p.drains}
    quiet = dict(p.quiet)
    for s in table:
        want = desired.get(s.key)
        if want is not None and s.key not in draining:
            quiet[s.key] = (want, s)
    return replace(p, quiet=quiet)


def _guard(limits: PlanLimits, removals: int, owned_dests: Callable[[], int]) -> str | None:
    """Return why a plan with these removals is refused (Rule 6), or None. The owned dests are counted only
    when the rule needs them: an edit that takes one real out of 10,000 does not."""
    if limits.max_deletes is not None and removals > limits.max_deletes:
        return (f"plan takes {removals} of {owned_dests()} owned dests out of service, over the cap of "
                f"{limits.max_deletes}; refused (force to apply)")
    if removals > limits.guard_floor and removals > limits.max_delete_share * (total := owned_dests()):
        return (f"plan takes {removals} of {total} owned dests out of service, over the limit of "
                f"{limits.max_delete_share:.0%}; refused (force to apply)")
    return None


def _create_service(p: _Pass, skey: ServiceKey, want: DesiredService) -> None:
    p.steps.append(_Step(_ADD_SERVICE, AddService(skey, want.attrs), drift=p.service_unchanged(skey)))
    for dkey, dd in want.dests.items():
        if dd.want is Want.SERVE:
            p.steps.append(_Step(_ADD_DEST, AddDest(skey, dkey, dd.attrs), drift=p.dest_unchanged(skey, dkey)))


def _sync_service(p: _Pass, want: DesiredService, have: Service) -> None:
    skey = have.key
    if not same_service_attrs(want.attrs, have.attrs):
        p.steps.append(_Step(_EDIT_SERVICE, EditService(skey, want.attrs), drift=p.service_unchanged(skey)))
    in_kernel = {d.key: d for d in have.dests}
    # Unsorted: the steps are sorted at the end. Drift is worked out only for a dest that gets a step, which
    # at 10,000 reals was half of a pass that changes nothing.
    for dkey in want.dests.keys() | in_kernel.keys():
        dd = want.dests.get(dkey)
        hd = in_kernel.get(dkey)
        w = Want.DRAIN if dd is None else dd.want
        if w is Want.SERVE and dd is not None:
            if hd is None:
                p.steps.append(_Step(_ADD_DEST, AddDest(skey, dkey, dd.attrs), drift=p.dest_unchanged(skey, dkey)))
            elif not same_dest_attrs(dd.attrs, hd.attrs):
                lower = dd.attrs.weight < hd.attrs.weight
                p.steps.append(_Step(_LOWER_DEST if lower else _RAISE_DEST, EditDest(skey, dkey, dd.attrs),
                                     drift=p.dest_unchanged(skey, dkey),
                                     removals=int(hd.attrs.weight > 0 and dd.attrs.weight == 0)))
        elif w is Want.ABSENT and hd is not None:
            p.steps.append(_Step(_DEL_DEST, DelDest(skey, dkey), drift=p.dest_unchanged(skey, dkey),
                                 removals=int(hd.attrs.weight > 0)))
        elif w is Want.DRAIN and hd is not None:
            _drain_dest(p, skey, hd, drift=p.dest_unchanged(skey, dkey))


def _drain_dest(p: _Pass, skey: ServiceKey, hd: Dest, *, drift: bool) -> bool:
    """Plan one step of a dest's drain; return True when it will be gone after this plan."""
    serving = hd.attrs.weight > 0
    # Drift only if the kernel left the drain's steady state (absent or weight 0): someone raised it by hand.
    drift = drift and serving
    start = p.drains.get((skey, hd.key), p.now)
    expired = p.now - start >= p.drain_timeout(skey)
    # Only a drain that waits for connections to end reads the counters: with drain_timeout = 0 (or a drain
    # run out, or UDP) the dest goes whatever they say, and the reconciler need not read the kernel again.
    idle = False
    if skey.protocol != Proto.UDP and not expired:
        p.counted = True
        idle = hd.active_conns + hd.inact_conns == 0
    if skey.protocol == Proto.UDP or idle or expired:
        p.steps.append(_Step(_DEL_DEST, DelDest(skey, hd.key), drift=drift, removals=int(serving)))
        return True
    if serving:
        p.steps.append(_Step(_LOWER_DEST, EditDest(skey, hd.key, replace(hd.attrs, weight=0)), drift=drift,
                             removals=1))
    p.new_drains[(skey, hd.key)] = start
    return False


def _retire_service(p: _Pass, have: Service) -> None:
    mark = len(p.steps)
    left = [d for d in have.dests if not _drain_dest(p, have.key, d, drift=p.dest_unchanged(have.key, d.key))]
    if left:
        return
    # Nothing would remain: one DelService replaces the DelDests (the removal counts stay).
    removals = sum(s.removals for s in p.steps[mark:])
    del p.steps[mark:]
    p.steps.append(_Step(_DEL_SERVICE, DelService(have.key), removals=removals))
