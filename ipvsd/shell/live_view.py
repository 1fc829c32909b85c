"""The live view behind `ipvsd status` and the metrics endpoint, kept up to date from the daemon's events.

A subscriber of `ipvsd.shell.bus`: it starts from each snapshot the daemon publishes, follows probe results
between snapshots, counts per-probe statistics and remembers the last reload and which VIPs this director holds;
it never calls into the daemon. The kernel's counters come from the table the last pass read; when that is
older than KERNEL_MAX_AGE (or a pass changed the table since), `refresh_kernel` reads the table again,
read-only. The sync daemons and sysctls are those of the last snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from ipvsd.core import view as status
from ipvsd.core.health import HealthState
from ipvsd.core.maintenance import MaintenanceInfo, MaintenanceKey
from ipvsd.core.probes import ProbeKey
from ipvsd.core.roles import VipRole, order
from ipvsd.model import Service
from ipvsd.shell import bus
from ipvsd.shell.metrics import View

KERNEL_MAX_AGE = 5.0  # seconds a pass's view of the table serves scrapes and `status` before a fresh dump


class LiveView:
    """The latest snapshot plus what happened since: probe states and counters, the table, the last reload."""

    def __init__(self, read_table: Callable[[], Awaitable[list[Service]]], *,
                 mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.read_table = read_table
        self.mono = mono
        self.wall = wall
        self.snapshot: bus.Snapshot | None = None
        self.states: dict[ProbeKey, HealthState] = {}
        self.stats: dict[ProbeKey, status.ProbeStats] = {}
        self.kernel: list[Service] = []
        self.kernel_at: float | None = None  # mono; None: stale (a pass changed the table since)
        self.kernel_wall: float | None = None
        self.last_reload: dict[str, Any] = {}
        self.roles: dict[str, VipRole] | None = None  # None: the director's addresses are not observed (yet)

    def record(self, event: bus.Event) -> None:
        match event:
            case bus.ProbeResulted(key=key, result=result, state=state):
                stats = self.stats.get(key)
                if stats is None:  # not setdefault: that would make a ProbeStats at every result
                    stats = self.stats[key] = status.ProbeStats()
                stats.add(result)
                self.states[key] = state
            case bus.SnapshotTaken(snapshot=snap):
                self.snapshot = snap
                self.states = dict(snap.states)
                if len(self.stats) > len(self.states) or any(k not in self.states for k in self.stats):
                    self.stats = {k: v for k, v in self.stats.items() if k in self.states}
            case bus.PassDone(table=table, changed=changed):
                if table is not None and not changed:  # a mirror has no counters; a changed table is stale
                    self.kernel, self.kernel_at, self.kernel_wall = list(table), self.mono(), self.wall()
                elif changed:
                    self.kernel_at = None
            case bus.Reloaded() as r:
                self.last_reload = {"outcome": r.outcome, "trigger": r.trigger, "error": r.error or None,
                                    "at": r.at, "restart": list(r.restart) or None}
            case bus.RolesChanged(roles=roles):
                self.roles = dict(roles)
            case _:
                pass

    async def refresh_kernel(self) -> None:
        """Read the table again when the last observation is stale."""
        if self.kernel_at is not None and self.mono() - self.kernel_at < KERNEL_MAX_AGE:
            return
        self.kernel = await self.read_table()
        self.kernel_at, self.kernel_wall = self.mono(), self.wall()

    def maintenance(self) -> dict[MaintenanceKey, MaintenanceInfo]:
        return dict(self.snapshot.maintenance) if self.snapshot is not None else {}

    def statuses(self) -> list[status.ServiceStatus]:
        snap = self.snapshot
        if snap is None:
            return []
        return status.build(snap.config, snap.probes, self.states, self.stats, kernel=self.kernel,
                            maintenance=snap.maintenance, quorum=snap.quorum, fail_open=snap.fail_open,
                            resolved=snap.resolved, ramps=snap.ramps, wall=self.wall(), mono=self.mono())

    def vips(self) -> list[VipRole] | None:
        """Each VIP's role, in address order; None while the addresses are not observed."""
        return None if self.roles is None else sorted(self.roles.values(), key=lambda r: order(r.vip))

    def sync(self) -> tuple[status.SyncDaemonStatus, ...]:
        return self.snapshot.sync if self.snapshot is not None else ()

    def sysctls(self) -> tuple[status.SysctlStatus, ...]:
        return self.snapshot.sysctls if self.snapshot is not None else ()

    def routes(self) -> tuple[status.RouteStatus, ...]:
        return self.snapshot.routes if self.snapshot is not None else ()

    def view(self) -> View:
        return View(self.statuses(), self.kernel, self.kernel_wall, tuple(self.vips() or ()), self.sync(),
                    self.sysctls(), self.routes())
