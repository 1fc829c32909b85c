"""The daemon's view of every real, as data: what `ipvsd status` prints and what the metrics collector exports.

Pure: the caller hands in the config, the probe plan, each probe's health state and counters, maintenance and
the last observed kernel table, plus both clocks (health states keep `loop.time()`; people read wall time).
A real's `state` is its health before the fail-open rule, so an operator sees which reals actually failed:
    maint    a maintenance entry matches it
    up       it has no checks, or every check is settled up
    down     every check has a result and one of them is down; or a name it needs does not resolve (dns)
    unknown  some check has no result yet

A real in slow start (`ipvsd.core.slowstart`) shows the weight its ramp gives it now, the weight it ramps to and
when the ramp ends.

The connection-sync daemons and the sysctls ipvsd set have their own rows (`sync_status`, `SysctlStatus`).
A daemon's owner is `ipvsd` (started by it), `adopted` (found running as configured), `external` (the config
says another program runs them) or `foreign` (neither configured nor owned: never touched).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ipvsd.checks.base import ProbeResult
from ipvsd.config.schema import Config, Sync
from ipvsd.core.health import HealthState
from ipvsd.core.maintenance import MaintenanceInfo, MaintenanceKey, in_maintenance
from ipvsd.core.probes import ProbeKey, ProbePlan, RealKey, is_name, real_health
from ipvsd.core.roles import VipRole
from ipvsd.core.slowstart import Ramp
from ipvsd.core.syncd import ROLES, Owned
from ipvsd.model import DestKey, Service, ServiceKey, SyncDaemon, addrport

# Probe durations: from a loopback TCP connect (~100 µs) to a slow external script (10 s).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATES = ("up", "down", "unknown", "maint")


@dataclass
class ProbeStats:
    """What the daemon counts per probe beyond its health state: streaks, failure reasons, a duration histogram."""

    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    failures_by: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    duration_sum: float = 0.0
    count: int = 0
    last: ProbeResult | None = None

    def add(self, result: ProbeResult) -> None:
        self.last = result
        if result.ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
            self.failures_by[result.kind.value] = self.failures_by.get(result.kind.value, 0) + 1
        i = bisect.bisect_left(DURATION_BUCKETS, result.latency)
        if i < len(self.buckets):
            self.buckets[i] += 1
        self.duration_sum += result.latency
        self.count += 1


@dataclass(frozen=True)
class CheckStatus:
    key: ProbeKey
    check: str  # the check's type, made unique within its real ("http", "http#2")
    target: str
    up: bool
    settled: bool
    since: float  # wall clock
    transitions: int
    last: ProbeResult | None
    stats: ProbeStats


@dataclass(frozen=True)
class RampStatus:
    """A real's slow start as `status` shows it."""

    weight: int  # the ramp's weight now
    target: int  # the weight it ramps to
    since: float  # wall clock
    until: float


@dataclass(frozen=True)
class RealStatus:
    service: ServiceKey
    dest: DestKey | None  # None: a host name that does not resolve (down, reason dns)
    real: str  # the dest as `ipvsadm -L` shows it, or NAME:PORT for an unresolved name
    name: str  # as configured (a hostname stays a hostname)
    state: str
    reason: str
    since: float | None
    weight: int
    kernel_weight: int | None
    active: int
    inactive: int
    checks: tuple[CheckStatus, ...]
    maintenance: MaintenanceInfo | None
    slow_start: RampStatus | None = None


@dataclass(frozen=True)
class ServiceStatus:
    key: ServiceKey
    scheduler: str
    in_kernel: bool
    quorum: bool | None
    fail_open: bool
    reals: tuple[RealStatus, ...]


