"""The decide step: config, health, the observed table and what the last passes left -> the ops of one pass.

Pure, and the only place that turns inputs into kernel operations: the daemon's `Reconciler` applies what it
returns, and `ipvsd plan` calls it on a fresh read of the kernel with the memory the daemon persisted, so a
dry run cannot drift from a real pass.

Rules
-----
Rule 1: `decide` builds the desired table (`ipvsd.core.desired`) and plans against the observed table
        (`ipvsd.core.plan`); maintenance from the state file and from the operator (drains, maintenance_dir)
        both count.
Rule 2: what must survive a pass is `Memory`. `planned` is the memory to persist *before* the ops are
        applied (ownership and drains of the plan, so a crash mid-apply still knows every service it may have
        created; a refused plan changes neither). Quorum is kept either way: it is the build's hysteresis.
Rule 3: `applied` is the memory after every op of the plan succeeded: its desired table becomes `previous`,
        against which the next plan tells drift repair from change.
Rule 4: the connection-sync daemons are decided by `ipvsd.core.syncd` when the pass observed them (`daemons`
        not None), apart from the table: a refused table plan does not hold them back, their ownership is
        persisted with the rest (before their ops run), and their failures never stop the table's ops.
Rule 5: `timeouts` turns `[lvs_timeouts]` into the one SET_CONFIG that changes what differs (0 leaves a
        timeout as it is), or None when the kernel already has them.
Rule 6: VIP routes (`ipvsd.core.announce`) are decided when the pass read them (`routes` not None), from the
        quorum this pass built. A service that loses quorum keeps its reals for its grace (`Memory.lost_at`,
        in memory only: a restart starts with the table it adopts); a director drain (the `DIRECTOR` key in
        `maintenance`, from `director_since`) withdraws the routes at once and reaches the reals after the
        delay. `Decision.due` is when the next grace ends: a pass must run then. A director drain in force
        lifts the blast-radius guard (plan Rule 6): every real going out is what the operator asked for.
Rule 7: slow start (`ipvsd.core.slowstart`). A real that comes back while others serve ramps to its weight:
        the desired table's weights are the ramps' steps, `Memory.ramps` holds when each ramp started
        (persisted, so a restart mid-ramp does not put the real at its full weight at once), and
        `Decision.due` is also the next step of a ramp. No ramp starts before a pass was applied (`previous`
        is None: the first programming of a table after a start, and `ipvsd plan`, which shows the ramps the
        daemon persisted).
Rule 8: a pass may hand in the decision before it (`reuse`): the builder and the planner skip the services
        whose inputs are the objects they were before (desired Rule 7, plan Rule 9), so a pass after an edit
        of one service, or after one real's health moved, costs that service, not the table. The decision is
        the one made without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ipvsd.config.schema import Config, LvsTimeouts
from ipvsd.core import announce, desired, plan, slowstart, syncd
from ipvsd.core.maintenance import DIRECTOR, MaintenanceKey
from ipvsd.core.probes import RealHealth, RealKey
from ipvsd.core.slowstart import Ramp
from ipvsd.model import Service, ServiceKey, SetTimeouts, SyncDaemon, Timeouts


@dataclass(frozen=True)
class Memory:
    """What passes carry forward: ownership (of services and sync daemons), drains, maintenance keys, quorum and
    the ramps' starts (persisted), `previous` and `lost_at` (not)."""

    owned: frozenset[ServiceKey] = frozenset()
    drains: Mapping[plan.DrainKey, float] = field(default_factory=dict)
    maintenance: frozenset[MaintenanceKey] = frozenset()
    quorum: Mapping[ServiceKey, bool] = field(default_factory=dict)
    previous: plan.Desired | None = None
    daemons: Mapping[int, syncd.Owned] = field(default_factory=dict)  # sync daemons ipvsd owns, by state
    lost_at: Mapping[ServiceKey, float] = field(default_factory=dict)  # announced services' quorum losses
    ramps: Mapping[RealKey, float] = field(default_factory=dict)  # when each real's slow start began (wall)


