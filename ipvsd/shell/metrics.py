"""Prometheus metrics: daemon counters fed by hooks, per-real health and kernel counters read at scrape time.

Per-real and kernel series come from a custom collector over the daemon's current view (`View`), so they
appear and vanish with the config and the table, and a scrape costs no kernel dump when the last pass
observed the table recently (the daemon refreshes it before a scrape only when it is stale). Names follow
Prometheus conventions (`_total` counters, seconds, bytes) and node_exporter's `node_ipvs_*` where they
overlap, under `ipvsd_`. The HTTP endpoint is a small asyncio server in the daemon's own loop: collectors read
daemon state without locks, and it binds only where `metrics_listen` says (127.0.0.1 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# prometheus_client's submodules only (ipvsd/shell/__init__.py installs the lean package, see ipvsd.lean);
# exposition, which imports http.server, urllib and email, at the first scrape.
from prometheus_client.metrics import Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ipvsd import __version__
from ipvsd.core.roles import VipRole
from ipvsd.core.view import DURATION_BUCKETS, STATES, RouteStatus, ServiceStatus, SyncDaemonStatus, SysctlStatus
from ipvsd.model import AddDest, AddService, DelDest, DelService, EditDest, EditService, Op, Service, addrport
from ipvsd.shell import bus

log = logging.getLogger("ipvsd.metrics")
# `_created` series would double the exposition, and no dashboard or alert of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

OP_NAMES: dict[type, str] = {AddService: "add_service", EditService: "edit_service", DelService: "del_service",
                             AddDest: "add_dest", EditDest: "edit_dest", DelDest: "del_dest"}
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class View:
    """What the collector reads at scrape time: each configured real's status and the last observed table."""

    services: list[ServiceStatus]
    kernel: list[Service]
    kernel_at: float | None  # wall time of the observation
    vips: tuple[VipRole, ...] = ()  # empty too while the director's addresses are not observed
    sync: tuple[SyncDaemonStatus, ...] = ()
    sysctls: tuple[SysctlStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()


def parse_listen(text: str | None) -> tuple[str, int] | None:
    """Return (host, port) of `host:port` / `[v6]:port`; None for an empty value (no endpoint)."""
    if text is None or not text.strip() or text.strip().lower() in ("off", "none"):
        return None
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = t.rpartition(":")
    if not host:
        raise ValueError(f"metrics address {text!r}: give the address to bind (0.0.0.0 or [::] for all)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {text!r}: expected host:port")
    return host, int(port)


class Metrics:
    """Every ipvsd metric, in a registry of its own (so several daemons can live in one test process)."""

    def __init__(self, view: Callable[[], View] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_duration = Histogram("ipvsd_reconcile_duration_seconds", "Duration of reconcile passes.",
                                            buckets=RECONCILE_BUCKETS, registry=r)
        self.passes = Counter("ipvsd_reconcile_passes", "Reconcile passes by result (ok, refused, error).",
                              ["result"], registry=r)
        self.ops = Counter("ipvsd_reconcile_operations", "IPVS operations applied, by type.", ["op"], registry=r)
        self.ops_failed = Counter("ipvsd_reconcile_operations_failed", "IPVS operations the kernel refused, by type.",
                                  ["op"], registry=r)
        self.drift = Counter("ipvsd_drift_repaired", "Operations that undid a change made to the table behind "
                             "ipvsd's back.", registry=r)
        self.refusals = Counter("ipvsd_plan_refusals", "Plans refused whole by the blast-radius guard.", registry=r)
        self.reloads = Counter("ipvsd_config_reloads", "Configuration reloads by outcome (ok, unchanged, error).",
                               ["outcome"], registry=r)
        self.config_error = Gauge("ipvsd_config_load_error", "1 when the last configuration load failed "
                                  "(the previous configuration still runs).", registry=r)
        self.last_reload = Gauge("ipvsd_config_last_reload_success_timestamp_seconds",
                                 "Wall time of the last successful configuration load.", registry=r)
        self.sync_steps = Counter("ipvsd_sync_daemon_actions", "What ipvsd did to the connection-sync daemons: "
                                  "adopt, start, repair, replace, stop, release, failed.", ["action"], registry=r)
        self.sysctl_changes = Counter("ipvsd_sysctl_changes", "net.ipv4.vs.* sysctls set, drifted (changed behind "
                                      "ipvsd's back), restored or failed.", ["name", "action"], registry=r)
        self.route_changes = Counter("ipvsd_route_changes", "VIP routes announced or withdrawn ([announce]), and "
                                     "route requests that failed.", ["action"], registry=r)
        self.build_info = Info("ipvsd_build", "ipvsd version and Python.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        for outcome in ("ok", "unchanged", "error"):
            self.reloads.labels(outcome)
        for result in ("ok", "refused", "error"):
            self.passes.labels(result)
        for name in OP_NAMES.values():
            self.ops.labels(name)
            self.ops_failed.labels(name)
        if view is not None:
            r.register(ViewCollector(view))

    # --- hooks --------------------------------------------------------------------------------------------

    def record(self, event: bus.Event) -> None:
        """Count one of the daemon's events (the metrics' subscription to `ipvsd.shell.bus`)."""
        match event:
            case bus.PassDone() as p:
                self.passed(duration=p.duration, applied=p.applied, drift=len(p.drift), refused=p.refused is not None,
                            failed=p.failed)
            case bus.PassFailed(duration=duration):
                self.pass_failed(duration)
            case bus.Reloaded(outcome=outcome, at=at):
                self.reloaded(outcome, at=at)
            case bus.SyncChanged(action=action):
                self.sync_steps.labels(action).inc()
            case bus.SysctlChanged(name=name, action=action):
                self.sysctl_changes.labels(name, action).inc()
            case bus.RouteChanged(action=action):
                self.route_changes.labels(action).inc()
            case _:
                pass

    def passed(self, *, duration: float, applied: Iterable[Op], drift: int, refused: bool,
               failed: Op | None) -> None:
        self.reconcile_duration.observe(duration)
        for op in applied:
            self.ops.labels(OP_NAMES[type(op)]).inc()
        self.drift.inc(drift)
        if refused:
            self.refusals.inc()
        if failed is not None:
            self.ops_failed.labels(OP_NAMES[type(failed)]).inc()
        self.passes.labels("refused" if refused else "error" if failed is not None else "ok").inc()

    def pass_failed(self, duration: float) -> None:
        """A pass that could not even talk to the kernel."""
        self.reconcile_duration.observe(duration)
        self.passes.labels("error").inc()

    def loaded(self, *, at: float) -> None:
        """The configuration the daemon started with (a load, not a reload)."""
        self.config_error.set(0)
        self.last_reload.set(at)

    def reloaded(self, outcome: str, *, at: float) -> None:
        self.reloads.labels(outcome).inc()
        self.config_error.set(1 if outcome == "error" else 0)
        if outcome != "error":
            self.last_reload.set(at)

    def exposition(self) -> bytes:
        from prometheus_client.exposition import generate_latest
        return generate_latest(self.registry)


class ViewCollector(Collector):
    """Per-check, per-real, per-service and kernel series, from the daemon's view at scrape time."""

    def __init__(self, view: Callable[[], View]) -> None:
        self.view = view

    def describe(self) -> Iterable[Metric]:
        return []  # the series change with the config; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        yield from _checks(v.services)
        yield from _reals(v.services)
        yield from _kernel(v.kernel, v.kernel_at)
        yield from _vips(v.vips)
        yield from _sync(v.sync, v.sysctls)
        yield from _routes(v.routes)


def _checks(services: list[ServiceStatus]) -> Iterator[Metric]:
    labels = ["service", "real", "check"]
    up = GaugeMetricFamily("ipvsd_check_up", "1 when the check says the real is up (0: down).", labels=labels)
    settled = GaugeMetricFamily("ipvsd_check_settled", "1 once the check has a result (0: its start state).",
                                labels=labels)
    succ = GaugeMetricFamily("ipvsd_check_consecutive_successes", "Successes in a row.", labels=labels)
    fail = GaugeMetricFamily("ipvsd_check_consecutive_failures", "Failures in a row.", labels=labels)
    trans = CounterMetricFamily("ipvsd_check_transitions", "Up/down transitions of the check.", labels=labels)
    last = GaugeMetricFamily("ipvsd_check_last_transition_timestamp_seconds",
                             "Wall time of the check's last transition (or of its start).", labels=labels)
    dur = HistogramMetricFamily("ipvsd_check_duration_seconds", "Duration of each probe.", labels=labels)
    reasons = CounterMetricFamily("ipvsd_check_failures", "Failed probes by reason (refused, timeout, status, "
                                  "receive, tls, dns, exit-code, ...).", labels=[*labels, "reason"])
    for s in services:
        sl = s.key.label()
        for r in s.reals:
            for c in r.checks:
                lv = [sl, r.real, c.check]
                up.add_metric(lv, 1 if c.up else 0)
                settled.add_metric(lv, 1 if c.settled else 0)
                succ.add_metric(lv, c.stats.successes)
                fail.add_metric(lv, c.stats.failures)
                trans.add_metric(lv, c.transitions)
                last.add_metric(lv, c.since)
                cum, buckets = 0, []
                for bound, n in zip(DURATION_BUCKETS, c.stats.buckets, strict=True):
                    cum += n
                    buckets.append((_le(bound), cum))
                buckets.append(("+Inf", c.stats.count))
                dur.add_metric(lv, buckets, c.stats.duration_sum)
                for reason, n in sorted(c.stats.failures_by.items()):
                    reasons.add_metric([*lv, reason], n)
    yield from (up, settled, succ, fail, trans, last, dur, reasons)


def _reals(services: list[ServiceStatus]) -> Iterator[Metric]:
    state = GaugeMetricFamily("ipvsd_real_state", "1 for the real's current state: up, down, unknown (no result "
                              "yet) or maint; health before fail-open (a name that does not resolve is down).",
                              labels=["service", "real", "state"])
    weight = GaugeMetricFamily("ipvsd_real_configured_weight", "The weight the config gives the real.",
                               labels=["service", "real"])
    quorum = GaugeMetricFamily("ipvsd_service_quorum", "1 while the service has quorum (0: lost, fallback in).",
                               labels=["service"])
    opened = GaugeMetricFamily("ipvsd_service_fail_open", "1 while too many reals are down and all serve "
                               "(panic mode).", labels=["service"])
    ramp = GaugeMetricFamily("ipvsd_real_slow_start_weight", "The weight a real in slow start serves at now, on its "
                             "way to its configured weight (only reals in slow start).", labels=["service", "real"])
    ramp_end = GaugeMetricFamily("ipvsd_real_slow_start_end_seconds", "When a real's slow start ends (Unix time; "
                                 "only reals in slow start).", labels=["service", "real"])
    for s in services:
        sl = s.key.label()
        if s.quorum is not None:
            quorum.add_metric([sl], 1 if s.quorum else 0)
        opened.add_metric([sl], 1 if s.fail_open else 0)
        for r in s.reals:
            for st in STATES:
                state.add_metric([sl, r.real, st], 1 if r.state == st else 0)
            weight.add_metric([sl, r.real], r.weight)
            if r.slow_start is not None:
                ramp.add_metric([sl, r.real], r.slow_start.weight)
                ramp_end.add_metric([sl, r.real], r.slow_start.until)
    yield from (state, weight, quorum, opened, ramp, ramp_end)


def _kernel(table: list[Service], at: float | None) -> Iterator[Metric]:
    sl, bl = ["service"], ["service", "real"]
    svc: dict[str, Any] = {
        "conns": CounterMetricFamily("ipvsd_service_connections", "Connections scheduled by the virtual service.",
                                     labels=sl),
        "inpkts": CounterMetricFamily("ipvsd_service_incoming_packets", "Packets in.", labels=sl),
        "outpkts": CounterMetricFamily("ipvsd_service_outgoing_packets", "Packets out.", labels=sl),
        "inbytes": CounterMetricFamily("ipvsd_service_incoming_bytes", "Bytes in.", labels=sl),
        "outbytes": CounterMetricFamily("ipvsd_service_outgoing_bytes", "Bytes out.", labels=sl),
    }
    dst: dict[str, Any] = {
        "conns": CounterMetricFamily("ipvsd_backend_connections", "Connections scheduled to the real.", labels=bl),
        "inpkts": CounterMetricFamily("ipvsd_backend_incoming_packets", "Packets in.", labels=bl),
        "outpkts": CounterMetricFamily("ipvsd_backend_outgoing_packets", "Packets out.", labels=bl),
        "inbytes": CounterMetricFamily("ipvsd_backend_incoming_bytes", "Bytes in.", labels=bl),
        "outbytes": CounterMetricFamily("ipvsd_backend_outgoing_bytes", "Bytes out.", labels=bl),
    }
    active = GaugeMetricFamily("ipvsd_backend_connections_active", "Active (established) connections.", labels=bl)
    inactive = GaugeMetricFamily("ipvsd_backend_connections_inactive", "Inactive connections.", labels=bl)
    weight = GaugeMetricFamily("ipvsd_backend_weight", "The real's weight in the kernel now.", labels=bl)
    for s in table:
        label = s.key.label()
        for name, fam in svc.items():
            fam.add_metric([label], getattr(s.stats, name))
        for d in s.dests:
            lv = [label, addrport(d.key.addr, d.key.port)]
            for name, fam in dst.items():
                fam.add_metric(lv, getattr(d.stats, name))
            active.add_metric(lv, d.active_conns)
            inactive.add_metric(lv, d.inact_conns)
            weight.add_metric(lv, d.attrs.weight)
    yield from svc.values()
    yield from dst.values()
    yield from (active, inactive, weight)
    observed = GaugeMetricFamily("ipvsd_kernel_observed_timestamp_seconds",
                                 "Wall time the kernel counters above were read.")
    if at is not None:
        observed.add_metric([], at)
    yield observed


def _vips(vips: tuple[VipRole, ...]) -> Iterator[Metric]:
    held = GaugeMetricFamily("ipvsd_vip_held", "1 while this director holds the VIP: it is on an interface that "
                             "is up and not loopback (0: absent, only on lo, or only on interfaces that are down).",
                             labels=["vip"])
    since = GaugeMetricFamily("ipvsd_vip_last_change_timestamp_seconds", "Wall time the VIP was last taken or "
                              "lost by this director (or first seen).", labels=["vip"])
    for r in vips:
        held.add_metric([r.vip], 1 if r.held else 0)
        since.add_metric([r.vip], r.since)
    yield from (held, since)


def _sync(daemons: tuple[SyncDaemonStatus, ...], sysctls: tuple[SysctlStatus, ...]) -> Iterator[Metric]:
    running = GaugeMetricFamily("ipvsd_sync_daemon", "1 while the connection-sync daemon runs, 0 when it is "
                                "configured (or owned) and does not; owner: ipvsd, adopted, external, foreign.",
                                labels=["state", "interface", "syncid", "owner"])
    for d in daemons:
        running.add_metric([d.role, d.interface, str(d.syncid), d.owner], 1 if d.running else 0)
    drift = GaugeMetricFamily("ipvsd_sysctl_drift", "1 while a net.ipv4.vs.* sysctl ipvsd set has another value "
                              "(left until the next reload or restart), or could not be set.", labels=["name"])
    for s in sysctls:
        drift.add_metric([s.name], 0 if s.state in ("ok", "unknown") else 1)
    yield from (running, drift)


def _routes(routes: tuple[RouteStatus, ...]) -> Iterator[Metric]:
    announced = GaugeMetricFamily("ipvsd_vip_announced", "1 while the VIP's route is in ipvsd's routing table "
                                  "([announce]) for the routing daemon to export, 0 while it is withdrawn.",
                                  labels=["route"])
    for r in routes:
        announced.add_metric([r.route], 1 if r.held else 0)
    yield announced


def _le(bound: float) -> str:
    return repr(float(bound))


# --- the HTTP endpoint ---------------------------------------------------------------------------------------

_STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
INDEX = b'<html><head><title>ipvsd</title></head><body><a href="/metrics">Metrics</a></body></html>\n'


async def serve(metrics: Metrics, host: str, port: int, *,
                before_scrape: Callable[[], Awaitable[None]] | None = None) -> asyncio.Server:
    """Start the metrics endpoint on host:port; `before_scrape` may refresh the view (kept under 2 s)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await _respond(writer, 405, b"", "text/plain", head_only=False)
            elif path == "/metrics":
                if before_scrape is not None:
                    try:
                        async with asyncio.timeout(2):
                            await before_scrape()
                    except Exception as e:  # a stale view beats no metrics
                        log.debug("refresh before scrape failed: %s", e)
                from prometheus_client.exposition import CONTENT_TYPE_LATEST
                await _respond(writer, 200, metrics.exposition(), CONTENT_TYPE_LATEST, head_only=method == "HEAD")
            elif path == "/":
                await _respond(writer, 200, INDEX, "text/html", head_only=method == "HEAD")
            else:
                await _respond(writer, 404, b"not found\n", "text/plain", head_only=method == "HEAD")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, reuse_address=True)


async def _respond(writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str, *, head_only: bool) -> None:
    writer.write(f"HTTP/1.1 {code} {_STATUS[code]}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + (b"" if head_only else body))
    await writer.drain()