def build(config: Config, probes: ProbePlan, states: Mapping[ProbeKey, HealthState],
          stats: Mapping[ProbeKey, ProbeStats], *, kernel: Iterable[Service] = (),
          maintenance: Mapping[MaintenanceKey, MaintenanceInfo] | None = None,
          quorum: Mapping[ServiceKey, bool] | None = None, fail_open: Iterable[ServiceKey] = (),
          resolved: Mapping[str, str] | None = None, ramps: Mapping[RealKey, Ramp] | None = None, wall: float,
          mono: float) -> list[ServiceStatus]:
    """Return every configured service with each real's state; `wall`/`mono` are now on both clocks."""
    maint = dict(maintenance or {})
    keys = frozenset(maint)
    opened = frozenset(fail_open)
    table = {s.key: s for s in kernel}
    out: list[ServiceStatus] = []
    for vs in config.services:
        skey = vs.service_key()
        in_kernel = table.get(skey)
        dests = {d.key: d for d in in_kernel.dests} if in_kernel is not None else {}
        reals: list[RealStatus] = []
        for real in vs.reals:
            why = probes.unresolved.get((skey, real.address))
            addr = (resolved or {}).get(real.address, real.address)
            if why is not None or is_name(addr):
                port = real.port or vs.port
                reals.append(RealStatus(
                    service=skey, dest=None, real=addrport(real.address, port), name=real.address, state="down",
                    reason=why or f"dns: {real.address} does not resolve", since=None, weight=real.weight,
                    kernel_weight=None, active=0, inactive=0, checks=(), maintenance=None))
                continue
            dkey = real.dest_key(addr)
            checks = _checks(probes.reals.get((skey, dkey), ()), states, stats, wall=wall, mono=mono)
            entry = _maintenance_of(maint, keys, skey, dkey)
            state, reason, since = _state(checks, entry, probes.down.get((skey, dkey)))
            kd = dests.get(dkey)
            ramp = (ramps or {}).get((skey, dkey))
            reals.append(RealStatus(
                service=skey, dest=dkey, real=str(dkey), name=real.address, state=state, reason=reason, since=since,
                weight=real.weight, kernel_weight=None if kd is None else kd.attrs.weight,
                active=0 if kd is None else kd.active_conns, inactive=0 if kd is None else kd.inact_conns,
                checks=checks, maintenance=entry,
                slow_start=None if ramp is None or wall >= ramp.until
                else RampStatus(ramp.weight(wall), ramp.target, ramp.since, ramp.until)))
        out.append(ServiceStatus(key=skey, scheduler=vs.scheduler, in_kernel=in_kernel is not None,
                                 quorum=None if quorum is None else quorum.get(skey), fail_open=skey in opened,
                                 reals=tuple(reals)))
    return out


def _checks(keys: Iterable[ProbeKey], states: Mapping[ProbeKey, HealthState], stats: Mapping[ProbeKey, ProbeStats],
            *, wall: float, mono: float) -> tuple[CheckStatus, ...]:
    out: list[CheckStatus] = []
    seen: dict[str, int] = {}
    for key in keys:
        st = states.get(key)
        if st is None:
            continue
        kind = key.type
        seen[kind] = seen.get(kind, 0) + 1
        label = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
        ps = stats.get(key) or ProbeStats()
        out.append(CheckStatus(key=key, check=label, target=str(key.target), up=st.up, settled=st.settled,
                               since=wall - (mono - st.since), transitions=st.transitions, last=ps.last,
                               stats=ps))
    return tuple(out)


def _maintenance_of(maint: Mapping[MaintenanceKey, MaintenanceInfo], keys: frozenset[MaintenanceKey],
                    skey: ServiceKey, dkey: DestKey) -> MaintenanceInfo | None:
    if not in_maintenance(keys, skey, dkey):
        return None
    for port in (dkey.port, 0):
        for svc in (skey, None):
            entry = maint.get(MaintenanceKey(dkey.addr, port, svc))
            if entry is not None:
                return entry
    return None


def _state(checks: tuple[CheckStatus, ...], entry: MaintenanceInfo | None,
           forced: str | None) -> tuple[str, str, float | None]:
    if entry is not None:
        return "maint", f"maintenance ({entry.source})" + (f": {entry.reason}" if entry.reason else ""), entry.since
    if forced is not None:
        return "down", forced, None
    if not checks:
        return "up", "no checks", None
    since = max(c.since for c in checks)
    health = real_health(checks)  # a CheckStatus has `up` and `settled`, as a HealthState does
    if not health.settled:
        waiting = next(c for c in checks if not c.settled)
        return "unknown", f"{waiting.check}: no result yet", since
    if not health.up:
        c = next(c for c in checks if not c.up)
        return "down", f"{c.check}: {c.last.reason if c.last else 'down'}", c.since
    c = checks[0]
    return "up", f"{c.check}: {c.last.reason if c.last else 'up'}", since


# --- connection-sync daemons and sysctls ---------------------------------------------------------------------


@dataclass(frozen=True)
class SyncDaemonStatus:
    role: str  # master, backup
    running: bool
    interface: str  # the running daemon's, else the configured one
    syncid: int
    owner: str  # ipvsd, adopted, external, foreign
    configured: bool  # the config asks for this daemon (owner ipvsd)
    error: str | None  # the last error starting or stopping it, until a step succeeds
    daemon: SyncDaemon | None  # as the kernel reports it


@dataclass(frozen=True)
class SysctlStatus:
    name: str  # without the net.ipv4.vs. prefix
    wanted: str
    current: str | None  # None: not read (yet)
    state: str  # ok, drift, error, unknown
    error: str | None


