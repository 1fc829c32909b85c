"""Observability and operator control on a real kernel: scrape /metrics while rs1 breaks and comes back, kernel
counters under traffic through the VIP, loopback-only metrics, and `ipvsd drain`/`undrain` across a restart."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kernel.daemon import Ipvsd, keepalive_request
from tests.kernel.lab import LB_INT, Lab, wait_until
from tests.netns import run_in

ROOT = Path(__file__).resolve().parents[2]
RS1, RS2 = "10.2.1.242:80", "10.2.1.243:80"
SVC = "TCP 10.2.0.240:80"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CONFIG = """
[settings]
clean_stop = false
drain_timeout = 300

[check_defaults]
interval = 1
timeout = 1
rise = 1
fall = 1
alpha = true

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"

[[services.checks]]
type = "http"
path = "/index.html"
receive = "debian11"

[[services.reals]]
address = "10.2.1.242"
port = 80

[[services.reals]]
address = "10.2.1.243"
port = 80
"""


def scrape(lab: Lab) -> Samples:
    def get() -> str:
        with urllib.request.urlopen("http://127.0.0.1:9597/metrics", timeout=10) as r:
            return str(r.read().decode())

    text = run_in(lab.lb, get)
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def v(got: Samples, name: str, **labels: str) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


def check(real: str) -> dict[str, str]:
    return {"service": SVC, "real": real, "check": "http"}


def until_scraped(lab: Lab, cond: object, *, timeout: float, what: str) -> Samples:
    box: dict[str, Samples] = {}

    def ok() -> bool:
        box["s"] = scrape(lab)
        return bool(cond(box["s"]))  # type: ignore[operator]

    t0 = time.monotonic()
    wait_until(ok, timeout=timeout, what=what, interval=0.2)
    print(f"{what}: {time.monotonic() - t0:.2f}s")
    return box["s"]


def get_and_reset(lab: Lab) -> int:
    """GET / through the VIP and close with RST, so IPVS forgets the connection in seconds, not TIME_WAIT's 2 min."""

    def go() -> int:
        with socket.create_connection((lab.vip, 80), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(b"GET /index.html HTTP/1.0\r\nHost: vip\r\n\r\n")
            n = 0
            while data := s.recv(65536):
                n += len(data)
            return n

    return run_in(lab.client, go)


def refused(ns: str, addr: str, port: int) -> bool:
    def go() -> bool:
        try:
            socket.create_connection((addr, port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    return run_in(ns, go)


def ipvsd_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipvsd", *args, "--state-dir", str(state)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.kernel
def test_metrics_drain_and_events_on_the_lab(lab: Lab, tmp_path: Path) -> None:
    cfg = tmp_path / "ipvsd.toml"
    cfg.write_text(CONFIG)  # no metrics_listen: the default, 127.0.0.1:9597
    state = tmp_path / "state"
    events = tmp_path / "events.jsonl"
    d = Ipvsd(lab, cfg, state, extra=("--events-file", str(events))).start()
    held: socket.socket | None = None
    try:
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=90, what="rs1 and rs2 in the table")

        # metrics: loopback only by default
        got = until_scraped(lab, lambda s: v(s, "ipvsd_check_up", **check(RS1)) == 1, timeout=30,
                            what="rs1 up in /metrics")
        for ns, addr in ((lab.client, lab.vip), (lab.lb, lab.vip), (lab.lb, LB_INT)):
            assert refused(ns, addr, 9597), f"metrics reachable on {addr} from {ns}"
        transitions = v(got, "ipvsd_check_transitions_total", **check(RS1))

        # kernel counters rise with traffic through the VIP
        before = got
        sizes = [get_and_reset(lab) for _ in range(10)]
        assert all(n > 0 for n in sizes)

        def counted(s: Samples) -> bool:
            return (v(s, "ipvsd_service_connections_total", service=SVC)
                    >= v(before, "ipvsd_service_connections_total", service=SVC) + 10)

        after = until_scraped(lab, counted, timeout=30, what="10 connections counted")
        for rs in (RS1, RS2):
            for name in ("ipvsd_backend_connections_total", "ipvsd_backend_incoming_bytes_total",
                         "ipvsd_backend_outgoing_bytes_total", "ipvsd_backend_incoming_packets_total"):
                was, now = v(before, name, service=SVC, real=rs), v(after, name, service=SVC, real=rs)
                assert now > was, (name, rs, was, now)
        out_bytes = (v(after, "ipvsd_service_outgoing_bytes_total", service=SVC)
                     - v(before, "ipvsd_service_outgoing_bytes_total", service=SVC))
        print(f"traffic: {sum(sizes)} bytes of responses, service counted {out_bytes:.0f} bytes out")

        # break rs1 (receive string gone), fix it, kill it: health, transitions and reasons move
        lab.real("rs1").set_page("debian10\n")
        got = until_scraped(lab, lambda s: v(s, "ipvsd_check_up", **check(RS1)) == 0
                            and ("ipvsd_backend_weight", frozenset({"service": SVC, "real": RS1}.items())) not in s,
                            timeout=15, what="rs1 down and out (receive)")
        assert v(got, "ipvsd_check_failures_total", **check(RS1), reason="receive") >= 1
        assert v(got, "ipvsd_check_transitions_total", **check(RS1)) == transitions + 1
        assert v(got, "ipvsd_real_state", service=SVC, real=RS1, state="down") == 1
        assert v(got, "ipvsd_check_up", **check(RS2)) == 1
        lab.real("rs1").set_page("debian11-rs1\n")
        got = until_scraped(lab, lambda s: v(s, "ipvsd_check_up", **check(RS1)) == 1
                            and v(s, "ipvsd_backend_weight", service=SVC, real=RS1) == 1,
                            timeout=15, what="rs1 back")
        assert v(got, "ipvsd_check_transitions_total", **check(RS1)) == transitions + 2
        assert v(got, "ipvsd_check_consecutive_failures", **check(RS1)) == 0
        lab.real("rs1").stop(signal.SIGKILL)
        got = until_scraped(lab, lambda s: v(s, "ipvsd_check_failures_total", **check(RS1), reason="refused") >= 1
                            and v(s, "ipvsd_check_up", **check(RS1)) == 0, timeout=15, what="rs1 down (refused)")
        lab.real("rs1").start()
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=15, what="rs1 back after restart")

        # drain: weight 0 at once; deleted once its last connection is gone; still drained after a restart
        for _ in range(4):
            held = run_in(lab.client, lambda: socket.create_connection((lab.vip, 80), timeout=10))
            if keepalive_request(held) == "debian11-rs1":
                break
            held.close()
            held = None
        assert held is not None, "no connection landed on rs1"
        t0 = time.monotonic()
        p = ipvsd_cli(state, "drain", "10.2.1.242", "--reason", "kernel upgrade")
        assert p.returncode == 0, p.stderr
        assert lab.weights() == {RS1: 0, RS2: 1}, "weight 0 by the time `ipvsd drain` returns"
        print(f"drain -> weight 0: {time.monotonic() - t0:.2f}s (including the client's start)")
        passes = v(scrape(lab), "ipvsd_reconcile_passes_total", result="ok")
        until_scraped(lab, lambda s: v(s, "ipvsd_reconcile_passes_total", result="ok") >= passes + 2, timeout=30,
                      what="two more passes")
        assert lab.weights() == {RS1: 0, RS2: 1}, "a drained real with a live connection stays, at weight 0"
        assert keepalive_request(held) == "debian11-rs1", "the held connection still works"
        held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        held.close()
        held = None
        t0 = time.monotonic()
        wait_until(lambda: RS1 not in lab.weights(), timeout=60, what="drained rs1 deleted once idle")
        print(f"last connection closed -> rs1 deleted: {time.monotonic() - t0:.2f}s")

        assert d.stop() == 0
        d.start()
        d.wait_log("table reconciled with every check's result", timeout=90, run=d.starts)
        assert lab.weights() == {RS2: 1}, "still drained after a restart"
        st = ipvsd_cli(state, "status", "--json")
        assert st.returncode == 0, st.stderr
        reals = {r["real"]: r for r in json.loads(st.stdout)["services"][0]["reals"]}
        assert reals[RS1]["state"] == "maint" and "kernel upgrade" in reals[RS1]["reason"]
        assert reals[RS1]["kernel_weight"] is None and reals[RS2]["kernel_weight"] == 1
        text = ipvsd_cli(state, "status")
        assert "maint" in text.stdout and RS1 in text.stdout, text.stdout

        p = ipvsd_cli(state, "undrain", "10.2.1.242")
        assert p.returncode == 0, p.stderr
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=15, what="rs1 back after undrain")
    finally:
        if held is not None:
            held.close()
        if d.proc is not None:
            d.stop()

    # the events file saw it all, one JSON object per line
    seen = [json.loads(x) for x in events.read_text().splitlines()]
    downs = [e for e in seen if e["type"] == "transition" and e["real"] == RS1 and e["state"] == "down"]
    # a SIGKILL that lands while a probe's connection is open resets it; one that lands between probes
    # leaves the next one refused: both are the server gone, and the metrics above saw a refusal either way
    kinds = [e["kind"] for e in downs][:2]
    assert len(kinds) == 2 and kinds[0] == "receive" and kinds[1] in ("refused", "reset"), downs
    actions = [e["action"] for e in seen if e["type"] == "maintenance"]
    assert actions == ["drain", "undrain"], actions
