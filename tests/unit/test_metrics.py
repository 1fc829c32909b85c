"""Metrics: the endpoint of a running daemon (fake kernel, loopback HTTP reals), and the shipped alert rules and
Grafana dashboard (checked with promtool, and against the names ipvsd really exports)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipvsd import __version__
from ipvsd.checks.base import Kind, ProbeResult
from ipvsd.config.schema import Settings
from ipvsd.core.view import DURATION_BUCKETS, ProbeStats
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import DestKey, Stats
from ipvsd.shell.metrics import Metrics, View, parse_listen
from tests.support.daemon import VIP, Harness, write_config
from tests.support.pages import Pages, until

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "etc" / "prometheus" / "ipvsd-alerts.yml"
DASHBOARD = ROOT / "etc" / "grafana" / "ipvsd-dashboard.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(got: Samples, name: str, **labels: str) -> float | None:
    return got.get((name, frozenset(labels.items())))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Harness]:
    pages = Pages()
    ports = [await pages.start() for _ in range(2)]
    h = Harness(tmp_path, pages, ports, FakeKernel(), str(tmp_path / "control.sock"))
    write_config(h.path, ports)
    await h.start()
    try:
        yield h
    finally:
        if h.daemon is not None:
            await h.stop()
        pages.close()


def metrics_port(h: Harness) -> int:
    assert h.daemon is not None and h.daemon.http is not None
    return int(h.daemon.http.sockets[0].getsockname()[1])


async def test_scrape_follows_a_real_breaking_and_coming_back(running: Harness) -> None:
    h = running
    p1, p2 = h.ports
    svc, rs1, rs2 = "TCP 10.2.0.240:80", f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"
    await until(h.has({p1: 1, p2: 1}), "both reals in")
    port = metrics_port(h)
    check1 = {"service": svc, "real": rs1, "check": "http"}

    async def scraped(cond: object) -> Samples:
        box: dict[str, Samples] = {}

        async def ok() -> bool:
            code, text = await scrape(port)
            assert code == 200
            box["s"] = samples(text)
            return bool(cond(box["s"]))  # type: ignore[operator]
        await until(ok, "the scrape to show it")
        return box["s"]

    got = await scraped(lambda s: value(s, "ipvsd_check_up", **check1) == 1
                        and value(s, "ipvsd_backend_weight", service=svc, real=rs1) == 1)
    assert value(got, "ipvsd_real_state", service=svc, real=rs1, state="up") == 1
    assert value(got, "ipvsd_check_transitions_total", **check1) == 1  # alpha: down -> up at start
    assert value(got, "ipvsd_real_configured_weight", service=svc, real=rs2) == 1
    assert (value(got, "ipvsd_reconcile_operations_total", op="add_dest") or 0) >= 2
    assert value(got, "ipvsd_check_failures_total", **check1, reason="receive") is None
    assert (value(got, "ipvsd_check_duration_seconds_count", **check1) or 0) >= 1
    assert [dict(labels)["version"] for name, labels in got if name == "ipvsd_build_info"] == [__version__]

    h.pages.body[p1] = "debian10"  # the receive string is gone
    got = await scraped(lambda s: value(s, "ipvsd_check_up", **check1) == 0
                        and value(s, "ipvsd_backend_weight", service=svc, real=rs1) is None)
    assert value(got, "ipvsd_real_state", service=svc, real=rs1, state="down") == 1
    assert value(got, "ipvsd_check_transitions_total", **check1) == 2
    assert (value(got, "ipvsd_check_failures_total", **check1, reason="receive") or 0) >= 1
    assert (value(got, "ipvsd_check_consecutive_failures", **check1) or 0) >= 1
    assert value(got, "ipvsd_check_consecutive_successes", **check1) == 0
    assert (value(got, "ipvsd_reconcile_operations_total", op="del_dest") or 0) >= 1
    down_at = value(got, "ipvsd_check_last_transition_timestamp_seconds", **check1)

    h.pages.body[p1] = "debian11-again"
    got = await scraped(lambda s: value(s, "ipvsd_check_up", **check1) == 1
                        and value(s, "ipvsd_backend_weight", service=svc, real=rs1) == 1)
    assert value(got, "ipvsd_check_transitions_total", **check1) == 3
    assert (value(got, "ipvsd_check_last_transition_timestamp_seconds", **check1) or 0) >= (down_at or 0)
    assert value(got, "ipvsd_check_consecutive_failures", **check1) == 0


async def test_kernel_counters_come_from_the_last_pass_without_a_dump_per_scrape(running: Harness) -> None:
    h = running
    p1, p2 = h.ports
    await until(h.has({p1: 1, p2: 1}), "both reals in")
    assert h.daemon is not None
    rs1 = DestKey.of("127.0.0.1", p1)
    h.kernel.set_counters(VIP, stats=Stats(conns=7, inpkts=70, outpkts=60, inbytes=7000, outbytes=60000))
    h.kernel.set_counters(VIP, rs1, stats=Stats(conns=5, inbytes=5000, outbytes=50000), active_conns=2,
                          inact_conns=1)
    assert await h.daemon.next_pass()  # a pass that changes nothing leaves a fresh view
    dumps = 0
    real_services = h.kernel.services

    async def counted() -> list:  # type: ignore[type-arg]
        nonlocal dumps
        dumps += 1
        return await real_services()

    h.kernel.services = counted  # type: ignore[method-assign]
    port = metrics_port(h)
    got = samples((await scrape(port))[1])
    svc, real = "TCP 10.2.0.240:80", f"127.0.0.1:{p1}"
    assert value(got, "ipvsd_service_connections_total", service=svc) == 7
    assert value(got, "ipvsd_service_outgoing_bytes_total", service=svc) == 60000
    assert value(got, "ipvsd_backend_connections_total", service=svc, real=real) == 5
    assert value(got, "ipvsd_backend_incoming_bytes_total", service=svc, real=real) == 5000
    assert value(got, "ipvsd_backend_connections_active", service=svc, real=real) == 2
    assert value(got, "ipvsd_backend_connections_inactive", service=svc, real=real) == 1
    assert dumps == 0, "a fresh pass serves the scrape"
    assert h.daemon.view is not None
    h.daemon.view.kernel_at = None  # as after a pass that changed the table
    h.kernel.set_counters(VIP, rs1, stats=Stats(conns=9))
    got = samples((await scrape(port))[1])
    assert dumps == 1 and value(got, "ipvsd_backend_connections_total", service=svc, real=real) == 9
    assert (await scrape(port, "/nope"))[0] == 404


async def test_reload_outcomes_and_the_config_error_gauge(running: Harness) -> None:
    h = running
    assert h.daemon is not None
    port = metrics_port(h)
    got = samples((await scrape(port))[1])
    assert value(got, "ipvsd_config_load_error") == 0
    first = value(got, "ipvsd_config_last_reload_success_timestamp_seconds") or 0
    assert first > 1e9
    good = h.path.read_text()
    h.path.write_text(good.replace('scheduler = "rr"', 'schedulr = "rr"'))
    await h.daemon.reload("test")
    got = samples((await scrape(port))[1])
    assert value(got, "ipvsd_config_load_error") == 1
    assert value(got, "ipvsd_config_reloads_total", outcome="error") == 1
    h.path.write_text(good.replace('scheduler = "rr"', 'scheduler = "wrr"'))
    await h.daemon.reload("test")
    got = samples((await scrape(port))[1])
    assert value(got, "ipvsd_config_load_error") == 0
    assert value(got, "ipvsd_config_reloads_total", outcome="ok") == 1
    assert (value(got, "ipvsd_config_last_reload_success_timestamp_seconds") or 0) >= first


def test_probe_stats_streaks_reasons_and_histogram() -> None:
    st = ProbeStats()
    for r in [ProbeResult.up("ok", 0.0004), ProbeResult.down(Kind.REFUSED, "refused", 0.003),
              ProbeResult.down(Kind.TIMEOUT, "t", 20.0), ProbeResult.down(Kind.REFUSED, "refused", 0.001)]:
        st.add(r)
    assert (st.successes, st.failures) == (0, 3)
    assert st.failures_by == {"refused": 2, "timeout": 1}
    assert st.count == 4 and sum(st.buckets) == 3, "20 s is past the last bucket: only +Inf counts it"
    assert st.buckets[DURATION_BUCKETS.index(0.0005)] == 1 and st.buckets[DURATION_BUCKETS.index(0.001)] == 1
    st.add(ProbeResult.up("ok"))
    assert (st.successes, st.failures) == (1, 0)


def test_metrics_bind_loopback_by_default_and_parse_addresses() -> None:
    default = parse_listen(Settings().metrics_listen)
    assert default is not None and ipaddress.ip_address(default[0]).is_loopback and default[1] == 9597
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert parse_listen("0.0.0.0:9597") == ("0.0.0.0", 9597)  # all interfaces only when asked by name
    assert parse_listen("") is None and parse_listen(None) is None and parse_listen("off") is None
    for bad in (":9597", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# --- shipped files -------------------------------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every series name ipvsd can export (the families are described even when they have no sample)."""
    text = Metrics(lambda: View([], [], None)).exposition().decode()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "counter":
            names.add(name + "_total" if not name.endswith("_total") else name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package, installed like the lab's packages when missing (root only)."""
    found = shutil.which("promtool")
    if found is None and os.getuid() == 0 and os.environ.get("IPVSD_NO_INSTALL") != "1":
        subprocess.run([str(ROOT / "scripts" / "lab"), "packages"], capture_output=True, timeout=900, check=False)
        found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool (Debian package prometheus) is not installed and could not be installed")
    return found


def test_alert_rules_pass_promtool(promtool: str) -> None:
    p = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'ipvsd_real_state{{instance="lb", service="TCP 10.2.0.240:80", real="10.2.1.242:80", state="down"}}'
        values: '0 1x10'
      - series: 'ipvsd_real_state{{instance="lb", service="TCP 10.2.0.240:80", real="10.2.1.242:80", state="up"}}'
        values: '1 0x10'
      - series: 'ipvsd_real_state{{instance="lb", service="TCP 10.2.0.240:80", real="10.2.1.243:80", state="down"}}'
        values: '0x3 1x7'
      - series: 'ipvsd_real_state{{instance="lb", service="TCP 10.2.0.240:80", real="10.2.1.243:80", state="up"}}'
        values: '1x3 0x7'
      - series: 'ipvsd_config_load_error{{instance="lb"}}'
        values: '0 0 1 1'
    alert_rule_test:
      - eval_time: 4m
        alertname: IpvsdRealDown
        exp_alerts: []
      - eval_time: 7m
        alertname: IpvsdRealDown
        exp_alerts:
          - exp_labels: {{severity: warning, instance: lb, service: "TCP 10.2.0.240:80", real: "10.2.1.242:80",
                          state: down}}
            exp_annotations:
              summary: "Real 10.2.1.242:80 of TCP 10.2.0.240:80 has been down for 5 minutes"
              description: "Its checks fail; `ipvsd status` shows the reason. ipvsd took it out of the pool."
      - eval_time: 6m
        alertname: IpvsdAllRealsDown
        exp_alerts:
          - exp_labels: {{severity: critical, instance: lb, service: "TCP 10.2.0.240:80"}}
            exp_annotations:
              summary: "No real of TCP 10.2.0.240:80 is up"
              description: "Every real is down or in maintenance; the service serves only from a fallback, if any."
      - eval_time: 2m
        alertname: IpvsdConfigLoadError
        exp_alerts:
          - exp_labels: {{severity: warning, instance: lb}}
            exp_annotations:
              summary: "ipvsd rejected its configuration on lb"
              description: "The previous configuration still runs. The daemon's log and `ipvsd events` give file:line."
  - interval: 1m  # VIP roles over a director pair: lb1 holds 10.2.0.254, then no one, then both (split brain)
    input_series:
      - series: 'ipvsd_vip_held{{instance="lb1", vip="10.2.0.254"}}'
        values: '1 1 0 0 0 0 1 1 1 1'
      - series: 'ipvsd_vip_held{{instance="lb2", vip="10.2.0.254"}}'
        values: '0 0 0 0 0 0 1 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: IpvsdVipHeldByNone
        exp_alerts: []
      - eval_time: 4m
        alertname: IpvsdVipHeldByNone
        exp_alerts:
          - exp_labels: {{severity: critical, vip: 10.2.0.254}}
            exp_annotations:
              summary: "No director holds VIP 10.2.0.254"
              description: "It is on no director's interface but lo; check keepalived (VRRP) on the directors."
      - eval_time: 4m
        alertname: IpvsdVipHeldTwice
        exp_alerts: []
      - eval_time: 8m
        alertname: IpvsdVipHeldTwice
        exp_alerts:
          - exp_labels: {{severity: critical, vip: 10.2.0.254}}
            exp_annotations:
              summary: "VIP 10.2.0.254 is held by 2 directors"
              description: "VRRP split brain: the directors do not hear each other's adverts. Drop this rule if
                your VIPs are anycast."
"""


def test_alert_rules_fire_as_intended(promtool: str, tmp_path: Path) -> None:
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(ALERT_TESTS.format(rules=json.dumps(str(ALERTS))))
    p = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert isinstance(dash["title"], str) and dash["uid"] and isinstance(dash["schemaVersion"], int)
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance", "service"} <= names
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    known = {"row", "stat", "timeseries", "state-timeline", "table", "gauge", "bargauge"}
    for p in dash["panels"]:
        assert p["type"] in known, p["type"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh") and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)) and all(t["expr"] for t in p["targets"]), p["title"]


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"ipvsd:dashboard:{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$service", ".*")}
        for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    p = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_shipped_files_use_only_metrics_ipvsd_exports() -> None:
    exported = exported_names()
    used = set(re.findall(r"\bipvsd_[a-z_]+", ALERTS.read_text() + "\n".join(dashboard_exprs())))
    used |= set(re.findall(r"\bipvsd_[a-z_]+", json.dumps(json.loads(DASHBOARD.read_text())["templating"])))
    assert used, "the shipped files query ipvsd metrics"
    assert used <= exported, sorted(used - exported)
    doc = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(ipvsd_[a-z_]+)", doc))
    families = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count", "_created"))}
    missing = {n for n in families if n not in documented and n.removesuffix("_total") not in documented}
    assert not missing, f"undocumented metrics: {sorted(missing)}"