@dataclass(frozen=True)
class RouteStatus:
    route: str  # 192.0.2.10/32
    held: bool  # in ipvsd's routing table now (announced)
    why: str  # why it is withdrawn (empty while held)
    error: str | None  # the last failed request about it, until one succeeds


def route_status(held: Iterable[str], why_not: Mapping[str, str], errors: Mapping[str, str]
                 ) -> tuple[RouteStatus, ...]:
    """One row per configured or held route, in address order."""
    from ipvsd.core.announce import route_order

    have = set(held)
    rows = sorted(have | set(why_not), key=route_order)
    return tuple(RouteStatus(r, r in have, "" if r in have else why_not.get(r, "not configured"), errors.get(r))
                 for r in rows)


def route_json(rows: Iterable[RouteStatus]) -> list[dict[str, Any]]:
    return [{"route": r.route, "announced": r.held, "why": r.why or None, "error": r.error} for r in rows]


def sync_status(sync: Sync | None, running: Iterable[SyncDaemon], owned: Mapping[int, Owned],
                errors: Mapping[int, str]) -> tuple[SyncDaemonStatus, ...]:
    """One row per daemon configured, running or owned, master first."""
    external = sync is not None and sync.owner == "external"
    wanted = {d.state: d for d in (sync.wanted() if sync is not None and not external else ())}
    found = {d.state: d for d in running}
    rows = []
    for state in sorted(wanted.keys() | found.keys() | owned.keys()):
        got, want, mine = found.get(state), wanted.get(state), owned.get(state)
        shown = got or want or (mine.daemon if mine is not None else None)
        assert shown is not None
        owner = ("external" if external else "foreign" if mine is None
                 else "adopted" if mine.adopted else "ipvsd")
        rows.append(SyncDaemonStatus(role=ROLES.get(state, str(state)), running=got is not None,
                                     interface=shown.mcast_ifn, syncid=shown.syncid, owner=owner,
                                     configured=want is not None, error=errors.get(state), daemon=got))
    return tuple(rows)


def sync_json(rows: Iterable[SyncDaemonStatus]) -> list[dict[str, Any]]:
    return [{"role": r.role, "running": r.running, "interface": r.interface, "syncid": r.syncid,
             "owner": r.owner, "configured": r.configured, "error": r.error,
             "group": r.daemon.mcast_group if r.daemon else None, "port": r.daemon.mcast_port if r.daemon else None,
             "ttl": r.daemon.mcast_ttl if r.daemon else None, "maxlen": r.daemon.sync_maxlen if r.daemon else None}
            for r in rows]


def sysctl_json(rows: Iterable[SysctlStatus]) -> list[dict[str, Any]]:
    return [{"name": r.name, "wanted": r.wanted, "current": r.current, "state": r.state, "error": r.error}
            for r in rows]


# --- JSON shape (the control socket's `status` answer) --------------------------------------------------------


def to_json(services: Iterable[ServiceStatus]) -> list[dict[str, Any]]:
    """Return the JSON-ready form of `build`'s result."""
    return [{
        "service": s.key.label(), "scheduler": s.scheduler, "in_kernel": s.in_kernel,
        "quorum": s.quorum, "fail_open": s.fail_open,
        "reals": [_real_json(r) for r in s.reals],
    } for s in services]


def maintenance_json(m: MaintenanceInfo) -> dict[str, Any]:
    return {"addr": m.key.addr, "port": m.key.port,
            "service": None if m.key.service is None else m.key.service.label(),
            "reason": m.reason, "since": m.since, "until": m.until, "source": m.source}


def vips_json(roles: Iterable[VipRole] | None) -> list[dict[str, Any]] | None:
    """Each VIP's role for the `status` answer; None while the daemon does not observe its addresses."""
    if roles is None:
        return None
    return [{"vip": r.vip, "held": r.held, "interfaces": list(r.interfaces), "since": r.since} for r in roles]


def _real_json(r: RealStatus) -> dict[str, Any]:
    return {
        "real": r.real, "name": r.name, "state": r.state, "reason": r.reason, "since": r.since,
        "weight": r.weight, "kernel_weight": r.kernel_weight, "active": r.active, "inactive": r.inactive,
        "maintenance": None if r.maintenance is None else maintenance_json(r.maintenance),
        "slow_start": None if r.slow_start is None else {"weight": r.slow_start.weight, "target": r.slow_start.target,
                                                         "since": r.slow_start.since, "until": r.slow_start.until},
        "checks": [{
            "check": c.check, "target": c.target, "up": c.up, "settled": c.settled, "since": c.since,
            "transitions": c.transitions, "successes": c.stats.successes, "failures": c.stats.failures,
            "reason": c.last.reason if c.last else None, "kind": c.last.kind.value if c.last else None,
            "latency": c.last.latency if c.last else None,
        } for c in r.checks],
    }
