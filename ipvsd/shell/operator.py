"""What the daemon shows and takes from operators: metrics, events, maintenance and the control socket.

The daemon calls a hook at each point that matters (a probe result, a transition, a pass, a reload) and asks
for the maintenance set at the start of each pass; everything else (servers, the kernel snapshot that metrics
and `status` read, drain requests) lives here, so the reconcile loop stays about reconciling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipvsd.checks.base import ProbeResult
from ipvsd.core import view as status
from ipvsd.core.desired import in_maintenance
from ipvsd.core.health import Transition
from ipvsd.core.view import ProbeStats, service_label
from ipvsd.errors import IpvsdError
from ipvsd.model import DestKey, Service, ServiceKey
from ipvsd.shell import maintenance_store as maintenance
from ipvsd.shell.control import ControlServer, socket_path
from ipvsd.shell.event_log import EventBus
from ipvsd.shell.maintenance_store import MaintenanceInfo
from ipvsd.shell.metrics import Metrics, View, parse_listen, serve
from ipvsd.shell.scheduler import ProbeKey
from ipvsd.shell.statefile import MaintenanceKey

if TYPE_CHECKING:
    from ipvsd.shell.daemon import Daemon
    from ipvsd.shell.reconciler import Outcome

log = logging.getLogger("ipvsd.observe")
KERNEL_MAX_AGE = 5.0  # seconds a pass's view of the table serves scrapes and `status` before a fresh dump
PASS_WAIT = 15.0  # how long drain/undrain wait for the pass that carries them out


class Observer:
    """Metrics, events, maintenance and the control socket of one daemon."""

    def __init__(self, daemon: Daemon, state_dir: Path, *, events_file: str | None = None) -> None:
        self.d = daemon
        self.events = EventBus(events_file)
        self.metrics = Metrics(self.view)
        self.stats: dict[ProbeKey, ProbeStats] = {}
        self.store = maintenance.Store(state_dir / "maintenance.json")
        self.from_dir: dict[MaintenanceKey, MaintenanceInfo] = {}
        self.kernel: list[Service] = []
        self.kernel_at: float | None = None  # monotonic; None: stale (a pass changed the table since)
        self.kernel_wall: float | None = None
        self.fail_open: frozenset[ServiceKey] = frozenset()
        self.started_passes = 0
        self.done_passes = 0
        self._pass_done = asyncio.Event()
        self.control: ControlServer | None = None
        self.http: asyncio.Server | None = None
        self.last_reload: dict[str, Any] = {}

    # --- lifecycle ----------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the drain entries (raises IpvsdError when the file is unreadable: a drain must not be lost)."""
        self.store.load()
        if self.store.entries:
            log.info("in maintenance: %s", ", ".join(_describe(k) for k in sorted(self.store.entries)))

    async def start(self) -> None:
        opts, settings = self.d.opts, self.d.config.settings
        self.metrics.loaded(at=time.time())
        path = socket_path(socket=opts.socket, state_dir=opts.state_dir,
                           configured=settings.control_socket)
        server = ControlServer(path, {"status": self._status, "drain": self._drain, "undrain": self._undrain,
                                      "reload": self._reload}, self.events.subscribe)
        try:
            await server.start()
            self.control = server
            log.info("control socket %s", path)
        except (OSError, IpvsdError) as e:
            log.error("control socket %s not available: %s", path, e)
        listen = opts.metrics_listen
        try:
            where = parse_listen(settings.metrics_listen if listen is None else listen)
        except ValueError as e:
            log.error("%s; no metrics endpoint", e)
            where = None
        if where is not None:
            try:
                self.http = await serve(self.metrics, *where, before_scrape=self.refresh_kernel)
                log.info("metrics on http://%s/metrics", _hostport(*where))
            except OSError as e:
                log.error("metrics endpoint %s not available: %s", _hostport(*where), e.strerror or e)

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.close()
        if self.http is not None:
            self.http.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.http.wait_closed(), 2)
        self.events.close()

    # --- hooks from the daemon -----------------------------------------------------------------------------

    def result(self, key: ProbeKey, result: ProbeResult) -> None:
        self.stats.setdefault(key, ProbeStats()).add(result)

    def transition(self, key: ProbeKey, t: Transition) -> None:
        kind = str(key).split(" ", 1)[0]
        for (skey, dkey), keys in self.d.probes.reals.items():
            if key in keys:
                self.events.publish("transition", t.result.reason, service=service_label(skey), real=str(dkey),
                                    check=kind, target=str(key.target), state="up" if t.up else "down",
                                    kind=t.result.kind.value)

    def config_applied(self) -> None:
        keep = set(self.d.probes.jobs)
        self.stats = {k: v for k, v in self.stats.items() if k in keep}

    def reloaded(self, outcome: str, why: str, error: str = "") -> None:
        now = time.time()
        self.metrics.reloaded(outcome, at=now)
        self.last_reload = {"outcome": outcome, "trigger": why, "error": error or None, "at": now}
        reason = error or {"ok": "new configuration", "unchanged": "configuration unchanged"}.get(outcome, outcome)
        self.events.publish("reload", reason, outcome=outcome, trigger=why)

    def maintenance(self) -> frozenset[MaintenanceKey]:
        """The maintenance set for the pass about to start: drains (expired ones dropped) and maintenance_dir."""
        self.started_passes += 1
        for e in self.store.expire(time.time()):
            log.info("maintenance of %s expired", _describe(e.key))
            self.events.publish("maintenance", "expired", action="undrain", **_entry_fields(e))
        mdir = self.d.config.settings.maintenance_dir
        found = maintenance.from_dir(mdir, self.d.resolved.get) if mdir else {}
        for k in found.keys() - self.from_dir.keys():
            log.info("maintenance_dir: %s in maintenance", _describe(k))
            self.events.publish("maintenance", found[k].reason, action="drain", **_entry_fields(found[k]))
        for k in self.from_dir.keys() - found.keys():
            log.info("maintenance_dir: %s out of maintenance", _describe(k))
            self.events.publish("maintenance", self.from_dir[k].reason, action="undrain",
                                **_entry_fields(self.from_dir[k]))
        self.from_dir = found
        return frozenset(self.store.entries) | frozenset(found)

    def passed(self, out: Outcome) -> None:
        self.metrics.passed(duration=out.duration, applied=out.applied, drift=len(out.drift),
                            refused=out.refused is not None, failed=out.failed)
        for op in out.drift:
            self.events.publish("drift", "the kernel differed from what ipvsd set; repaired", op=str(op))
        if out.error is not None:
            self.events.publish("kernel-error", str(out.error), op=str(out.failed))
        if out.refused is not None:
            self.events.publish("refused", out.refused)
        if out.built is not None:
            self.fail_open = out.built.fail_open
        rec = self.d.reconciler
        if rec is not None and out.read and not out.applied and out.refused is None:  # a mirror has no counters
            self.kernel, self.kernel_at, self.kernel_wall = rec.observed, time.monotonic(), time.time()
        elif out.applied:
            self.kernel_at = None
        self._passed()

    def pass_failed(self, error: Exception, duration: float) -> None:
        self.metrics.pass_failed(duration)
        self.events.publish("kernel-error", str(error))
        self._passed()

    def _passed(self) -> None:
        self.done_passes = self.started_passes
        self._pass_done.set()
        self._pass_done = asyncio.Event()

    async def next_pass(self) -> bool:
        """Wake the daemon and wait for a pass that starts after this call; False if none ends in time."""
        want = self.started_passes + 1
        self.d.wake(read=True)
        try:
            async with asyncio.timeout(PASS_WAIT):
                while self.done_passes < want:
                    await self._pass_done.wait()
        except TimeoutError:
            return False
        return True

    # --- the view ------------------------------------------------------------------------------------------

    async def refresh_kernel(self) -> None:
        """Read the table again when the last observation is stale."""
        rec = self.d.reconciler
        if rec is None:
            return
        if self.kernel_at is not None and time.monotonic() - self.kernel_at < KERNEL_MAX_AGE:
            return
        self.kernel = await rec.kernel.services()
        self.kernel_at, self.kernel_wall = time.monotonic(), time.time()

    def entries(self) -> dict[MaintenanceKey, MaintenanceInfo]:
        return maintenance.merged(self.store.entries.values(), self.from_dir.values())

    def statuses(self) -> list[status.ServiceStatus]:
        d = self.d
        states = d.scheduler.states() if d.scheduler is not None else {}
        quorum = d.reconciler.quorum if d.reconciler is not None else None
        return status.build(d.config, d.probes, states, self.stats, kernel=self.kernel, maintenance=self.entries(),
                            quorum=quorum, fail_open=self.fail_open, resolved=d.resolved, wall=time.time(),
                            mono=time.monotonic())

    def view(self) -> View:
        return View(self.statuses(), self.kernel, self.kernel_wall)

    # --- control socket handlers ---------------------------------------------------------------------------

    async def _status(self, req: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(OSError, IpvsdError, TimeoutError):
            async with asyncio.timeout(2):
                await self.refresh_kernel()
        return {"services": status.to_json(self.statuses()), "kernel_at": self.kernel_wall,
                "maintenance": [status.maintenance_json(e) for e in self.entries().values()],
                "config": self.d.opts.config_path, "last_reload": self.last_reload or None}

    async def _drain(self, req: dict[str, Any]) -> dict[str, Any]:
        key = await self._key(req)
        matched = self._matching(key)
        if not matched:
            raise ValueError(f"{_describe(key)} matches no configured real")
        until = req.get("until")
        if until is not None and float(until) <= time.time():
            raise ValueError("--until is in the past")
        entry = maintenance.new_entry(key, reason=str(req.get("reason") or ""),
                                      until=None if until is None else float(until))
        self.store.add(entry)
        log.warning("drain %s%s", _describe(key), f": {entry.reason}" if entry.reason else "")
        self.events.publish("maintenance", entry.reason or "ipvsd drain", action="drain", **_entry_fields(entry))
        applied = await self.next_pass()
        return {"reals": matched, "entry": status.maintenance_json(entry), "applied": applied}

    async def _undrain(self, req: dict[str, Any]) -> dict[str, Any]:
        key = await self._key(req)
        any_port, any_service = key.port == 0, key.service is None

        def match(k: MaintenanceKey) -> bool:
            return k.addr == key.addr and (any_port or k.port == key.port) and (any_service or k.service == key.service)

        gone = self.store.remove(match)
        files = [e for k, e in self.from_dir.items() if match(k)]
        if not gone:
            why = f"; remove {files[0].reason} from the maintenance_dir" if files else ""
            raise ValueError(f"{_describe(key)} is not drained by `ipvsd drain`{why}")
        for e in gone:
            log.warning("undrain %s", _describe(e.key))
            self.events.publish("maintenance", str(req.get("reason") or "ipvsd undrain"), action="undrain",
                                **_entry_fields(e))
        applied = await self.next_pass()
        return {"applied": applied, "removed": [status.maintenance_json(e) for e in gone],
                "still": [status.maintenance_json(e) for e in files]}

    async def _reload(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.d.reload("control socket")
        out = dict(self.last_reload)
        if out.get("outcome") == "error":
            return {"ok": False, "error": f"reload rejected, the running configuration stays: {out['error']}"}
        return out

    async def _key(self, req: dict[str, Any]) -> MaintenanceKey:
        host, port = maintenance.parse_real(str(req.get("real", "")))
        if not host:
            raise ValueError("name a real: ADDRESS[:PORT] or HOST[:PORT]")
        service = self._service(str(req["service"])) if req.get("service") else None
        return await asyncio.to_thread(maintenance.key_of, host, port, service, self._resolve)

    def _resolve(self, host: str) -> str | None:
        if host in self.d.resolved:
            return self.d.resolved[host]
        try:
            return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
        except OSError:
            return None

    def _service(self, text: str) -> ServiceKey:
        want = text.strip().lower()
        for vs in self.d.config.services:
            skey = vs.service_key()
            label = service_label(skey).lower()
            if want in (label, label.split(" ", 1)[1]) or (skey.is_fwmark and want == str(skey.fwmark)):
                return skey
        raise ValueError(f"{text}: no such virtual service (e.g. \"TCP 10.0.0.1:80\", \"10.0.0.1:80\", \"FWM 7\")")

    def _matching(self, key: MaintenanceKey) -> list[str]:
        keys = frozenset({key})
        out = []
        for vs in self.d.config.services:
            skey = vs.service_key()
            for real in vs.reals:
                addr = self.d.resolved.get(real.address, real.address)
                try:
                    dkey = real.dest_key(addr)
                except ValueError:
                    continue
                if in_maintenance(keys, skey, dkey):
                    out.append(f"{service_label(skey)} -> {dkey}")
        return out


def _describe(k: MaintenanceKey) -> str:
    real = str(DestKey.of(k.addr, k.port)) if k.port else k.addr
    return real + ("" if k.service is None else f" in {service_label(k.service)}")


def _entry_fields(e: MaintenanceInfo) -> dict[str, Any]:
    return {"real": _describe(e.key), "source": e.source, "until": e.until}


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
