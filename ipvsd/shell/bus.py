"""The daemon's typed events and the bus that carries them one way: from the daemon to its observers.

The daemon publishes what happened (a probe result, a transition, a pass and the snapshot after it, a reload,
a maintenance change, a VIP this director took or lost); metrics, the event log and the live view behind
`ipvsd status` subscribe. A subscriber only receives: it holds no reference to the daemon, so it cannot reach
back in. Delivery is synchronous and in order; a subscriber that raises is logged and the others still get the
event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ipvsd.checks.base import ProbeResult
from ipvsd.config.schema import Config
from ipvsd.core.health import HealthState, Transition
from ipvsd.core.maintenance import MaintenanceInfo, MaintenanceKey
from ipvsd.core.probes import ProbeKey, ProbePlan, RealKey
from ipvsd.core.roles import RoleChange, VipRole
from ipvsd.core.slowstart import Ramp
from ipvsd.core.view import RouteStatus, SyncDaemonStatus, SysctlStatus
from ipvsd.model import Op, Service, ServiceKey, SyncDaemon

log = logging.getLogger("ipvsd.bus")


@dataclass(frozen=True)
class Snapshot:
    """A read-only view of the daemon after a pass (or a configuration swap), for `status` and metrics."""

    config: Config
    probes: ProbePlan
    states: Mapping[ProbeKey, HealthState]
    resolved: Mapping[str, str]
    quorum: Mapping[ServiceKey, bool]
    fail_open: frozenset[ServiceKey]
    maintenance: Mapping[MaintenanceKey, MaintenanceInfo]
    sync: tuple[SyncDaemonStatus, ...] = ()  # the connection-sync daemons after the pass
    sysctls: tuple[SysctlStatus, ...] = ()  # the net.ipv4.vs.* sysctls ipvsd sets
    routes: tuple[RouteStatus, ...] = ()  # the VIP routes ([announce])
    ramps: Mapping[RealKey, Ramp] = field(default_factory=dict)  # the slow starts after the last pass


@dataclass(frozen=True)
class ProbeResulted:
    key: ProbeKey
    result: ProbeResult
    state: HealthState


@dataclass(frozen=True)
class Transitioned:
    key: ProbeKey
    transition: Transition
    reals: tuple[RealKey, ...]  # the reals this probe decides


@dataclass(frozen=True)
class PassDone:
    """A pass that talked to the kernel: applied, refused, or stopped by a failed op."""

    number: int
    duration: float
    applied: tuple[Op, ...]
    drift: tuple[Op, ...]
    refused: str | None
    failed: Op | None
    error: str | None
    table: tuple[Service, ...] | None  # the table as read by this pass (None: observed from the mirror)
    changed: bool  # the pass changed the table, so `table` is already stale


@dataclass(frozen=True)
class PassFailed:
    """A pass that could not talk to the kernel at all."""

    number: int
    duration: float
    error: str


@dataclass(frozen=True)
class Reloaded:
    outcome: str  # ok, unchanged, error
    trigger: str
    at: float  # wall time
    error: str = ""
    restart: tuple[str, ...] = ()  # settings that changed but take effect only at the next start


@dataclass(frozen=True)
class MaintenanceChanged:
    action: str  # drain, undrain
    reason: str
    entry: MaintenanceInfo


@dataclass(frozen=True)
class SnapshotTaken:
    snapshot: Snapshot


@dataclass(frozen=True)
class RolesChanged:
    """Which VIPs this director holds (`ipvsd.core.roles`), after an address change or a reload changed it."""

    roles: Mapping[str, VipRole]  # every VIP of the running configuration
    changes: tuple[RoleChange, ...]  # () when only the VIP set shrank


@dataclass(frozen=True)
class SyncChanged:
    """A connection-sync daemon adopted, started, repaired, replaced, stopped or released, or a step that failed."""

    action: str  # one of ipvsd.core.syncd.ACTIONS, or "failed"
    daemon: SyncDaemon
    why: str  # in operator language (for "failed": the error, said once)


@dataclass(frozen=True)
class SysctlChanged:
    """A net.ipv4.vs.* sysctl set, drifted (changed behind ipvsd's back), restored, or that could not be set."""

    name: str  # without the prefix
    action: str  # set, drift, restored, failed
    old: str | None
    new: str
    error: str = ""


@dataclass(frozen=True)
class RouteChanged:
    """A VIP route announced or withdrawn ([announce]), or a request about it that failed."""

    action: str  # announce, withdraw, failed
    route: str  # 192.0.2.10/32
    why: str  # in operator language (for "failed": the error, said once)


Event = (ProbeResulted | Transitioned | PassDone | PassFailed | Reloaded | MaintenanceChanged | SnapshotTaken
         | RolesChanged | SyncChanged | SysctlChanged | RouteChanged)
Subscriber = Callable[[Event], None]
EVENTS: tuple[type[Event], ...] = (ProbeResulted, Transitioned, PassDone, PassFailed, Reloaded, MaintenanceChanged,
                                   SnapshotTaken, RolesChanged, SyncChanged, SysctlChanged, RouteChanged)


@dataclass
class Bus:
    """Fans each event out to the subscribers of its type, in subscription order.

    Subscriptions are by type because a probe result is published thousands of times a second at scale: only
    the observers that want it are called for it.
    """

    subscribers: dict[type[Event], list[Subscriber]] = field(default_factory=dict)

    def subscribe(self, fn: Subscriber, *types: type[Event]) -> None:
        """Call `fn` with every event of `types` (all types when none are given)."""
        for t in types or EVENTS:
            self.subscribers.setdefault(t, []).append(fn)

    def publish(self, event: Event) -> None:
        for fn in self.subscribers.get(type(event), ()):
            try:
                fn(event)
            except Exception:  # an observer's bug must not stop the daemon, nor the other observers
                log.exception("observer %r failed on %s", fn, type(event).__name__)
