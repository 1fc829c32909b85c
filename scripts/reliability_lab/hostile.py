"""Scenario 4, hostile real servers: seven reals turn hostile at once beside two healthy ones.

Slowloris, a 1 GiB body, garbage, a TLS server answering plain HTTP, a blackhole (DROP), a server that accepts
and never answers, one that resets mid-response. Each must be out of the table within one interval plus its
check's timeout; the healthy reals must never leave; the daemon must not crash, and its RSS grow < 10 MB over
the rounds of checks against them. Then the servers behave again, and every real must come back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from scripts.bench_lab.peers import ROOT
from scripts.reliability_lab.rig import Layout, Real, Result, Rig, Say, Service, expected, write_atomic
from tests.netns import sh

MODES = {8001: "slowloris", 8002: "huge", 8003: "garbage", 8004: "tls", 8005: "silent", 8006: "reset",
         8007: "blackhole"}
BUDGET = 1.0 + 1.0  # interval + timeout of the suite's checks


def run(rig: Rig, say: Say, *, hold: float) -> Result:
    lab = rig.lab
    rs3 = lab.real("rs3")
    modes = rig.work / "modes.json"
    write_atomic(modes, "{}")
    server = subprocess.Popen(["ip", "netns", "exec", rs3.name, sys.executable, "-m",
                               "scripts.reliability_lab.hostile_server", str(modes), *map(str, MODES)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = rig.layout
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"listening":
            return {"error": "the hostile server did not start"}
        healthy = tuple(Real(lab.real(n).addr) for n in ("rs1", "rs2"))
        hostile = tuple(Real(rs3.addr, p) for p in MODES)
        rig.write(base.with_service(Service("hostile", 8080, healthy + hostile)))
        all_up = expected(rig.layout, set(), set())
        t0 = time.monotonic()
        if rig.settle(all_up, since=t0, timeout=90) is None:
            return {"error": f"the hostile servers never all came up while behaving: {rig.table()}"}
        sh("iptables", "-L", "-n", ns=rs3.name)  # loads the netfilter modules now, not inside the timed part
        time.sleep(3)
        rss0 = rig.rss_kib()
        t_bad = time.monotonic()
        write_atomic(modes, json.dumps({str(p): m for p, m in MODES.items() if m != "blackhole"}))
        sh("iptables", "-I", "INPUT", "-p", "tcp", "--dport", "8007", "-j", "DROP", ns=rs3.name)
        # the blackhole starts when the rule is in, not when the command was forked
        since = {p: time.monotonic() if m == "blackhole" else t_bad for p, m in MODES.items()}
        out: dict[str, Result] = {}
        down = {r.dest for r in hostile}
        gone_all = rig.settle(expected(rig.layout, down, set()), since=t_bad, timeout=60)
        for r in hostile:
            t = next((c.t for c in rig.watcher.changes_between(t_bad, time.monotonic())
                      if r.dest not in c.table.get("TCP 10.2.0.240:8080", {})), None)
            t0 = since[r.port]
            out[MODES[r.port]] = {"down_s": None if t is None else round(t - t0, 2),
                                  "within_budget": t is not None and t - t0 <= BUDGET + 1.0}
        say(f"hostile: all out after {None if gone_all is None else round(gone_all - t_bad, 2)} s: "
            + ", ".join(f"{k} {v['down_s']}" for k, v in out.items()))
        rss_peak = rss0
        t_end = time.monotonic() + hold
        while time.monotonic() < t_end and rig.running:
            rss_peak = max(rss_peak, rig.rss_kib())
            time.sleep(1)
        crashed = not rig.running
        false_down = sum(1 for c in rig.watcher.changes_between(t_bad, time.monotonic())
                         for svc in c.table.values() for r in healthy if r.dest not in svc)
        rss1 = rig.rss_kib()
        # ...and back: every server behaves again; all of them must return.
        sh("iptables", "-D", "INPUT", "-p", "tcp", "--dport", "8007", "-j", "DROP", ns=rs3.name)
        write_atomic(modes, "{}")
        t_good = time.monotonic()
        back = rig.settle(all_up, since=t_good, timeout=60)
        back_s = None if back is None else round(back - t_good, 2)
        say(f"hostile: held {hold:.0f} s; RSS {rss0} -> {rss1} KiB (peak {rss_peak}); healthy reals seen out "
            f"{false_down} times; crashed {crashed}; all back after {back_s} s")
        return {"servers": out, "rss_kib": {"before": rss0, "after": rss1, "peak": rss_peak},
                "rss_growth_mb": round((rss_peak - rss0) / 1024, 1), "false_down": false_down, "crashed": crashed,
                "hold_s": hold, "recovered_s": back_s}
    finally:
        server.kill()
        server.wait(30)
        rig.write(Layout(base.services))
