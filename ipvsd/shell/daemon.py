"""`ipvsd run`: the daemon's wiring — configurations in, probes and reconcile passes run, events out.

Level-triggered: every trigger (a health transition, a first settled result, a config change, a name that
resolves anew, the resync timer) only marks the table dirty; the loop then runs one full pass (observe,
decide, apply). Passes never overlap, and a burst of triggers becomes one pass. The kernel is read at start,
every resync interval and after a failure; the passes in between observe through `ipvsd.core.mirror`.

A configuration (at start, SIGHUP, a file change, `ipvsd reload`) is prepared whole first — loaded, names
resolved or marked unresolved, the probe plan built — and swapped in in one step that cannot fail half-way;
anything that fails before the swap leaves the running configuration as it was and is reported. The
net.ipv4.vs.* sysctls and the connection timeouts are set after each swap (start, reload) and the sysctls read
back at each resync (`ipvsd.shell.sysctl`); the sync daemons are part of every pass. What happens
is published as typed events (`ipvsd.shell.bus`); metrics, the event log and the live view subscribe, and the
control socket reaches the daemon only through `ipvsd.shell.control_api.Commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipvsd import config as configmod
from ipvsd import privileges
from ipvsd.checks import external, make_probe
from ipvsd.checks.base import Probe, ProbeResult
from ipvsd.config.schema import Announce, Config, Settings
from ipvsd.core import maintenance as maint
from ipvsd.core import roles
from ipvsd.core import view as status
from ipvsd.core.health import HealthState, Transition
from ipvsd.core.maintenance import DIRECTOR, MaintenanceInfo, MaintenanceKey
from ipvsd.core.probes import ProbeKey, ProbePlan, RealHealth, RealKey, health_of, literal, patches, plan_probes
from ipvsd.errors import ConfigError, IpvsdError, IpvsMissing
from ipvsd.kernel import Kernel
from ipvsd.shell import bus, fdlimit, gcpolicy, resolver
from ipvsd.shell.clock import StepWatch
from ipvsd.shell.config_watch import ConfigWatch
from ipvsd.shell.control import ControlServer, socket_path
from ipvsd.shell.control_api import ControlApi
from ipvsd.shell.event_log import EventLog
from ipvsd.shell.kmodules import refused_schedulers, scheduler_available
from ipvsd.shell.live_view import LiveView
from ipvsd.shell.maintenance_store import Store, from_dir
from ipvsd.shell.metrics import Metrics, parse_listen, serve
from ipvsd.shell.reconciler import Outcome, Reconciler
from ipvsd.shell.routes import RouteTable
from ipvsd.shell.scheduler import GRACE, Scheduler
from ipvsd.shell.sdnotify import Notifier
from ipvsd.shell.sysctl import ROOT as SYSCTL_ROOT
from ipvsd.shell.sysctl import Sysctls

log = logging.getLogger("ipvsd.daemon")
BACKOFF_MAX = 30.0
PACE_MAX = 5.0  # longest wait forced after a slow pass (see run)
PASS_WAIT = 15.0  # how long drain/undrain wait for the pass that carries them out
COLD_START_MAX = 30.0  # longest a cold start waits for the first round of checks
RESYNC_SLACK = 0.001  # seconds early a resync timer may fire and still count as the resync


@dataclass
class Options:
    config_path: str
    format: configmod.Format | None = None
    state_dir: str | None = None
    resync: float | None = None
    watch: bool | None = None
    force: bool = False
    clean_stop: bool | None = None
    socket: str | None = None
    metrics_listen: str | None = None  # None: the config's; "": no endpoint
    events_file: str | None = None


# Follows the director's addresses: called with the daemon's callback, returns what runs until cancelled
# (`ipvsd.shell.addresses.AddressWatcher(callback).run()` in `ipvsd run`).
AddressFollower = Callable[[Callable[[roles.Observed], None]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Prepared:
    """A configuration made ready to swap in: its names resolved (or not), its probe plan built."""

    config: Config
    resolved: dict[str, str]
    probes: ProbePlan
    fds: int  # file descriptors its probes may need at once
    warnings: tuple[str, ...] = ()
    failed: frozenset[str] = frozenset()  # names that did not resolve this time


def prepare(config: Config, previous: dict[str, str], *, lookup: resolver.Lookup = resolver.getaddrinfo,
            warnings: tuple[str, ...] = (), quiet: frozenset[str] = frozenset(),
            routes: Callable[[Announce], RouteTable] | None = None, path: str | None = None,
            plan: ProbePlan | None = None, names: Mapping[str, int] | None = None,
            users: Collection[str] | None = None) -> Prepared:
    """Resolve the names of `config` and build its probe plan (blocking: DNS; run it in a thread), reusing the
    running `plan`'s part for every service the reload left as it was; with [announce] and `routes`, refuse a
    routing table that is not ipvsd's to use. `names` and `users`: the config's host names and check users
    when the caller has worked them out (`resolver.names_of`, `external.users_of`)."""
    if config.announce is not None and routes is not None:
        try:
            conflict = routes(config.announce).conflict()
        except OSError:
            conflict = None  # the passes say it, and retry; the table is managed meanwhile
        if conflict is not None:
            key, _, message = conflict.partition(": ")
            raise ConfigError(message, path=path, key=key)
    for user in sorted(external.users_of(config) if users is None else users):  # refused whole now, not at each check
        if (problem := external.user_problem(user)) is not None:
            raise ConfigError(problem, path=path)
    found = resolver.resolve(resolver.names_of(config, plan) if names is None else names, previous, lookup, quiet)
    resolved = found.addresses

    def resolve(name: str) -> str | None:
        return literal(name) or resolved.get(name)

    probes = plan_probes(config, resolve=resolve, previous=plan)
    fds = fdlimit.needed(probes.jobs.values(), config.settings.limits.check_concurrency)
    return Prepared(config, resolved, probes, fds, warnings, frozenset(found.failed))


def restart_only_changes(old: Settings, new: Settings) -> tuple[str, ...]:
    """The settings a reload changed that take effect only at the next start."""
    return tuple(sorted(name for name in Settings.RESTART_ONLY if getattr(old, name) != getattr(new, name)))


@dataclass
class _Passes:
    """Pass numbers: started, and done (with the event a waiter wakes on)."""

    started: int = 0
    done: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def finished(self, number: int) -> None:
        self.done = number
        self.event.set()
        self.event = asyncio.Event()


class Daemon:
    """`ipvsd run`: owns the scheduler, the reconciler and the triggers between them."""

    def __init__(self, opts: Options, config: Config, kernel_factory: Callable[[], Kernel], *,
                 wall: Callable[[], float] = time.time, lookup: resolver.Lookup = resolver.getaddrinfo,
                 probe_factory: Callable[[Any], Probe] = make_probe,
                 addresses: AddressFollower | None = None, sysctl_root: Path = SYSCTL_ROOT,
                 route_factory: Callable[[Announce], RouteTable] = RouteTable.of,
                 schedulers: Callable[[str], bool | None] = scheduler_available,
                 reading: configmod.Reading | None = None) -> None:
        self.opts = opts
        self.config = config
        # The last good reading of the files: a reload parses and validates only the services whose text changed.
        self.reading = reading
        self.kernel_factory = kernel_factory
        self.wall = wall
        self.lookup = lookup
        self.schedulers = schedulers
        self.probe_factory = probe_factory
        self.notifier = Notifier()
        self.bus = bus.Bus()
        self.dirty = asyncio.Event()
        self.read_wanted = False  # the next pass reads the kernel (an operator asked for the current table)
        self.stopping = asyncio.Event()
        self.swapped = asyncio.Event()  # a configuration (or new addresses) was swapped in
        self.reconfigured = asyncio.Event()  # the same, for the loop: the pass that applies it is not paced
        self.resolved: dict[str, str] = {}
        self.probes = ProbePlan.empty()
        self.settled: set[ProbeKey] = set()
        self.last: Outcome | None = None
        self.passes = _Passes()
        self.ready = False  # READY=1 sent: a pass has programmed the table
        self.settle_due = False  # a configuration was swapped in: collect and freeze after the next pass
        self.reloads = {"ok": 0, "error": 0, "unchanged": 0}
        state_dir = Path(opts.state_dir or config.settings.state_dir)
        self.state_path = state_dir / "state.json"
        self.store = Store(state_dir / "maintenance.json")
        self.from_dir: dict[MaintenanceKey, MaintenanceInfo] = {}
        self.events = EventLog(opts.events_file)
        self.metrics: Metrics | None = None
        self.view: LiveView | None = None
        self.scheduler: Scheduler | None = None
        self.reconciler: Reconciler | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.control: ControlServer | None = None  # the control socket, once listening
        self.http: asyncio.Server | None = None  # the metrics endpoint, once listening
        self.socket_error: str | None = None  # why the control socket cannot be made again, as said
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = resolver.DaemonThreads()  # name lookups: a stop never waits for a resolver timeout
        self.failed_names: frozenset[str] = frozenset()  # names the running configuration could not resolve
        self.addresses = addresses  # None: VIP roles are not observed (unit tests without a network namespace)
        self.observed: roles.Observed | None = None  # the director's addresses, once read
        self.roles: dict[str, roles.VipRole] | None = None  # None: not assessed yet
        # What the roles were last assessed from (VIPs, addresses): the same inputs give the same roles again.
        self.assessed: tuple[frozenset[str], roles.Observed] | None = None
        self.sysctls = Sysctls(sysctl_root)
        self.route_factory = route_factory
        # Wall-clock steps, seen before each pass, against the monotonic clock of the same world as `wall`: the
        # system's for the system's wall clock (also under a test's virtual loop), else the loop's (a test's wall
        # clock is virtual time plus an offset it may step).
        self.clock = StepWatch(wall, time.monotonic if wall is time.time else self.mono)

    def mono(self) -> float:
        """The daemon's clock: the event loop's (a test's virtual-time loop drives it)."""
        return asyncio.get_running_loop().time()

    # --- triggers -----------------------------------------------------------------------------------------

    def wake(self, *, read: bool = False) -> None:
        """Ask for a pass soon; `read`: observe the kernel itself, not the mirror (see ipvsd.core.mirror)."""
        self.read_wanted = self.read_wanted or read
        self.dirty.set()

    def on_transition(self, key: ProbeKey, t: Transition) -> None:
        reals = self.probes.decides.get(key, ())
        if t.up:
            log.info("real %s: %s", key, t)
        else:
            log.warning("real %s: %s", key, t)
        self.bus.publish(bus.Transitioned(key, t, reals))
        self.dirty.set()

    def on_result(self, key: ProbeKey, result: ProbeResult, state: HealthState) -> None:
        self.bus.publish(bus.ProbeResulted(key, result, state))
        # A real whose first check completes leaves KEEP (adopted as the kernel had it): reconcile then too.
        if state.settled and key not in self.settled:
            self.settled.add(key)
            self.dirty.set()
            if len(self.settled) >= len(self.probes.jobs) and self.settled >= set(self.probes.jobs):  # O(1) first
                log.info("every check has a result: %s", self.summary())

    # --- VIP roles ----------------------------------------------------------------------------------------

    def on_addresses(self, observed: roles.Observed) -> None:
        """The director's addresses changed (or were read again): say which VIPs it holds now."""
        self.observed = observed
        self._assess_roles()

    def _assess_roles(self) -> None:
        if self.observed is None:
            return
        vips = roles.vips_of(self.config)
        if self.assessed is not None and self.assessed[0] == vips and self.assessed[1] is self.observed:
            return  # a reload that kept every VIP: nothing to assess (at 1,000 VIPs, 3 ms before its pass)
        self.assessed = (vips, self.observed)
        new, changes = roles.update(self.roles or {}, vips, self.observed, self.wall())
        if new == self.roles:
            return
        if self.roles is None:  # the first reading: one line, however many VIPs
            log.info("%s", roles.summary(new.values()))
        else:
            for c in changes:
                log.info("%s", c.describe())
        self.roles = new
        self.bus.publish(bus.RolesChanged(dict(new), changes))

    # --- configuration ------------------------------------------------------------------------------------

    async def _prepare(self, config: Config, warnings: tuple[str, ...] = (), *, again: bool = False) -> Prepared:
        """Prepare `config` in a thread; at once when it only patches the running probe plan and nothing in it
        can wait on the world: no host name to resolve, no check user to look up (the user database may be a
        directory server), no [announce] routing table to read. Then it is a few ms of computing at 10,000
        reals in the lab, where a thread of its own and the hand-overs cost 5 ms more. `again`: a periodic
        re-resolution, quiet about names that still fail."""
        names, users = resolver.names_of(config, self.probes), external.users_of(config)
        call = functools.partial(prepare, config, dict(self.resolved), lookup=self.lookup, warnings=warnings,
                                 quiet=self.failed_names if again else frozenset(),
                                 routes=None if again else self.route_factory,
                                 path=self.opts.config_path, plan=self.probes, names=names, users=users)
        if not names and not users and config.announce is None and patches(config, self.probes):
            return call()
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def _swap(self, p: Prepared, *, now: bool = False) -> None:
        """Make `p` the running configuration; the scheduler's update is the only step that may refuse."""
        assert self.scheduler is not None
        fdlimit.ensure(p.fds)
        self.scheduler.update(p.probes.jobs, now=now)
        old = self.config
        self.config, self.resolved, self.probes = p.config, p.resolved, p.probes
        self.failed_names = p.failed
        self.settled &= set(p.probes.jobs)
        if p.config.settings.limits.check_concurrency != old.settings.limits.check_concurrency:
            self.scheduler.resize(p.config.settings.limits.check_concurrency)
        if self.opts.watch is None and p.config.settings.watch_config != old.settings.watch_config:
            self._watch(p.config.settings.watch_config)
        for (skey, name), why in p.probes.unresolved.items():
            log.warning("real %s in %s is down: %s", name, skey.label(), why)
        for (skey, dkey), why in p.probes.down.items():
            log.warning("real %s in %s is down: %s", dkey, skey.label(), why)
        self._publish_snapshot()
        self._assess_roles()  # a reload may add or drop VIPs
        # Frozen after the pass that applies it (_loop), not now: the full collection costs 30-100 ms natively
        # at 10,000 reals (a second or more in the lab), and an edit should reach the kernel first.
        self.settle_due = True
        self.reconfigured.set()
        self.swapped.set()
        self.dirty.set()

    async def reload(self, why: str) -> bus.Reloaded:
        """Load the configuration again; apply it whole, or keep the running one and say why."""
        self.notifier.reloading()
        try:
            return await self._reload(why)
        finally:
            if self.ready:  # READY=1 ends the reload for systemd; before the first pass it would say too much
                self.notifier.ready(self.summary())

    async def _reload(self, why: str) -> bus.Reloaded:
        try:
            reading = await asyncio.to_thread(configmod.read, self.opts.config_path, self.opts.format,
                                              self.reading)
            config, warnings = reading.config, reading.warnings
            self.reading = reading
        except RecursionError:  # a reader's bug on hostile input; the running configuration must not pay for it
            log.error("reload (%s) rejected, the running configuration stays: the file is nested too deeply", why)
            return self._reloaded("error", why, "nested too deeply")
        except ConfigError as e:
            errors = [str(x) for x in getattr(e, "errors", [e])]
            for err in errors:
                log.error("reload (%s) rejected, the running configuration stays: %s", why, err)
            self.notifier.status(f"config error: {errors[0] if errors else e}")
            return self._reloaded("error", why, "; ".join(errors))
        except OSError as e:
            log.error("reload (%s) rejected, the running configuration stays: %s", why, e)
            return self._reloaded("error", why, str(e))
        refused = [str(e) for e in refused_schedulers(config, warnings, self.schedulers)]
        for err in refused:
            log.error("reload (%s) rejected, the running configuration stays: %s", why, err)
        if refused:
            self.notifier.status(f"config error: {refused[0]}")
            return self._reloaded("error", why, "; ".join(refused))
        if config == self.config:
            log.info("reload (%s): configuration unchanged", why)
            await self._apply_settings()  # a reload makes the configured sysctls win over a drift
            return self._reloaded("unchanged", why)
        try:
            prepared = await self._prepare(config, tuple(str(w) for w in warnings))
            old = self.config.settings
            self._swap(prepared)
        except Exception as e:  # whatever stops the preparation, the running configuration stays
            log.debug("reload (%s): preparation failed", why, exc_info=True)
            log.error("reload (%s) rejected, the running configuration stays: %s", why, e or type(e).__name__)
            return self._reloaded("error", why, str(e) or type(e).__name__)
        for w in prepared.warnings:
            log.warning("%s", w)
        await self._apply_settings()
        restart = restart_only_changes(old, config.settings)
        log.info("reload (%s): new configuration, %d services%s", why, len(config.services),
                 f"; {', '.join(restart)} changed and take effect at the next restart" if restart else "")
        return self._reloaded("ok", why, restart=restart)

    def _reloaded(self, outcome: str, why: str, error: str = "", *, restart: tuple[str, ...] = ()) -> bus.Reloaded:
        self.reloads[outcome] += 1
        event = bus.Reloaded(outcome, why, self.wall(), error, restart)
        self.bus.publish(event)
        return event

    def _watch(self, on: bool) -> None:
        """Start or stop following the config files."""
        if on and self.watcher is None:
            self.watcher = self._spawn(self._follow_files())
        elif not on and self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None

    async def _follow_files(self) -> None:
        """Reload when the config file or its drop-in directory changes, once the changed file is whole
        (`config_watch`); reloads come one after another, each reading whatever changed before it began."""
        due = asyncio.Event()
        watch = ConfigWatch(self.opts.config_path, due.set)
        try:
            watch.start()
        except OSError as e:
            log.error("cannot follow the config files' changes (%s); SIGHUP and `ipvsd reload` still reload",
                      e.strerror or e)
            return
        try:
            while not self.stopping.is_set():
                await self._until(due, None)
                if due.is_set():
                    due.clear()
                    await self.reload("file changed")
        finally:
            watch.close()

    async def _follow_names(self) -> None:
        """Resolve the config's names again: every dns_ttl, and at the check interval while one does not resolve."""
        while not self.stopping.is_set():
            self.swapped.clear()
            waits = [asyncio.ensure_future(self.swapped.wait()), asyncio.ensure_future(self.stopping.wait())]
            try:  # a swap brings other names (and just resolved them): start the wait again from there
                done, _ = await asyncio.wait(waits, timeout=self._names_due(), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if done or not resolver.names_of(self.config, self.probes):
                continue
            config = self.config
            try:
                prepared = await self._prepare(config, again=True)
            except Exception as e:  # the next round tries again; the running configuration stays meanwhile
                log.error("resolving names again failed: %s", e or type(e).__name__)
                continue
            if config is not self.config:
                continue  # a reload came in between (it resolved for itself)
            for name in sorted(self.failed_names - prepared.failed):  # the end of an outage, said as its start was
                log.info("%s resolves again (to %s)", name, prepared.resolved.get(name, "nothing"))
            self.failed_names = prepared.failed
            if prepared.resolved == self.resolved:
                continue
            for name in sorted(prepared.resolved.keys() | self.resolved.keys()):
                before, after = self.resolved.get(name), prepared.resolved.get(name)
                if before != after:
                    log.info("%s now resolves to %s (was %s)", name, after or "nothing", before or "unresolved")
            try:
                self._swap(prepared)
            except Exception as e:  # as a rejected reload: the running configuration and its probes stay
                log.error("new addresses not applied: %s", e or type(e).__name__)

    def _names_due(self) -> float:
        """Seconds until the names are resolved again: dns_ttl, or sooner while a name keeps a real down."""
        wait = self.config.settings.dns_ttl
        if not self.probes.unresolved and not self.probes.down:
            return wait
        for vs in self.config.services:
            skey = vs.service_key()
            for real in vs.reals:
                addr = literal(real.address) or self.resolved.get(real.address)
                if (skey, real.address) in self.probes.unresolved or (
                        addr is not None and (skey, real.dest_key(addr)) in self.probes.down):
                    wait = min([wait, *(c.interval for c in vs.checks_for(real))])
        return wait

    # --- the loop ------------------------------------------------------------------------------------------

    def health(self) -> dict[RealKey, RealHealth]:
        assert self.scheduler is not None
        return health_of(self.probes, self.scheduler.state)

    def summary(self) -> str:
        h = self.health() if self.scheduler is not None else {}
        up = sum(1 for v in h.values() if v.up and v.settled)
        unresolved = len(self.probes.unresolved)
        return (f"{len(self.config.services)} services, {up}/{len(h)} checked reals up"
                + (f", {unresolved} unresolved" if unresolved else ""))

    def collect_maintenance(self) -> frozenset[MaintenanceKey]:
        """Expire drains, read the maintenance_dir, publish what changed; the maintenance set of the next pass."""
        self.store.flush()  # a save that failed (a full disk) is tried again at each pass
        for e in self.store.expire(self.wall()):
            log.info("maintenance of %s expired", e.key.describe())
            self.bus.publish(bus.MaintenanceChanged("undrain", "expired", e))
        mdir = self.config.settings.maintenance_dir
        found = from_dir(mdir, self.resolved.get) if mdir else {}
        for k in found.keys() - self.from_dir.keys():
            log.info("maintenance_dir: %s in maintenance", k.describe())
            self.bus.publish(bus.MaintenanceChanged("drain", found[k].reason, found[k]))
        for k in self.from_dir.keys() - found.keys():
            log.info("maintenance_dir: %s out of maintenance", k.describe())
            self.bus.publish(bus.MaintenanceChanged("undrain", self.from_dir[k].reason, self.from_dir[k]))
        self.from_dir = found
        return frozenset(self.store.entries) | frozenset(found)

    def _publish_snapshot(self) -> None:
        assert self.scheduler is not None
        rec = self.reconciler
        built = self.last.built if self.last is not None else None
        self.bus.publish(bus.SnapshotTaken(bus.Snapshot(
            config=self.config, probes=self.probes, states=self.scheduler.states(), resolved=dict(self.resolved),
            quorum=dict(rec.memory.quorum) if rec is not None else {},
            fail_open=built.fail_open if built is not None else frozenset(),
            maintenance=maint.merged(self.store.entries.values(), self.from_dir.values()),
            sync=self._sync_rows(), sysctls=self.sysctls.status(), routes=self._route_rows(),
            ramps=self.last.ramps if self.last is not None else {})))

    def _route_rows(self) -> tuple[status.RouteStatus, ...]:
        rec = self.reconciler
        if rec is None or rec.routes is None or self.config.announce is None:
            return ()
        return status.route_status(rec.routes.held, rec.routes.why_not, rec.route_errors)

    def _director_since(self) -> float | None:
        """When `ipvsd drain --director` started, if it is in force."""
        entry = self.store.entries.get(DIRECTOR)
        return None if entry is None else entry.since

    async def run(self) -> int:
        kernel = self.kernel_factory()
        try:
            return await self._run(kernel)
        finally:
            with contextlib.suppress(OSError, IpvsdError):
                await kernel.close()

    async def _run(self, kernel: Kernel) -> int:
        # Without IPVS there is nothing to do: say so once and fail, as keepalived does (no probes, no sockets).
        try:
            await kernel.info()
        except IpvsMissing as e:
            log.error("%s", e)
            return 1
        except (OSError, IpvsdError) as e:
            missing = getattr(e, "errno", None) == errno.EPERM and not privileges.has(privileges.CAP_NET_ADMIN)
            log.error("cannot talk to the kernel's IPVS: %s%s", e, f" (IPVS needs CAP_NET_ADMIN, which ipvsd running "
                      f"as {privileges.whoami()} lacks: {privileges.UNIT_HINT})" if missing else "")
            return 1
        if os.geteuid() != 0:  # the unit's way: say who, and with what, once
            log.info("running as %s with %s", privileges.whoami(), privileges.names())
        loop = asyncio.get_running_loop()
        self.reconciler = Reconciler(kernel, self.state_path, force=self.opts.force, wall=self.wall, mono=self.mono,
                                     route_factory=self.route_factory)
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.reconciler.load_state()
            self.store.load()
        except (OSError, IpvsdError) as e:
            log.error("%s%s", e, _dir_hint(e, "the state directory"))
            return 1
        if self.store.entries:
            log.info("in maintenance: %s", ", ".join(k.describe() for k in sorted(self.store.entries)))
        # The daemon's collector settings from here, and what the start has made so far (the modules, the loaded
        # configuration) frozen: the preparation and the first pass of a large configuration allocate hundreds of
        # thousands of objects, and the default thresholds would walk all the others again and again meanwhile.
        # The first pass's settle (_loop) collects and freezes again, its garbage included.
        gcpolicy.tune()
        gcpolicy.freeze()
        try:
            first = await self._prepare(self.config)
        except Exception as e:  # said in one line, as a rejected reload is
            log.error("cannot start with this configuration: %s", e or type(e).__name__)
            return 1
        limits = self.config.settings.limits
        self.scheduler = Scheduler(on_transition=self.on_transition, on_result=self.on_result,
                                   concurrency=limits.check_concurrency, factory=self.probe_factory)
        self.view = LiveView(lambda: kernel.services(), mono=self.mono, wall=self.wall)
        self.metrics = Metrics(self.view.view)
        self.bus.subscribe(self.view.record, bus.ProbeResulted, bus.SnapshotTaken, bus.PassDone, bus.Reloaded,
                           bus.RolesChanged)
        self.bus.subscribe(self.metrics.record, bus.PassDone, bus.PassFailed, bus.Reloaded,
                           bus.SyncChanged, bus.SysctlChanged, bus.RouteChanged)
        self.bus.subscribe(self.events.record, bus.Transitioned, bus.PassDone, bus.PassFailed, bus.Reloaded,
                           bus.MaintenanceChanged, bus.RolesChanged, bus.SyncChanged, bus.SysctlChanged,
                           bus.RouteChanged)
        cold = not await self._ours_in_table(kernel)
        try:
            self._swap(first, now=cold)
        except Exception as e:  # a probe that cannot be built, say
            log.error("cannot start with this configuration: %s", e or type(e).__name__)
            await self.scheduler.close()
            return 1
        await self._apply_settings()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._signalled_reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.opts.watch is not None:
            self._watch(self.opts.watch)
        elif self.config.settings.watch_config:
            self._watch(True)
        self._spawn(self._follow_names())
        if self.addresses is not None:
            self._spawn(self.addresses(self.on_addresses))
        log.info("ipvsd running: %d services, resync every %gs, state in %s%s", len(self.config.services),
                 self._resync(), self.state_path, ", watching the config" if self.watcher is not None else "")
        servers = await self._serve()
        try:
            if cold:
                await self._first_round()
            await self._loop()
        finally:
            self.notifier.stopping()
            for server in servers:
                await server()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.scheduler.close()
            clean = self.opts.clean_stop if self.opts.clean_stop is not None else self.config.settings.clean_stop
            if self._withdraw_at_stop() and clean:
                await asyncio.sleep(self.config.announce.withdraw_delay if self.config.announce else 0)
            if clean:
                await self.reconciler.clean_stop()
                await self._stop_daemons()
            else:
                log.info("stopping; the IPVS table stays as it is")
            self.events.close()
        return 0

    async def _signalled_reload(self) -> None:
        await self.reload("SIGHUP")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A helper task (reload, watcher, names) ended: an exception there is a bug, logged where it happened."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("internal error in %s: %s", task.get_coro(), exc, exc_info=exc)

    def _resync(self) -> float:
        return self.opts.resync or self.config.settings.resync_interval

    async def _ours_in_table(self, kernel: Kernel) -> bool:
        """True when the table already holds a service ipvsd owns or is configured to make (a restart adopts it)."""
        assert self.reconciler is not None
        try:
            table = await kernel.services()
        except (OSError, IpvsdError):
            return True  # cannot tell: keep the behaviour of a restart, the passes will retry the kernel
        wanted = self.reconciler.memory.owned | {vs.service_key() for vs in self.config.services}
        return any(s.key in wanted for s in table)

    async def _first_round(self) -> None:
        """A cold start: wait until every probe has answered once, or its timeout has passed (bounded)."""
        if not self.probes.jobs:
            return
        bound = min(COLD_START_MAX, max(c.timeout for c in self.probes.jobs.values()) + GRACE + 0.5)
        jobs = set(self.probes.jobs)
        log.info("cold start: waiting up to %.1fs for the first result of %d checks", bound, len(jobs))
        deadline = self.mono() + bound
        while not self.stopping.is_set() and not self.settled >= jobs:
            left = deadline - self.mono()
            if left <= 0:
                log.warning("cold start: %d checks have no result after %.1fs; programming the table without them",
                            len(jobs - self.settled), bound)
                return
            self.dirty.clear()
            await self._wait(left)
            jobs = set(self.probes.jobs)

    async def _serve(self) -> list[Callable[[], Awaitable[None]]]:
        """Open the control socket and the metrics endpoint; return their closers (a failure is logged)."""
        assert self.view is not None and self.metrics is not None
        opts, settings = self.opts, self.config.settings
        closers: list[Callable[[], Awaitable[None]]] = []
        self.metrics.loaded(at=self.wall())
        path = socket_path(socket=opts.socket, state_dir=opts.state_dir, configured=settings.control_socket)
        api = ControlApi(self.view, self, config_path=opts.config_path, wall=self.wall)
        server = ControlServer(path, api.handlers(), self.events.subscribe)
        try:
            await server.start()
            self.control = server
            closers.append(server.close)
            log.info("control socket %s", path)
        except (OSError, IpvsdError) as e:
            log.error("control socket %s not available: %s%s", path, e, _dir_hint(e, "the socket's directory"))
        listen = opts.metrics_listen
        try:
            where = parse_listen(settings.metrics_listen if listen is None else listen)
        except ValueError as e:
            log.error("%s; no metrics endpoint", e)
            where = None
        if where is not None:
            try:
                http = await serve(self.metrics, *where, before_scrape=self.view.refresh_kernel)
            except OSError as e:
                log.error("metrics endpoint %s not available: %s%s", _hostport(*where), e.strerror or e,
                          _bind_hint(e, where[1]))
            else:
                self.http = http
                log.info("metrics on http://%s/metrics", _hostport(*where))

                async def close_http() -> None:
                    http.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(http.wait_closed(), 2)

                closers.append(close_http)
        return closers

    async def _loop(self) -> None:
        assert self.reconciler is not None
        backoff = 0.0
        synced = False
        paced_until = 0.0
        read_due = 0.0  # when the next pass reads the kernel; passes before it plan against the mirror
        failing = 0  # passes failed in a row (by the kernel), for the line that says they work again
        pass_error: str | None = None  # the last pass failure said (a retry failing alike is not said again)
        while not self.stopping.is_set():
            await self._pace(paced_until - self.mono())
            if self.stopping.is_set():
                break
            self.reconfigured.clear()
            self.dirty.clear()
            self._follow_clock()
            resync = self._resync()
            delay = resync
            t0 = self.mono()
            # asyncio runs a timer up to its clock resolution early: a wake-up that early is the resync, not a
            # mirror pass followed by a wait of a few nanoseconds (on a virtual clock, a wait that never ends)
            fresh = t0 + RESYNC_SLACK >= read_due or backoff > 0 or self.read_wanted
            self.read_wanted = False
            self.passes.started += 1
            number = self.passes.started
            try:
                settled = self.settled >= set(self.probes.jobs)
                out = await self.reconciler.reconcile(self.config, self.health(), resolved=self.resolved,
                                                      maintenance=self.collect_maintenance(), fresh=fresh,
                                                      director_since=self._director_since())
                if out.read:
                    read_due = t0 + resync
                self.last = out
                self._after_pass(out)
                self._publish_snapshot()
                self.bus.publish(bus.PassDone(
                    number, out.duration, out.applied, out.drift, out.refused, out.failed,
                    None if out.error is None else str(out.error), out.observed if out.read else None,
                    bool(out.applied)))
                ok = out.error is None
                if settled and not synced and ok and out.refused is None:
                    synced = True
                    log.info("table reconciled with every check's result (%d ops in that pass)", len(out.applied))
                backoff = 0.0 if ok else min(BACKOFF_MAX, max(0.5, backoff * 2))
                delay = backoff or max(0.0, read_due - self.mono())
                if out.due is not None:  # a grace ends ([announce]: withdraw before you drain)
                    delay = min(delay, max(0.0, out.due - self.wall()))
            except (OSError, IpvsdError) as e:  # the kernel socket itself failed: retry, never die
                ok = False
                backoff = min(BACKOFF_MAX, max(0.5, backoff * 2))
                delay = backoff
                # Said when the failure starts or changes; each retry (every 30 s at most) only at debug level.
                if str(e) != pass_error:
                    log.error("reconcile failed: %s; retrying in %.1fs, then with backoff up to %gs; the table "
                              "stays as it is meanwhile", e, delay, BACKOFF_MAX)
                else:
                    log.debug("reconcile failed again: %s; retrying in %.1fs", e, delay)
                pass_error = str(e)
                self.bus.publish(bus.PassFailed(number, self.mono() - t0, str(e)))
            if ok:
                if failing:
                    log.info("reconcile works again after %d failed passes", failing)
                failing, pass_error = 0, None
            else:
                failing += 1
            self.passes.finished(number)
            # A pass holds the event loop (and the probes) for as long as it takes: the next one waits as long,
            # so passes never take more than half of the loop however fast triggers come (a reload's pass
            # excepted: see _pace).
            spent = self.mono() - t0
            paced_until = self.mono() + min(spent, PACE_MAX)
            if backoff:  # after a failure, no trigger brings the next attempt forward
                paced_until = max(paced_until, self.mono() + backoff)
            await self._keep_socket()
            if not self.ready and ok:  # READY=1 once a pass has programmed the table (or found nothing to do)
                self.notifier.ready(self.summary())
                self.ready = True
            elif self.ready:
                self.notifier.status(self.summary())
            if self.ready and self.settle_due:  # the configuration this pass applied, frozen (see _swap)
                self.settle_due = False
                gcpolicy.settle()
            await self._wait(delay)

    def _follow_clock(self) -> None:
        """Before each pass: when the wall clock stepped, move the starts of what is under way by the step."""
        assert self.reconciler is not None
        jump = self.clock.step()
        if not jump:
            return
        log.warning("the wall clock stepped %s by %.0fs; drains, slow starts and graces under way keep their "
                    "length", "forward" if jump > 0 else "back", abs(jump))
        self.reconciler.shift(jump)
        self.store.shift(jump)

    async def _keep_socket(self) -> None:
        """After each pass (so within resync_interval, or at once after SIGHUP): make the control socket again
        if its file or directory was removed, so `ipvsd status` and `systemctl reload` work again without a
        restart. Said once when it is made again, once per distinct error while it cannot be."""
        if self.control is None:
            return
        try:
            if await self.control.ensure():
                log.warning("control socket %s had been removed; listening there again", self.control.path)
            self.socket_error = None
        except (OSError, IpvsdError) as e:
            text = str(e) if isinstance(e, IpvsdError) else (e.strerror or str(e))
            if text != self.socket_error:
                log.error("control socket %s was removed and cannot be made again: %s; tried again after each "
                          "pass", self.control.path, text)
            self.socket_error = text

    async def _pace(self, delay: float) -> None:
        """Wait out the pace a slow pass left (see _loop), unless stopping or a new configuration is swapped in:
        an operator's edit reaches the kernel at once, not up to PACE_MAX later (a pass over 10,000 reals takes
        seconds in the lab). Reloads are no storm the probes need that protection from: file changes are
        debounced, and each reload's own work comes before its pass."""
        if delay > 0 and not self.reconfigured.is_set():
            await self._until(self.reconfigured, delay)

    async def _wait(self, delay: float) -> None:
        """Sleep until a trigger, a stop, or `delay` seconds."""
        await self._until(self.dirty, delay)

    async def _until(self, event: asyncio.Event, delay: float | None) -> None:
        """Sleep until `event` is set, a stop, or `delay` seconds."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # --- sync daemons, sysctls and timeouts: what runs beside the table --------------------------------------

    async def _apply_settings(self) -> None:
        """Set the configured sysctls and connection timeouts (start, reload); a failure is logged, never fatal."""
        assert self.reconciler is not None
        for change in self.sysctls.apply(self.config.sysctl):
            self.bus.publish(change)
        try:
            await self.reconciler.set_timeouts(self.config.lvs_timeouts)
        except (OSError, IpvsdError) as e:  # the kernel socket itself: the passes say it too
            log.error("cannot set the IPVS connection timeouts: %s", e)
        self._publish_snapshot()  # status and metrics show the sysctls as set now, not at the next pass

    def _after_pass(self, out: Outcome) -> None:
        """Publish what a pass did to the sync daemons and routes; after a read of the kernel, read the sysctls
        back."""
        if out.routes is not None:
            for action, route, why in out.routes.done:
                self.bus.publish(bus.RouteChanged(action, route, why))
            for _action, route, error in out.routes.failed:
                self.bus.publish(bus.RouteChanged("failed", route, error))
        if out.sync is not None:
            for step in out.sync.done:
                self.bus.publish(bus.SyncChanged(step.action, step.daemon, step.why))
            for step, error in out.sync.failed:
                self.bus.publish(bus.SyncChanged("failed", step.daemon, error))
        if out.read:
            for change in self.sysctls.check():
                self.bus.publish(change)

    def _sync_rows(self) -> tuple[status.SyncDaemonStatus, ...]:
        rec = self.reconciler
        if rec is None:
            return ()
        return status.sync_status(self.config.sync, rec.daemons or (), rec.memory.daemons, rec.sync_errors)

    def _withdraw_at_stop(self) -> bool:
        """[announce] on_stop = "withdraw": the routes go first (True when there were any)."""
        a = self.config.announce
        if self.reconciler is None or a is None or a.on_stop != "withdraw":
            return False
        gone = self.reconciler.withdraw_routes("ipvsd is stopping")
        for route in gone:
            self.bus.publish(bus.RouteChanged("withdraw", route, "ipvsd is stopping"))
        return bool(gone)

    async def _stop_daemons(self) -> None:
        """clean_stop: the sync daemons ipvsd owns stop too (others stay)."""
        assert self.reconciler is not None
        try:
            for step in await self.reconciler.stop_daemons():
                self.bus.publish(bus.SyncChanged(step.action, step.daemon, step.why))
        except (OSError, IpvsdError) as e:
            log.error("clean stop: cannot stop the sync daemons (%s); they stay as they are", e)

    # --- control commands (ipvsd.shell.control_api.Commands) ----------------------------------------------

    async def next_pass(self) -> bool:
        """Wake the loop and wait for a pass that starts after this call; False if none ends in time."""
        want = self.passes.started + 1
        self.wake(read=True)
        try:
            async with asyncio.timeout(PASS_WAIT):
                while self.passes.done < want:
                    await self.passes.event.wait()
        except TimeoutError:
            return False
        return True

    async def drain(self, entry: MaintenanceInfo) -> bool:
        self.store.add(entry)
        log.warning("drain %s%s", entry.key.describe(), f": {entry.reason}" if entry.reason else "")
        self.bus.publish(bus.MaintenanceChanged("drain", entry.reason or "ipvsd drain", entry))
        return await self.next_pass()

    async def undrain(self, match: Callable[[MaintenanceKey], bool]) -> tuple[list[MaintenanceInfo], bool]:
        gone = self.store.remove(match)
        if not gone:
            return [], False
        for e in gone:
            log.warning("undrain %s", e.key.describe())
            self.bus.publish(bus.MaintenanceChanged("undrain", "ipvsd undrain", e))
        return gone, await self.next_pass()


def _bind_hint(e: OSError, port: int) -> str:
    """Why a bind was refused, when the cause is a privileged port and the capability is missing."""
    if isinstance(e, PermissionError) and port < 1024 and not privileges.has(privileges.CAP_NET_BIND_SERVICE):
        return (f" (a port below 1024 needs CAP_NET_BIND_SERVICE, which ipvsd running as {privileges.whoami()} "
                f"lacks: listen on a port from 1024 up, as the default 9597, or {privileges.UNIT_HINT})")
    return ""


def _dir_hint(e: Exception, what: str) -> str:
    """Who must be able to write `what`, when a non-root ipvsd was refused."""
    if isinstance(e, PermissionError) and os.geteuid() != 0:
        return (f" (ipvsd runs as {privileges.whoami()}, which must own {what}: the unit's StateDirectory= and "
                "RuntimeDirectory= give it /var/lib/ipvsd and /run/ipvsd)")
    return ""


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
