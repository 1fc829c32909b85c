"""The daemon's wiring: config (re)loads, the probe scheduler, and a single reconcile loop over the kernel.

Level-triggered: every trigger (a health transition, a first settled result, a config change, the resync
timer) only marks the table dirty; the loop then runs one full pass (observe, desire, plan, apply). Passes
never overlap, and a burst of triggers becomes one pass. The kernel is read at start, every resync interval
and after a failure; the passes in between observe through `ipvsd.core.mirror`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ipvsd import config as configmod
from ipvsd.checks.base import ProbeResult
from ipvsd.config.schema import Config
from ipvsd.core.health import HealthState, Transition
from ipvsd.errors import ConfigError, IpvsdError
from ipvsd.kernel import Kernel
from ipvsd.model import DestKey, ServiceKey
from ipvsd.shell import fdlimit, gcpolicy
from ipvsd.shell.operator import Observer
from ipvsd.shell.reconciler import Outcome, Reconciler
from ipvsd.shell.scheduler import ProbeKey, ProbePlan, Scheduler, all_up, plan_probes
from ipvsd.shell.sdnotify import Notifier

log = logging.getLogger("ipvsd.daemon")
BACKOFF_MAX = 30.0
PACE_MAX = 5.0  # longest wait forced after a slow pass (see run)


@dataclass(frozen=True, slots=True)
class RealHealth:
    """A real's combined health: up when every probe is up, settled when every probe has a result."""

    up: bool
    settled: bool


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


def log_config_error(e: ConfigError, prefix: str) -> None:
    for err in getattr(e, "errors", [e]):
        log.error("%s: %s", prefix, err)


def resolve_hosts(config: Config, previous: dict[str, str]) -> dict[str, str]:
    """Return hostname -> address for every hostname real (keeping the last good answer on failure)."""
    out: dict[str, str] = {}
    for vs in config.services:
        for real in vs.reals:
            name = real.address
            try:
                ipaddress.ip_address(name)
                continue
            except ValueError:
                pass
            family = socket.AF_INET6 if vs.af == socket.AF_INET6 else socket.AF_INET
            try:
                out[name] = str(socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)[0][4][0])
            except OSError as e:
                if name in previous:
                    out[name] = previous[name]
                log.warning("cannot resolve real %s (%s)%s", name, e,
                            "; keeping its last address" if name in previous else "; it stays out of the table")
    return out


