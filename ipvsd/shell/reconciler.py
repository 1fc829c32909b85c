"""One reconcile pass: observe the kernel, call the decide step, persist, apply in order, record the outcome.

A pass observes either by reading the kernel (`fresh`) or from `ipvsd.core.mirror`: the last read patched with
the ops applied since, which the daemon uses between resyncs for passes that health transitions ask for.

The pass is the only code that writes to the kernel. It holds no policy: `ipvsd.core.decide` decides; this
module does the I/O around it and keeps the `Memory` that must survive between passes, in memory and in the
state file (saved before the kernel changes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ipvsd.config.schema import Config
from ipvsd.core import decide, desired, mirror
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.core.probes import RealHealth, RealKey
from ipvsd.errors import IpvsdError, KernelError
from ipvsd.kernel import Kernel, apply
from ipvsd.model import DelService, Op, Service
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
    observed: tuple[Service, ...] = ()  # the table as this pass saw it before applying


@dataclass
class Reconciler:
    """Runs passes against one kernel with one state file; the daemon hands in config and health each pass."""

    kernel: Kernel
    state_path: Path
    force: bool = False
    memory: decide.Memory = field(default_factory=decide.Memory)
    passes: int = 0
    mirror: list[Service] | None = None  # the table after the last pass, if every op of it succeeded
    reads: int = 0
    wall: Callable[[], float] = time.time  # drains are wall-clock (they outlive restarts)
    mono: Callable[[], float] = time.monotonic

    def load_state(self) -> None:
        self.memory = statefile.load(self.state_path)

    async def reconcile(self, config: Config, health: Mapping[RealKey, RealHealth], *,
                        maintenance: frozenset[MaintenanceKey] = frozenset(),
                        resolved: Mapping[str, str] | None = None, fresh: bool = True) -> Outcome:
        """Bring the kernel to what `config` and `health` ask, touching only what ipvsd owns."""
        t0 = self.mono()
        self.passes += 1
        read = fresh or self.mirror is None
        observed = await self.kernel.services() if read else list(self.mirror or ())

        def decided() -> decide.Decision:
            return decide.decide(config, health, observed, self.memory, now=self.wall(), maintenance=maintenance,
                                 resolved=resolved, force=self.force)

        d = decided()
        if d.plan.counted and not read:  # a drain waits for connections to end: the mirror's counters are stale
            read = True
            observed = await self.kernel.services()
            d = decided()
        self.reads += read
        for skey, has in d.built.quorum.items():
            if self.memory.quorum.get(skey) not in (None, has):
                log.warning("%s quorum %s", skey.label(), "regained: fallback out" if has else "lost: fallback in")
        p = d.plan
        # Ownership and drains are written before the kernel changes, so a crash mid-apply still knows
        # every service it may have created.
        self._remember(decide.planned(self.memory, d))
        if p.refused:
            log.error("plan refused (nothing applied): %s; %d ops withheld; run with --force to allow",
                      p.refused, len(p.withheld))
            self.mirror = observed
            return Outcome(refused=p.refused, duration=self.mono() - t0, built=d.built, read=read,
                           observed=tuple(observed))
        applied: list[Op] = []
        drift = set(p.drift)
        for op in p.ops:
            try:
                await apply(self.kernel, op)
            except KernelError as e:
                log.error("ipvsadm %s failed: %s", op, e)
                self.mirror = None  # the kernel is not what we think: read it next time
                return Outcome(applied=tuple(applied), drift=tuple(o for o in applied if o in drift), error=e,
                               failed=op, duration=self.mono() - t0, built=d.built, read=read,
                               observed=tuple(observed))
            applied.append(op)
            log.info("ipvsadm %s%s", op, "   (drift repair)" if op in drift else "")
        self.memory = decide.applied(self.memory, d)
        self.mirror = mirror.patched(observed, applied) if applied else observed
        return Outcome(applied=tuple(applied), drift=tuple(p.drift), duration=self.mono() - t0, built=d.built,
                       read=read, observed=tuple(observed))

    def _remember(self, memory: decide.Memory) -> None:
        persisted = replace(memory, previous=self.memory.previous)
        if persisted != self.memory:
            statefile.save(self.state_path, persisted)
        self.memory = persisted

    async def clean_stop(self) -> list[Op]:
        """Delete every owned service still in the kernel (ldirectord cleanstop); foreign ones stay.

        Without a kernel to talk to, says so in one line and keeps ownership (the next start cleans up).
        """
        owned = self.memory.owned
        done: list[Op] = []
        try:
            table = await self.kernel.services()
        except (OSError, IpvsdError) as e:
            log.error("clean stop: cannot read the IPVS table (%s); owned services stay as they are", e)
            return done
        for svc in table:
            if svc.key in owned:
                op = DelService(svc.key)
                try:
                    await apply(self.kernel, op)
                except (OSError, KernelError) as e:
                    log.error("ipvsadm %s failed: %s", op, e)
                    continue
                log.info("ipvsadm %s   (clean stop)", op)
                done.append(op)
        gone = {op.key for op in done}
        left = frozenset(k for k in owned if k not in gone and any(s.key == k for s in table))
        self._remember(replace(self.memory, owned=left, drains={}))
        return done
