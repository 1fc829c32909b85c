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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ipvsd.config.schema import Config
from ipvsd.core import desired, plan
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.core.probes import RealHealth, RealKey
from ipvsd.model import Service, ServiceKey


@dataclass(frozen=True)
class Memory:
    """What passes carry forward: ownership, drains and maintenance keys and quorum (persisted), `previous` (not)."""

    owned: frozenset[ServiceKey] = frozenset()
    drains: Mapping[plan.DrainKey, float] = field(default_factory=dict)
    maintenance: frozenset[MaintenanceKey] = frozenset()
    quorum: Mapping[ServiceKey, bool] = field(default_factory=dict)
    previous: plan.Desired | None = None


@dataclass(frozen=True)
class Decision:
    """The desired table as built (with quorum and fail-open decisions) and the plan that reaches it."""

    built: desired.Built
    plan: plan.Plan


def decide(config: Config, health: Mapping[RealKey, RealHealth], observed: Iterable[Service], memory: Memory, *,
           now: float, maintenance: frozenset[MaintenanceKey] = frozenset(),
           resolved: Mapping[str, str] | None = None, force: bool = False) -> Decision:
    """Return what one pass should do now (Rule 1); `now` is wall-clock seconds (drains outlive restarts)."""
    table = list(observed)
    built = desired.build(config, health, maintenance=memory.maintenance | maintenance, observed=table,
                          quorum=memory.quorum, resolved=resolved)
    p = plan.plan(built.table, table, owned=memory.owned, now=now, limits=desired.limits(config, force=force),
                  drains=memory.drains, previous=memory.previous)
    return Decision(built, p)


def planned(memory: Memory, decision: Decision) -> Memory:
    """The memory to persist before applying `decision` (Rule 2)."""
    if decision.plan.refused is not None:
        return replace(memory, quorum=dict(decision.built.quorum))
    return replace(memory, owned=decision.plan.owned, drains=dict(decision.plan.drains),
                   quorum=dict(decision.built.quorum))


def applied(memory: Memory, decision: Decision) -> Memory:
    """The memory once every op of `decision` succeeded (Rule 3)."""
    return replace(memory, previous=decision.built.table)
