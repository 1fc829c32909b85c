"""One reconcile pass: observe the kernel, call the decide step, persist, apply in order, record the outcome.

A pass observes either by reading the kernel (`fresh`) or from `ipvsd.core.mirror`: the last read patched with
the ops applied since, which the daemon uses between resyncs for passes that health transitions ask for.

A plan's ops go to the kernel in batches (`Kernel.apply_many`: many requests per sendmsg), cut where the plan's
phases begin (`Plan.cuts`). A failed op ends the pass as it did when ops went one by one: the ops before it are
`applied`, it is `failed`, no later phase is sent, and the table is read again at the next pass; the ops of its
batch that followed it were carried out by the kernel all the same, and are said (`Outcome.later`).

The pass is the only code that writes to the kernel. It holds no policy: `ipvsd.core.decide` decides; this
module does the I/O around it and keeps the `Memory` that must survive between passes, in memory and in the
state file (saved before the kernel changes).

VIP routes (`ipvsd.shell.routes`, when [announce] is configured) are read at every pass: withdrawals run before
the table's ops, announcements after them and only when those all succeeded; a failed route request is logged
once per distinct error and tried again at the next pass.

Connection-sync daemons are read with the table (fresh passes only) and mirrored the same way in between. Their
steps run after the table's, whatever became of those, and a failed one is logged once per distinct error,
kept out of the mirror passes and retried at the next fresh pass (the resync): the table is managed meanwhile.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ipvsd.config.schema import Announce, Config, LvsTimeouts, VirtualService
from ipvsd.core import announce, decide, desired, mirror, slowstart, syncd
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.core.plan import settled as plan_settled
from ipvsd.core.probes import RealHealth, RealKey
from ipvsd.errors import IpvsdError, KernelError
from ipvsd.kernel import Batch, Kernel, apply
from ipvsd.model import AddDest, DelService, EditDest, Op, Service, SetTimeouts, StartDaemon, StopDaemon, SyncDaemon
from ipvsd.shell import persist, statefile
from ipvsd.shell.routes import RouteTable

log = logging.getLogger("ipvsd.reconcile")


@dataclass(frozen=True)
class Outcome:
    """What one pass did, for logs, metrics and tests."""

    applied: tuple[Op, ...] = ()
    drift: tuple[Op, ...] = ()
    refused: str | None = None
    error: KernelError | None = None
    failed: Op | None = None
    later: tuple[Op, ...] = ()  # ops after `failed` that the kernel carried out anyway (sent in its batch)
    duration: float = 0.0
    built: desired.Built | None = None
    read: bool = True  # observed by reading the kernel, not from the mirror
    observed: tuple[Service, ...] = ()  # the table as this pass saw it before applying
    sync: SyncReport | None = None  # None: the pass did not look at the sync daemons
    routes: RouteReport | None = None  # None: no [announce], or the routes could not be read
    due: float | None = None  # wall time a pass must run at (a grace ends, a ramp steps)
    ramps: Mapping[RealKey, slowstart.Ramp] = field(default_factory=dict)  # the slow starts after the pass


@dataclass(frozen=True)
class RouteReport:
    """What one pass did about the VIP routes."""

    done: tuple[tuple[str, str, str], ...] = ()  # (announce|withdraw, route, why)
    failed: tuple[tuple[str, str, str], ...] = ()  # (announce|withdraw, route, error) not said before
    held: frozenset[str] = frozenset()  # ipvsd's routes in the table after the pass
    why_not: Mapping[str, str] = field(default_factory=dict)  # configured routes not held, and why


@dataclass(frozen=True)
class SyncReport:
    """What one pass did about the sync daemons."""

    done: tuple[syncd.Step, ...] = ()
    failed: tuple[tuple[syncd.Step, str], ...] = ()  # failed with an error not said before, as said in the log
    daemons: tuple[SyncDaemon, ...] = ()  # the daemons as the pass left them (read, or mirrored)
    read: bool = True


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
    daemons: list[SyncDaemon] | None = None  # the sync daemons after the last pass (None: never read)
    sync_errors: dict[int, str] = field(default_factory=dict)  # by daemon state: the last error, said once
    sync_failed: set[StartDaemon | StopDaemon] = field(default_factory=set)  # since the last read: wait for it
    read_error: str | None = None  # the daemons could not be read: said once
    timeouts_error: str | None = None
    route_factory: Callable[[Announce], RouteTable] = RouteTable.of
    route_table: RouteTable | None = None  # the table of the [announce] in force (None: none yet)
    routes: RouteReport | None = None  # the routes after the last pass that read them
    route_errors: dict[str, str] = field(default_factory=dict)  # by route ("" for reading): the last error, said once
    refused: str | None = None  # the guard's refusal, said once while it stands
    op_error: str | None = None  # the failed op of the last pass, as said (a retry failing alike is not said)
    writer: persist.Writer = field(init=False)  # the state file's writes (a failure is said once and retried)
    last: decide.Decision | None = None  # the last pass's decision: the next reuses what still holds of it

    def __post_init__(self) -> None:
        self.writer = persist.Writer(self.state_path, "ownership, drains, quorum and ramps")

    def load_state(self) -> None:
        """Read the state file. One that cannot be decoded (garbage, truncated, wrong types, a directory) is moved
        aside and the daemon starts without it, as on a first start: nothing is owned, so nothing is deleted,
        and the services the config names are adopted as they are in the kernel; the next pass writes a good
        file. Only an error reading the directory itself is left to the caller."""
        try:
            self.memory = statefile.load(self.state_path)
        except statefile.Corrupt as e:
            aside = statefile.set_aside(self.state_path)
            log.error("%s; starting without it (ownership of services no longer configured, drain and ramp starts "
                      "are forgotten)%s", e, f", kept as {aside}" if aside else "")
            self.writer.pending = True  # write a good one at the first pass, even if nothing changes

    async def reconcile(self, config: Config, health: Mapping[RealKey, RealHealth], *,
                        maintenance: frozenset[MaintenanceKey] = frozenset(),
                        resolved: Mapping[str, str] | None = None, fresh: bool = True,
                        director_since: float | None = None) -> Outcome:
        """Bring the kernel to what `config` and `health` ask, touching only what ipvsd owns."""
        t0 = self.mono()
        self.passes += 1
        read = fresh or self.mirror is None
        observed = await self._read_table(config) if read else list(self.mirror or ())
        daemons = await self._read_daemons() if read else self.daemons
        routes = self._read_routes(config.announce)

        def decided() -> decide.Decision:
            return decide.decide(config, health, observed, self.memory, now=self.wall(), maintenance=maintenance,
                                 resolved=resolved, force=self.force, daemons=daemons, routes=routes,
                                 director_since=director_since, reuse=self.last)

        d = decided()
        if d.plan.counted and not read:  # a drain waits for connections to end: the mirror's counters are stale
            read = True
            observed = await self._read_table(config)
            daemons = await self._read_daemons()
            d = decided()
        self.last = d
        self.reads += read
        if read:
            self.daemons = daemons
        done: list[tuple[str, str, str]] = []
        failed: list[tuple[str, str, str]] = []
        if d.routes is not None:  # withdraw before the table's ops take anything out
            self._route_steps("withdraw", d.routes.withdraw, done, failed)
        out = await self._table(d, observed, read, t0)
        if d.routes is not None and out.error is None and out.refused is None:
            self._route_steps("announce", d.routes.announce, done, failed)
        sync = await self._sync(d, daemons, read)
        if d.routes is not None:
            held = (frozenset(routes or ()) - {r for a, r, _ in done if a == "withdraw"}) \
                | {r for a, r, _ in done if a == "announce"}
            self.routes = RouteReport(tuple(done), tuple(failed), held, d.routes.why_not)
        return replace(out, sync=sync, duration=self.mono() - t0, routes=self.routes if routes is not None else None,
                       due=d.due, ramps=d.ramps)

    async def _read_table(self, config: Config) -> list[Service]:
        """The kernel's table, its services keyed by the configuration's key objects (`mirror.keyed`)."""
        return mirror.keyed(await self.kernel.services(), map(VirtualService.service_key, config.services))

    # --- VIP routes ---------------------------------------------------------------------------------------------

    def _read_routes(self, wanted: Announce | None) -> frozenset[str] | None:
        """ipvsd's routes in the [announce] table; None without [announce] or when they cannot be read (said
        once). A table left by an earlier configuration (another table, protocol or device; none) is emptied
        of ipvsd's routes first."""
        old = self.route_table
        if old is not None and (wanted is None or (old.table, old.protocol, old.device)
                                != (wanted.table, wanted.protocol, wanted.device)):
            self.withdraw_routes("[announce] changed")
            self.route_table = None
            self.routes = None
        if wanted is None:
            return None
        if self.route_table is None:
            self.route_table = self.route_factory(wanted)
        try:
            found = frozenset(self.route_table.read())
        except OSError as e:
            self._route_error("", f"cannot read the routes of table {wanted.table}: {_strerror(e)}")
            return None
        self.route_errors.pop("", None)
        return found

    def _route_steps(self, action: str, steps: tuple[tuple[str, str], ...], done: list[tuple[str, str, str]],
                     failed: list[tuple[str, str, str]]) -> None:
        assert self.route_table is not None
        t = self.route_table
        for route, why in steps:
            try:
                (t.add if action == "announce" else t.delete)(route)
            except OSError as e:
                said = self._route_error(route, f"cannot {action} {route} (table {t.table} proto {t.protocol}): "
                                                f"{_strerror(e)}")
                if said is not None:
                    failed.append((action, route, said))
                continue
            self.route_errors.pop(route, None)
            done.append((action, route, why))
            log.log(logging.WARNING if action == "withdraw" else logging.INFO, "%s %s: %s   (ip route %s %s "
                    "table %d proto %d)", action, route, why, "add" if action == "announce" else "del", route,
                    t.table, t.protocol)

    def _route_error(self, key: str, text: str) -> str | None:
        if self.route_errors.get(key) == text:
            log.debug("%s (again)", text)
            return None
        log.error("%s; tried again at each pass", text)
        self.route_errors[key] = text
        return text

    def withdraw_routes(self, why: str) -> list[str]:
        """Delete every route of ipvsd's in the current table (a stop, a changed [announce]); errors are logged."""
        t = self.route_table
        if t is None:
            return []
        gone: list[str] = []
        try:
            held = sorted(t.read(), key=announce.route_order)
        except OSError as e:
            log.error("cannot read the routes of table %d to withdraw them: %s", t.table, _strerror(e))
            return gone
        for route in held:
            try:
                t.delete(route)
            except OSError as e:
                log.error("cannot withdraw %s (table %d proto %d): %s", route, t.table, t.protocol, _strerror(e))
                continue
            log.warning("withdraw %s: %s   (ip route del %s table %d proto %d)", route, why, route, t.table,
                        t.protocol)
            gone.append(route)
        return gone

    async def _table(self, d: decide.Decision, observed: list[Service], read: bool, t0: float) -> Outcome:
        """Apply the table's plan (the sync daemons' ownership is persisted with it)."""
        # Compared whole first, in C (the entries' hashes are kept, the keys the same objects): a pass that
        # changed no quorum, nearly all of them, takes no Python step per service.
        for skey, has in d.built.quorum.items() if d.built.quorum != self.memory.quorum else ():
            if self.memory.quorum.get(skey) not in (None, has):
                log.warning("%s quorum %s", skey.label(), "regained: fallback out" if has else "lost: fallback in")
        p = d.plan
        now = d.now
        for (skey, dkey), ramp in sorted(d.ramps.items()):
            if (skey, dkey) not in self.memory.ramps:
                log.info("slow start: real %s in %s ramps to weight %d over %gs, in %d steps (until %s)", dkey,
                         skey.label(), ramp.target, ramp.period, slowstart.STEPS,
                         time.strftime("%H:%M:%S", time.localtime(ramp.until)))
        # Ownership and drains are written before the kernel changes, so a crash mid-apply still knows
        # every service it may have created.
        self._remember(decide.planned(self.memory, d))
        if p.refused:
            # A refusal stands until health, the config or --force move: said when it starts or changes, not
            # every pass (status and the metrics show it meanwhile).
            if p.refused != self.refused:
                log.error("plan refused (nothing applied): %s; %d ops withheld; run with --force to allow",
                          p.refused, len(p.withheld))
            self.refused = p.refused
            self.mirror = observed
            return Outcome(refused=p.refused, duration=self.mono() - t0, built=d.built, read=read,
                           observed=tuple(observed))
        self.refused = None
        drift = set(p.drift)
        # Sent in batches, cut at the plan's phases: a failure stops the phases after it, as op by op did.
        batch = await self.kernel.apply_many(p.ops, p.cuts) if p.ops else Batch()
        applied = list(batch.applied)
        for op in applied:
            log.info("ipvsadm %s%s", op, "   (drift repair)" if op in drift else _ramp_note(op, d.ramps, now))
        if batch.failed is not None:
            # A failure the kernel keeps returning is retried with backoff: said when it starts or changes, not
            # at every retry (the metrics and the kernel-error events count each attempt).
            text = f"ipvsadm {batch.failed} failed: {batch.error}"
            if text != self.op_error:
                log.error("%s; retried with backoff, the rest of the table stays as it is", text)
            else:
                log.debug("%s (again)", text)
            # The kernel carries out a whole batch: what followed the failure in it is said as done.
            for op in batch.later:
                log.warning("ipvsadm %s   (in the failed op's batch: carried out all the same)", op)
            for e in batch.later_errors:
                log.log(logging.ERROR if text != self.op_error else logging.DEBUG,
                        "ipvsadm %s failed too (in the same batch): %s", e.op, e)
            self.op_error = text
            self.mirror = None  # the kernel is not what we think: read it next time
            return Outcome(applied=tuple(applied), drift=tuple(o for o in applied if o in drift), error=batch.error,
                           failed=batch.failed, later=batch.later, duration=self.mono() - t0, built=d.built,
                           read=read, observed=tuple(observed))
        self.op_error = None
        self.memory = decide.applied(self.memory, d)
        self.mirror = mirror.patched(observed, applied) if applied else observed
        if applied:  # the services the ops reached, as the mirror has them now, need no comparison next pass
            self.last = replace(d, plan=plan_settled(d.plan, d.built.table, self.mirror))
        return Outcome(applied=tuple(applied), drift=tuple(p.drift), duration=self.mono() - t0, built=d.built,
                       read=read, observed=tuple(observed))

    # --- connection-sync daemons ------------------------------------------------------------------------------

    async def _read_daemons(self) -> list[SyncDaemon] | None:
        """The sync daemons as the kernel has them; None (and said once) when they cannot be read."""
        try:
            found = await self.kernel.daemons()
        except KernelError as e:
            if self.read_error != str(e):
                log.error("cannot read the connection-sync daemons: %s; they are left as they are", e)
            self.read_error = str(e)
            return None
        self.read_error = None
        return found

    async def _sync(self, d: decide.Decision, daemons: list[SyncDaemon] | None, read: bool) -> SyncReport | None:
        """Carry out the sync daemons' steps; a failure is said once and waits for the next fresh pass."""
        plan = d.sync
        if plan is None:
            return None
        if read:
            self.sync_failed.clear()
        running = {x.state: x for x in daemons or ()}
        done: list[syncd.Step] = []
        failed: list[tuple[syncd.Step, str]] = []
        waiting: list[syncd.Step] = []
        for step in plan.steps:
            if any(op in self.sync_failed for op in step.ops):
                waiting.append(step)  # failed since the last read of the kernel: retried at the next (the resync)
                continue
            try:
                for op in step.ops:
                    await apply(self.kernel, op)
                    if isinstance(op, StopDaemon):
                        running.pop(op.state, None)
                    else:
                        running[op.daemon.state] = op.daemon
            except KernelError as e:
                self.sync_failed.update(step.ops)
                waiting.append(step)
                said = self._sync_failed(step, e)
                if said is not None:
                    failed.append((step, said))
                continue
            done.append(step)
            self.sync_errors.pop(step.daemon.state, None)
            level = logging.WARNING if step.action in ("repair", "replace") else logging.INFO
            log.log(level, "%s%s", step.why, "".join(f"   (ipvsadm {op})" for op in step.ops))
        self.daemons = [running[k] for k in sorted(running)]
        kept = syncd.settled(self.memory.daemons, done, waiting)
        if kept != self.memory.daemons:
            self._remember(replace(self.memory, daemons=kept))
        return SyncReport(tuple(done), tuple(failed), tuple(self.daemons), read)

    def _sync_failed(self, step: syncd.Step, e: KernelError) -> str | None:
        """Log a failed step once per distinct error; return the error as said (None: said before)."""
        what = {"stop": "stop", "release": "release"}.get(step.action, "start")
        text = f"cannot {what} the {syncd.describe(step.daemon)}: {e}{_hint(e.errno, step)}"
        if self.sync_errors.get(step.daemon.state) == text:
            log.debug("%s (again)", text)
            return None
        log.error("%s; tried again at each resync, the service table is managed meanwhile", text)
        self.sync_errors[step.daemon.state] = text
        return text

    async def stop_daemons(self) -> list[syncd.Step]:
        """At a clean stop: stop the sync daemons ipvsd owns (and still are as it recorded); others stay."""
        if not self.memory.daemons:
            return []
        found = await self._read_daemons()
        if found is None:
            return []
        plan = syncd.decide(None, found, self.memory.daemons)
        done = []
        for step in plan.steps:
            try:
                for op in step.ops:
                    await apply(self.kernel, op)
            except (OSError, KernelError) as e:
                log.error("cannot stop the %s: %s", syncd.describe(step.daemon), e)
                continue
            log.info("%s   (clean stop)", step.why.replace("no longer configured", "clean stop"))
            done.append(step)
        self._remember(replace(self.memory, daemons=syncd.settled(plan.owned, done)))
        return done

    # --- connection timeouts ------------------------------------------------------------------------------

    async def set_timeouts(self, wanted: LvsTimeouts | None) -> SetTimeouts | None:
        """Give the kernel the configured connection timeouts (start, reload); a failure is said once."""
        if wanted is None:
            return None
        try:
            now = await self.kernel.timeouts()
            op = decide.timeouts(wanted, now)
            if op is None:
                self.timeouts_error = None
                return None
            await apply(self.kernel, op)
        except KernelError as e:
            if self.timeouts_error != str(e):
                log.error("cannot set the IPVS connection timeouts: %s", e)
            self.timeouts_error = str(e)
            return None
        self.timeouts_error = None
        t = op.timeouts
        changes = [f"{name} {old} -> {new}" for name, old, new in (("tcp", now.tcp, t.tcp),
                                                                  ("tcpfin", now.tcp_fin, t.tcp_fin),
                                                                  ("udp", now.udp, t.udp)) if new]
        log.info("IPVS connection timeouts: %s   (ipvsadm %s)", ", ".join(changes), op)
        return op

    def shift(self, jump: float) -> None:
        """The wall clock stepped by `jump` seconds: move the starts of the drains, ramps and graces under way
        with it, so each lasts what it was meant to (`ipvsd.shell.clock`)."""
        m = self.memory
        self._remember(replace(m, drains={k: t + jump for k, t in m.drains.items()},
                               ramps={k: t + jump for k, t in m.ramps.items()},
                               lost_at={k: t + jump for k, t in m.lost_at.items()}))

    def _remember(self, memory: decide.Memory) -> None:
        """Keep `memory` and save it; a save that fails (a full or read-only state directory) never stops the
        pass: the table is managed from memory and the file written again at the next pass."""
        persisted = replace(memory, previous=self.memory.previous)
        if persisted != self.memory or self.writer.pending:
            self.writer.write(lambda: statefile.save(self.state_path, persisted))
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


def _ramp_note(op: Op, ramps: Mapping[RealKey, slowstart.Ramp], now: float) -> str:
    """Why an op sets a weight below the configured one: the step of the real's slow start."""
    if not isinstance(op, AddDest | EditDest) or (ramp := ramps.get((op.service, op.key))) is None:
        return ""
    return f"   (slow start {ramp.step(now)}/{slowstart.STEPS} to {ramp.target})"


def _strerror(e: OSError) -> str:
    return f"{e.strerror} (errno {e.errno})" if e.errno is not None and e.strerror else str(e)


def _hint(err: int, step: syncd.Step) -> str:
    """The likely cause of a sync daemon's errno, in the operator's terms."""
    ifn = step.daemon.mcast_ifn
    return {errno.ENODEV: f" (is there an interface {ifn}?)",
            errno.EEXIST: " (one of that kind already runs)",
            errno.EINVAL: " (the kernel refused its settings)"}.get(err, "")