class Daemon:
    """`ipvsd run`: owns the scheduler, the reconciler and the triggers between them."""

    def __init__(self, opts: Options, config: Config, kernel_factory: Callable[[], Kernel]) -> None:
        self.opts = opts
        self.config = config
        self.kernel_factory = kernel_factory
        self.notifier = Notifier()
        self.dirty = asyncio.Event()
        self.read_wanted = False  # the next pass reads the kernel (an operator asked for the current table)
        self.stopping = asyncio.Event()
        self.resolved: dict[str, str] = {}
        self.probes = ProbePlan({}, {})
        self.settled: set[ProbeKey] = set()
        self.last: Outcome | None = None
        self.reloads = {"ok": 0, "error": 0, "unchanged": 0}
        state_dir = Path(opts.state_dir or config.settings.state_dir)
        self.state_path = state_dir / "state.json"
        self.obs = Observer(self, state_dir, events_file=opts.events_file)
        self.scheduler: Scheduler | None = None
        self.reconciler: Reconciler | None = None

    # --- triggers -----------------------------------------------------------------------------------------

    def wake(self, *, read: bool = False) -> None:
        """Ask for a pass soon; `read`: observe the kernel itself, not the mirror (see ipvsd.core.mirror)."""
        self.read_wanted = self.read_wanted or read
        self.dirty.set()

    def on_transition(self, key: ProbeKey, t: Transition) -> None:
        log.warning("real %s: %s", key, t)
        self.obs.transition(key, t)
        self.dirty.set()

    def on_result(self, key: ProbeKey, result: ProbeResult, state: HealthState) -> None:
        self.obs.result(key, result)
        # A real whose first check completes leaves KEEP (adopted as the kernel had it): reconcile then too.
        if state.settled and key not in self.settled:
            self.settled.add(key)
            self.dirty.set()
            if len(self.settled) >= len(self.probes.jobs) and self.settled >= set(self.probes.jobs):  # O(1) first
                log.info("every check has a result: %s", self.summary())

    # --- config --------------------------------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        assert self.scheduler is not None
        self.config = config
        self.resolved = resolve_hosts(config, self.resolved)
        self.probes = plan_probes(config, resolve=lambda a: self.resolved.get(a, a))
        fdlimit.ensure(fdlimit.needed(self.probes.jobs.values(), config.settings.limits.check_concurrency))
        self.scheduler.update(self.probes.jobs)
        self.settled &= set(self.probes.jobs)
        self.obs.config_applied()
        gcpolicy.settle()
        self.dirty.set()

    async def reload(self, why: str) -> None:
        self.notifier.reloading()
        try:
            config, warnings = await asyncio.to_thread(configmod.load, self.opts.config_path, self.opts.format)
        except ConfigError as e:
            self.reloads["error"] += 1
            self.obs.reloaded("error", why, "; ".join(str(x) for x in getattr(e, "errors", [e])))
            log_config_error(e, f"reload ({why}) rejected, the running configuration stays")
            self.notifier.status(f"config error: {e}")
            return
        except OSError as e:
            self.reloads["error"] += 1
            self.obs.reloaded("error", why, str(e))
            log.error("reload (%s) rejected, the running configuration stays: %s", why, e)
            return
        finally:
            self.notifier.ready(self.summary())
        if config == self.config:
            self.reloads["unchanged"] += 1
            self.obs.reloaded("unchanged", why)
            log.info("reload (%s): configuration unchanged", why)
            return
        for w in warnings:
            log.warning("%s", w)
        self.reloads["ok"] += 1
        log.info("reload (%s): new configuration, %d services", why, len(config.services))
        self.apply_config(config)
        self.obs.reloaded("ok", why)

    async def watch(self) -> None:
        """Reload when the config file or its drop-in directory changes (editors replace files: watch dirs)."""
        import watchfiles

        path = Path(self.opts.config_path).resolve()
        dropins = path.parent / "conf.d"
        dirs = [str(path.parent)] + ([str(dropins)] if dropins.is_dir() else [])

        def relevant(change: watchfiles.Change, p: str) -> bool:
            q = Path(p)
            return q == path or q.parent == dropins

        async for _ in watchfiles.awatch(*dirs, watch_filter=relevant, debounce=200, step=50,
                                         stop_event=self.stopping, recursive=False):
            await self.reload("file changed")

    # --- the loop ------------------------------------------------------------------------------------------

    def health(self) -> dict[tuple[ServiceKey, DestKey], RealHealth]:
        assert self.scheduler is not None
        states = self.scheduler.states()
        out: dict[tuple[ServiceKey, DestKey], RealHealth] = {}
        for real, keys in self.probes.reals.items():
            if not keys:
                continue
            got = [states.get(k) for k in keys]
            out[real] = RealHealth(up=all_up(got), settled=all(s is not None and s.settled for s in got))
        return out

    def summary(self) -> str:
        h = self.health()
        up = sum(1 for v in h.values() if v.up and v.settled)
        return f"{len(self.config.services)} services, {up}/{len(h)} checked reals up"

    async def run(self) -> int:
        kernel = self.kernel_factory()
        self.reconciler = Reconciler(kernel, self.state_path, force=self.opts.force)
        self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.reconciler.load_state()
            self.obs.load()
        except IpvsdError as e:
            log.error("%s", e)
            return 1
        limits = self.config.settings.limits
        gcpolicy.tune()
        self.scheduler = Scheduler(on_transition=self.on_transition, on_result=self.on_result,
                                   concurrency=limits.check_concurrency)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.apply_config(self.config)
        watch = self.opts.watch if self.opts.watch is not None else self.config.settings.watch_config
        watcher = loop.create_task(self.watch()) if watch else None
        resync = self.opts.resync or self.config.settings.resync_interval
        log.info("ipvsd running: %d services, resync every %gs, state in %s%s", len(self.config.services), resync,
                 self.state_path, ", watching the config" if watch else "")
        await self.obs.start()
        backoff = 0.0
        ready = synced = False
        paced_until = 0.0
        read_due = 0.0  # when the next pass reads the kernel; passes before it plan against the mirror
        try:
            while not self.stopping.is_set():
                await self._pace(paced_until)
                if self.stopping.is_set():
                    break
                self.dirty.clear()
                delay = resync
                t0 = time.monotonic()
                fresh, self.read_wanted = t0 >= read_due or backoff > 0 or self.read_wanted, False
                try:
                    settled = self.settled >= set(self.probes.jobs)
                    out = await self.reconciler.reconcile(self.config, self.health(), resolved=self.resolved,
                                                          maintenance=self.obs.maintenance(),
                                                          fresh=fresh)
                    if out.read:
                        read_due = t0 + resync
                    self.last = out
                    self.obs.passed(out)
                    if settled and not synced and out.error is None and out.refused is None:
                        synced = True
                        log.info("table reconciled with every check's result (%d ops in that pass)",
                                 len(out.applied))
                    backoff = 0.0 if out.error is None else min(BACKOFF_MAX, max(0.5, backoff * 2))
                    delay = backoff or max(0.0, read_due - time.monotonic())
                except (OSError, IpvsdError) as e:  # the kernel socket itself failed: retry, never die
                    backoff = min(BACKOFF_MAX, max(0.5, backoff * 2))
                    delay = backoff
                    log.error("reconcile failed: %s; retrying in %.1fs", e, delay)
                    self.obs.pass_failed(e, time.monotonic() - t0)
                # A pass holds the event loop (and the probes) for as long as it takes: the next one waits as long,
                # so passes never take more than half of the loop however fast triggers come.
                spent = time.monotonic() - t0
                paced_until = time.monotonic() + min(spent, PACE_MAX)
                if not ready:
                    self.notifier.ready(self.summary())
                    ready = True
                else:
                    self.notifier.status(self.summary())
                await self._wait(delay)
        finally:
            self.notifier.stopping()
            await self.obs.stop()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self.scheduler.close()
            clean = self.opts.clean_stop if self.opts.clean_stop is not None else self.config.settings.clean_stop
            if clean:
                await self.reconciler.clean_stop()
            else:
                log.info("stopping; the IPVS table stays as it is")
            await kernel.close()
        return 0

    async def _pace(self, until: float) -> None:
        """Sleep until `until` (monotonic) unless stopping."""
        left = until - time.monotonic()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), left)

    async def _wait(self, delay: float) -> None:
        """Sleep until a trigger, a stop, or `delay` seconds."""
        waits = [asyncio.ensure_future(self.dirty.wait()), asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
