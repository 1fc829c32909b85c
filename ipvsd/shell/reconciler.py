"""One reconcile pass: observe the kernel, build the desired table, plan, apply in order, record the outcome.

A pass observes either by reading the kernel (`fresh`) or from `ipvsd.core.mirror`: the last read patched with the
ops applied since, which the daemon uses between resyncs for passes that health transitions ask for.

The pass is the only code that writes to the kernel. It holds no policy: `desired.build` and `plan.plan`
decide; this module does the I/O around them and keeps what must survive between passes (ownership,
drains, quorum, the last applied desired table) in memory and in the state file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ipvsd.config.schema import Config
from ipvsd.core import desired, mirror, plan
from ipvsd.errors import KernelError
from ipvsd.kernel import Kernel, apply
from ipvsd.model import DelService, DestKey, Op, Service, ServiceKey
from ipvsd.shell import statefile

log = logging.getLogger("ipvsd.reconcile")


@dataclass(frozen=True)
class Outcome:
    """What one pass did, for logs, metrics and tests."""

    applied: tuple[Op, ...] = ()
    drift: tuple[Op, ...] = ()
    refused: str | None = None
    error: KernelError | None = None
    failed: Op | None = None
    duration: float = 0.0
    built: desired.Built | None = None
    read: bool = True  # observed by reading the kernel, not from the mirror


@dataclass
class Reconciler:
    """Runs passes against one kernel with one state file; `config` and `health` are swapped in by the daemon."""

    kernel: Kernel
    state_path: Path
    force: bool = False
    state: statefile.State = field(default_factory=statefile.State)
    quorum: dict[ServiceKey, bool] = field(default_factory=dict)
    previous: plan.Desired | None = None
    passes: int = 0
    observed: list[Service] = field(default_factory=list)  # the table as the last pass saw it (for metrics)
    mirror: list[Service] | None = None  # the table after the last pass, if every op of it succeeded
    reads: int = 0

    def load_state(self) -> None:
        self.state = statefile.load(self.state_path)

    async def reconcile(self, config: Config, health: Mapping[tuple[ServiceKey, DestKey], desired.RealHealth],
                        *, maintenance: frozenset[statefile.MaintenanceKey] = frozenset(),
                        resolved: Mapping[str, str] | None = None, fresh: bool = True) -> Outcome:
        """Bring the kernel to what `config` and `health` ask, touching only what ipvsd owns."""
        t0 = time.monotonic()
        self.passes += 1
        read = fresh or self.mirror is None
        observed = await self.kernel.services() if read else list(self.mirror or ())

        def decide() -> tuple[desired.Built, plan.Plan]:
            built = desired.build(config, health, maintenance=self.state.maintenance | maintenance,
                                  observed=observed, quorum=self.quorum, resolved=resolved)
            return built, plan.plan(built.table, observed, owned=self.state.owned, now=time.time(),
                                    limits=desired.limits(config, force=self.force), drains=self.state.drains,
                                    previous=self.previous)

        built, p = decide()
        if p.counted and not read:  # a drain waits for connections to end: the mirror's counters are stale
            read = True
            observed = await self.kernel.services()
            built, p = decide()
        self.reads += read
        self.observed = observed
        for skey, has in built.quorum.items():
            if self.quorum.get(skey) not in (None, has):
                log.warning("%s quorum %s", skey, "regained: fallback out" if has else "lost: fallback in")
        self.quorum = dict(built.quorum)
        if p.refused:
            log.error("plan refused (nothing applied): %s; %d ops withheld; run with --force to allow",
                      p.refused, len(p.withheld))
            self.mirror = observed
            return Outcome(refused=p.refused, duration=time.monotonic() - t0, built=built, read=read)
        # Ownership and drains are written before the kernel changes, so a crash mid-apply still knows
        # every service it may have created.
        new_state = replace(self.state, owned=p.owned, drains=p.drains)
        if new_state != self.state:
            statefile.save(self.state_path, new_state)
            self.state = new_state
        applied: list[Op] = []
        drift = set(p.drift)
        for op in p.ops:
            try:
                await apply(self.kernel, op)
            except KernelError as e:
                log.error("ipvsadm %s failed: %s", op, e)
                self.mirror = None  # the kernel is not what we think: read it next time
                return Outcome(applied=tuple(applied), drift=tuple(o for o in applied if o in drift), error=e,
                               failed=op, duration=time.monotonic() - t0, built=built, read=read)
            applied.append(op)
            log.info("ipvsadm %s%s", op, "   (drift repair)" if op in drift else "")
        self.previous = built.table
        self.mirror = mirror.patched(observed, applied) if applied else observed
        return Outcome(applied=tuple(applied), drift=tuple(p.drift), duration=time.monotonic() - t0, built=built,
                       read=read)

    async def clean_stop(self) -> list[Op]:
        """Delete every owned service still in the kernel (ldirectord cleanstop); foreign ones stay."""
        owned = self.state.owned
        done: list[Op] = []
        for svc in await self.kernel.services():
            if svc.key in owned:
                op = DelService(svc.key)
                try:
                    await apply(self.kernel, op)
                except KernelError as e:
                    log.error("ipvsadm %s failed: %s", op, e)
                    continue
                log.info("ipvsadm %s   (clean stop)", op)
                done.append(op)
        self.state = replace(self.state, owned=frozenset(), drains={})
        statefile.save(self.state_path, self.state)
        return done