@dataclass(frozen=True)
class Decision:
    """The desired table as built (with quorum and fail-open decisions), the plan that reaches it, and the sync
    daemons' steps (None: the daemons were not observed this pass)."""

    built: desired.Built
    plan: plan.Plan
    sync: syncd.SyncPlan | None = None
    routes: announce.RoutePlan | None = None
    lost_at: Mapping[ServiceKey, float] = field(default_factory=dict)
    due: float | None = None  # wall time of the next grace's end or ramp step
    ramps: Mapping[RealKey, Ramp] = field(default_factory=dict)  # the slow starts in force after this pass
    now: float = 0.0  # the wall time decided for (a ramp's step is the step at this time)


def decide(config: Config, health: Mapping[RealKey, RealHealth], observed: Iterable[Service], memory: Memory, *,
           now: float, maintenance: frozenset[MaintenanceKey] = frozenset(),
           resolved: Mapping[str, str] | None = None, force: bool = False,
           daemons: Sequence[SyncDaemon] | None = None, routes: Iterable[str] | None = None,
           director_since: float | None = None, stopping: bool = False, reuse: Decision | None = None) -> Decision:
    """Return what one pass should do now (Rules 1, 4, 6, 7, 8); `now` is wall-clock seconds (drains and ramps
    outlive restarts); `reuse` is the previous pass's decision (Rule 8)."""
    table = list(observed)
    maint = memory.maintenance | maintenance
    drained = DIRECTOR in maint
    if drained and director_since is not None and now < director_since + announce.director_delay(config):
        maint = maint - {DIRECTOR}
    grace = announce.grace(config, memory.quorum, memory.lost_at, now)
    built = desired.build(config, health, maintenance=maint, observed=table, quorum=memory.quorum,
                          resolved=resolved, grace=grace, now=now, reuse=None if reuse is None else reuse.built)
    ramps = slowstart.ramps(config, built.table, table, memory.ramps, now=now, first=memory.previous is None,
                            resolved=resolved)
    if ramps:
        built = replace(built, table=slowstart.weighted(built.table, ramps, now))
    limits = desired.limits(config, force=force or DIRECTOR in maint)
    p = plan.plan(built.table, table, owned=memory.owned, now=now, limits=limits,
                  drains=memory.drains, previous=memory.previous, reuse=None if reuse is None else reuse.plan)
    sync = None if daemons is None else syncd.decide(config.sync, daemons, memory.daemons)
    # Without a grace (no [announce] delay: the common case) nothing is looked up for each service: at 1,000
    # services, a Python step each was a few ms of a reload's pass in the lab.
    kept = {k: q for k, q in built.quorum.items() if k in grace} if grace else {}
    lost_at = announce.lost(memory.quorum, kept, memory.lost_at, now)
    routed = None if routes is None else announce.plan(config, built.quorum, routes, drained=drained,
                                                        stopping=stopping)
    dues = [t for t in (announce.due(config, lost_at, director_since if drained else None, now),
                        slowstart.due(ramps, now)) if t is not None]
    return Decision(built, p, sync, routed, lost_at, min(dues, default=None), ramps, now)


def planned(memory: Memory, decision: Decision) -> Memory:
    """The memory to persist before applying `decision` (Rules 2, 4, 7)."""
    if decision.sync is not None:
        memory = replace(memory, daemons=dict(decision.sync.owned))
    memory = replace(memory, lost_at=dict(decision.lost_at), ramps={k: r.since for k, r in decision.ramps.items()})
    if decision.plan.refused is not None:
        return replace(memory, quorum=dict(decision.built.quorum))
    return replace(memory, owned=decision.plan.owned, drains=dict(decision.plan.drains),
                   quorum=dict(decision.built.quorum))


def applied(memory: Memory, decision: Decision) -> Memory:
    """The memory once every op of `decision`'s table plan succeeded (Rule 3)."""
    return replace(memory, previous=decision.built.table)


def timeouts(wanted: LvsTimeouts | None, observed: Timeouts) -> SetTimeouts | None:
    """The SET_CONFIG that gives the kernel the configured timeouts, or None when it has them (Rule 5)."""
    if wanted is None:
        return None
    t = Timeouts(tcp=wanted.tcp if wanted.tcp != observed.tcp else 0,
                 tcp_fin=wanted.tcp_fin if wanted.tcp_fin != observed.tcp_fin else 0,
                 udp=wanted.udp if wanted.udp != observed.udp else 0)
    return None if t == Timeouts() else SetTimeouts(t)
