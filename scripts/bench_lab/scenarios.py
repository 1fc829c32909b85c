"""The six scenarios, each run for every daemon on the same lab, bounded in count and time.

Every function returns plain data (lists of seconds, counts) for report.py; a scenario that cannot finish
for one daemon records why ("error"/"skipped") and the run goes on. Times are time.monotonic() taken in this
process: the event (a kill, a page edit, a config reload) just before it happens, its effect when the table
watcher first sees it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scripts.bench_lab import many as manymod
from scripts.bench_lab.peers import DAEMONS, RENDER, Daemon, Virtual, cpu_times, rss_kib
from scripts.bench_lab.poll import Table, Watcher, counts, dest_count, one_service
from scripts.bench_lab.traffic import Traffic
from tests.kernel.lab import RECEIVE, Lab, RealHost
from tests.netns import sh

SVC80 = "TCP 10.2.0.240:80"
SVC8080 = "TCP 10.2.0.240:8080"
Result = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run: the defaults fit the 60-minute budget; QUICK is for development."""

    reps: int = 10
    startup_cap: float = 90.0
    scale_ns: tuple[int, ...] = (100, 500, 1000)
    scale_window: float = 20.0
    install_cap: float = 120.0
    prog_services: int = 1000
    prog_reals: int = 10
    prog_cap: float = 150.0
    edits: int = 6
    traffic_rate: float = 25.0
    hold: float = 3.0
    restart_down: float = 2.0
    restart_settle: float = 10.0
    daemons: tuple[str, ...] = DAEMONS  # fewer only for development (an A/B of ipvsd): the report needs all three


QUICK = Plan(reps=3, scale_ns=(50,), scale_window=5.0, install_cap=45.0, prog_services=100, prog_cap=60.0,
             hold=2.0, restart_settle=8.0, edits=2)


@dataclass
class Bench:
    """What every scenario shares: the lab, a private work directory, the plan, a seeded random source."""

    lab: Lab
    work: Path
    plan: Plan
    deadline: float
    rng: random.Random = field(default_factory=lambda: random.Random(8))
    many: manymod.Many | None = None
    restored: list[str] | None = None  # `ipvsadm -Sn` of the table ipvsadm-restore programmed, sorted

    def say(self, msg: str) -> None:
        print(f"bench[{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def daemon(self, kind: str, scenario: str) -> Daemon:
        return Daemon(kind, self.work / scenario / kind, ns=self.lab.lb)

    def flush(self) -> None:
        sh("ipvsadm", "-C", ns=self.lab.lb)

    def addr(self, name: str) -> str:
        return f"{self.lab.real(name).addr}:80"


def ms(t0: float, t1: float | None) -> float | None:
    return None if t1 is None else round((t1 - t0) * 1000, 1)


def up(table: Table, dest: str, svc: str = SVC80) -> bool:
    return table.get(svc, {}).get(dest, 0) > 0


def exactly(expected: dict[str, dict[str, int]]) -> Callable[[Table], bool]:
    return lambda t: t == expected


def start_real(r: RealHost) -> float:
    """Start a real's nginx; return the monotonic time its listening socket first shows (polled every 2 ms)."""
    r.proc = subprocess.Popen(
        ["ip", "netns", "exec", r.name, "nginx", "-e", str(r.dir / "error.log"), "-c", str(r.dir / "nginx.conf")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid, deadline = r.proc.pid, time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if ":0050 00000000:0000 0A" in Path(f"/proc/{pid}/net/tcp").read_text():
                return time.monotonic()
        time.sleep(0.002)
    raise RuntimeError(f"nginx in {r.name} did not listen within 30 s")


def stop_real(r: RealHost) -> float:
    """SIGTERM a real's nginx (it closes its sockets: connection refused); return the time just before."""
    assert r.proc is not None
    t0 = time.monotonic()
    r.proc.send_signal(signal.SIGTERM)
    r.proc.wait(30)
    r.proc = None
    return t0


def set_page(r: RealHost, text: str) -> float:
    t0 = time.monotonic()
    r.set_page(text)
    return t0


def run_daemon(b: Bench, d: Daemon, body: Callable[[], Result]) -> Result:
    """Run `body` with the table flushed before and after, and the daemon killed whatever happens."""
    b.flush()
    try:
        return body()
    except Exception as e:  # one daemon's failure must not sink the whole run
        b.say(f"{d.kind}: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        if d.running:
            d.kill()
        b.flush()


# --- 1. detection -> drain, and restore ------------------------------------------------------------------------

def detection(b: Bench, kind: str) -> Result:
    rs1, rs2 = b.lab.real("rs1"), b.lab.real("rs2")
    a1, a2 = b.addr("rs1"), b.addr("rs2")
    d = b.daemon(kind, "detection")
    d.write([Virtual(b.lab.vip, 80, (rs1.addr, rs2.addr))])

    # Every daemon gets the same phases against its check cycle, spread evenly over one interval (a shared
    # random stream gave each daemon different draws: keepalived's page faults all landed late in its cycle).
    phases = [(i + 0.5) / b.plan.reps for i in range(b.plan.reps)]
    random.Random(8).shuffle(phases)
    pauses = random.Random(9)

    def body() -> Result:
        out: Result = {"kill": {"drain": [], "restore": []}, "page": {"drain": [], "restore": []}}
        with Watcher(b.lab.lb, 0.005) as w:
            t0 = d.start()
            both = w.wait_for(lambda t: up(t, a1) and up(t, a2), since=t0, timeout=b.plan.startup_cap)
            out["startup_ms"] = ms(t0, both)
            if both is None:
                raise RuntimeError(f"rs1 and rs2 not both up {b.plan.startup_cap} s after start")
            time.sleep(2.0)
            for mode in ("kill", "page"):
                for i in range(b.plan.reps):
                    ready = w.wait_for(lambda t: up(t, a1) and up(t, a2), since=time.monotonic(), timeout=20)
                    if ready is None:
                        out[mode]["aborted"] = f"rep {i}: rs1 not back within 20 s"
                        break
                    time.sleep(phases[i] * d.settings.interval)  # a phase against the check cycle
                    t_fail = stop_real(rs1) if mode == "kill" else set_page(rs1, "maintenance-rs1\n")
                    gone = w.wait_for(lambda t: not up(t, a1), since=t_fail, timeout=10)
                    out[mode]["drain"].append(ms(t_fail, gone))
                    time.sleep(pauses.uniform(1, 2))
                    t_fix = start_real(rs1) if mode == "kill" else set_page(rs1, f"{RECEIVE}-rs1\n")
                    back = w.wait_for(lambda t: up(t, a1), since=t_fix, timeout=10) if gone else None
                    out[mode]["restore"].append(ms(t_fix, back))  # never out: no restore to time
                    b.say(f"{kind} {mode} {i + 1}/{b.plan.reps}: drained {ms(t_fail, gone)} ms, "
                          f"restored {ms(t_fix, back)} ms")
            out["poll"] = {"samples": w.samples, "max_gap_ms": round(w.max_gap * 1000, 1)}
        return out

    try:
        return run_daemon(b, d, body)
    finally:
        if rs1.proc is None:
            start_real(rs1)
        rs1.set_page(f"{RECEIVE}-rs1\n")


# --- 2. scale ---------------------------------------------------------------------------------------------------

def scale(b: Bench, kind: str, n: int) -> Result:
    assert b.many is not None
    many = b.many
    addrs = manymod.addresses(n)
    d = b.daemon(kind, f"scale-{n}")
    d.write([Virtual(b.lab.vip, 80, tuple(addrs))])
    interval = d.settings.interval

    def body() -> Result:
        out: Result = {"n": n}
        with Watcher(b.lab.lb, 0.1, digest=counts) as w:
            t0 = d.start()
            done = w.wait_for(lambda t: t["count"]["up"] >= n, since=t0, timeout=b.plan.install_cap)
            out["install_s"] = None if done is None else round(done - t0, 2)
            out["programmed"] = w.current().get("count", {}).get("up", 0)
            if done is None:
                out["install_note"] = f"{out['programmed']}/{n} up after {b.plan.install_cap:g} s"
            time.sleep(2.0)
            pids = d.pids()
            offset = many.log_size()
            (u0, s0), w0, m0 = cpu_times(pids), time.time(), time.monotonic()
            time.sleep(b.plan.scale_window)
            pids = d.pids()
            (u1, s1), w1, m1 = cpu_times(pids), time.time(), time.monotonic()
            out["rss_mib"] = round(rss_kib(pids) / 1024, 1)
            out["processes"] = len(pids)
        time.sleep(1.5)  # nginx flushes its access log every second
        seen = many.checks(w0, w1, offset)
        checks = sum(len(v) for v in seen.values())
        gaps = sorted(y - x for v in seen.values() for x, y in itertools.pairwise(v))
        window = m1 - m0
        out.update({
            "window_s": round(window, 2), "cpu_s": round(u1 - u0 + s1 - s0, 2), "cpu_sys_s": round(s1 - s0, 2),
            "checks": checks,
            "cpu_s_per_1000_checks": round((u1 - u0 + s1 - s0) / checks * 1000, 3) if checks else None,
            "sys_s_per_1000_checks": round((s1 - s0) / checks * 1000, 3) if checks else None,
            "checks_per_s": round(checks / window, 1), "expected_per_s": round(n / interval, 1),
            "reals_checked": len(seen),
            "gap_p50_s": round(gaps[len(gaps) // 2], 3) if gaps else None,
            "gap_p99_s": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 3) if gaps else None,
        })
        b.say(f"{kind} scale {n}: {out}")
        return out

    return run_daemon(b, d, body)


# --- 3. reload disruption ------------------------------------------------------------------------------------------

def _untouched_changes(w: Watcher, t0: float, t1: float, untouched: list[str], before: Table) -> int:
    """How many times the watcher saw an untouched real's entry (presence or weight) differ from before."""
    ref = {a: before.get(SVC80, {}).get(a) for a in untouched}
    prev = dict(ref)
    n = 0
    for c in w.changes_between(t0, t1):
        cur = {a: c.table.get(SVC80, {}).get(a) for a in untouched}
        n += sum(1 for a in untouched if cur[a] != prev[a])
        prev = cur
    return n


def dest_conns(ns: str) -> dict[tuple[str, str], int]:
    """Cumulative connection counters per (service, dest): a counter that went down means delete + re-add."""
    text = sh("ipvsadm", "-Ln", "--stats", "--exact", ns=ns).stdout
    out: dict[tuple[str, str], int] = {}
    svc = ""
    for line in text.splitlines():
        parts = line.split()
        if line.startswith(("TCP", "UDP")):
            svc = f"{parts[0]} {parts[1]}"
        elif len(parts) > 2 and parts[0] == "->" and parts[2].isdigit():  # not the "-> RemoteAddress" header
            out[(svc, parts[1])] = int(parts[2])
    return out


def reload(b: Bench, kind: str) -> Result:
    vip = b.lab.vip
    r = {name: b.lab.real(name).addr for name in ("rs1", "rs2", "rs3", "rs4")}
    a = {name: f"{addr}:80" for name, addr in r.items()}
    base = Virtual(vip, 80, (r["rs1"], r["rs2"], r["rs3"]))
    extra = Virtual(vip, 8080, (r["rs4"],), rport=80)
    phases: list[tuple[str, list[Virtual], str | None, Table]] = [
        ("comment", [base], None, {SVC80: {a["rs1"]: 1, a["rs2"]: 1, a["rs3"]: 1}}),
        ("new service", [base, extra], None,
         {SVC80: {a["rs1"]: 1, a["rs2"]: 1, a["rs3"]: 1}, SVC8080: {a["rs4"]: 1}}),
        ("real added", [Virtual(vip, 80, (*base.reals, r["rs4"])), extra], a["rs4"],
         {SVC80: {a["rs1"]: 1, a["rs2"]: 1, a["rs3"]: 1, a["rs4"]: 1}, SVC8080: {a["rs4"]: 1}}),
        ("real removed", [Virtual(vip, 80, (r["rs1"], r["rs2"], r["rs4"])), extra], a["rs3"],
         {SVC80: {a["rs1"]: 1, a["rs2"]: 1, a["rs4"]: 1}, SVC8080: {a["rs4"]: 1}}),
    ]
    d = b.daemon(kind, "reload")
    d.write([base], comment="first")

    def body() -> Result:
        out: Result = {"phases": {}}
        with Watcher(b.lab.lb, 0.005) as w:
            t0 = d.start()
            if w.wait_for(exactly(phases[0][3]), since=t0, timeout=b.plan.startup_cap) is None:
                raise RuntimeError("rs1-rs3 not all up after start")
            with Traffic(b.lab.client, vip, rate=b.plan.traffic_rate) as traffic:
                time.sleep(b.plan.hold)
                for i, (name, virtuals, touched, expected) in enumerate(phases):
                    untouched = [x for x in expected.get(SVC80, {}) if x != touched and x in w.current().get(SVC80, {})]
                    before_table, before_conns = w.current(), dest_conns(b.lab.lb)
                    d.write(virtuals, comment=f"edit {i + 1}: {name}")
                    tp = d.reload()
                    done = w.wait_for(exactly(expected), since=tp, timeout=20)
                    time.sleep(b.plan.hold)
                    t1 = time.monotonic()
                    after_conns = dest_conns(b.lab.lb)
                    resets = sum(1 for x in untouched
                                 if after_conns.get((SVC80, x), -1) < before_conns.get((SVC80, x), 0))
                    out["phases"][name] = {
                        "applied_ms": ms(tp, done) if name != "comment" else None,
                        "requests": traffic.between(tp, t1),
                        "untouched_changes": _untouched_changes(w, tp, t1, untouched, before_table),
                        "untouched_counter_resets": resets,
                        "table_changes": len(w.changes_between(tp, t1)),
                        "reached_expected": done is not None,
                    }
                    b.say(f"{kind} reload {name}: {out['phases'][name]}")
        return out

    return run_daemon(b, d, body)


# --- 4. restart disruption -----------------------------------------------------------------------------------------

def restart(b: Bench, kind: str) -> Result:
    a1, a2 = b.addr("rs1"), b.addr("rs2")
    expected = {SVC80: {a1: 1, a2: 1}}
    d = b.daemon(kind, "restart")
    d.write([Virtual(b.lab.vip, 80, (b.lab.real("rs1").addr, b.lab.real("rs2").addr))], keep_on_stop=True)

    def body() -> Result:
        out: Result = {"keep_on_stop": True, "phases": {}}
        with Watcher(b.lab.lb, 0.005) as w:
            t0 = d.start()
            if w.wait_for(exactly(expected), since=t0, timeout=b.plan.startup_cap) is None:
                raise RuntimeError("rs1 and rs2 not up after start")
            with Traffic(b.lab.client, b.lab.vip, rate=b.plan.traffic_rate) as traffic:
                time.sleep(b.plan.hold)
                for name in ("stop+start", "kill+start"):
                    tp = time.monotonic()
                    stop_s = 0.0
                    if name == "stop+start":
                        stop_s = d.stop()
                    else:
                        d.kill()
                    time.sleep(b.plan.restart_down)
                    d.start()
                    time.sleep(b.plan.restart_settle)
                    ok = w.wait_for(exactly(expected), since=time.monotonic(), timeout=30)
                    time.sleep(1.0)
                    t1 = time.monotonic()
                    changes = w.changes_between(tp, t1)
                    out["phases"][name] = {
                        "requests": traffic.between(tp, t1),
                        "table_changes": len(changes),
                        "not_full_ms": _not_full_ms(w, tp, t1, expected),
                        "stop_s": round(stop_s, 2),
                        "back_to_expected": ok is not None,
                    }
                    b.say(f"{kind} restart {name}: {out['phases'][name]}")
        return out

    return run_daemon(b, d, body)


def _not_full_ms(w: Watcher, t0: float, t1: float, expected: Table) -> float:
    """Milliseconds in [t0, t1] during which the table was not the expected one."""
    before = [c for c in w.changes if c.t <= t0]
    state_ok = bool(before) and before[-1].table == expected
    last, bad = t0, 0.0
    for c in w.changes_between(t0, t1):
        if not state_ok:
            bad += c.t - last
        last, state_ok = c.t, c.table == expected
    if not state_ok:
        bad += t1 - last
    return round(bad * 1000, 1)


# --- 5. programming ------------------------------------------------------------------------------------------------

def _prog_virtuals(services: int, reals: int) -> list[Virtual]:
    out = []
    for i in range(services):
        rs = tuple(f"10.4.{j // 250}.{1 + j % 250}" for j in range(i * reals, (i + 1) * reals))
        out.append(Virtual(f"10.3.{i // 250}.{1 + i % 250}", 80, rs, checked=False))
    return out


def _saved(b: Bench) -> list[str]:
    """The director's table as `ipvsadm -Sn` writes it, lines sorted (dests come newest first)."""
    return sorted(sh("ipvsadm", "-Sn", ns=b.lab.lb, timeout=120).stdout.splitlines())


def _same_table(b: Bench, out: Result) -> None:
    """Record whether a daemon programmed exactly the rules ipvsadm-restore did: the same work was timed."""
    if b.restored is None:
        return
    got = _saved(b)
    out["same_table_as_restore"] = got == b.restored
    if got != b.restored:
        out["table_diff"] = sorted(set(got) ^ set(b.restored))[:4]


def programming(b: Bench, kind: str) -> Result:
    s, n = b.plan.prog_services, b.plan.prog_reals
    virtuals = _prog_virtuals(s, n)
    total = s * n

    def complete(t: Table) -> bool:
        c = t.get("count", {})
        return c.get("svc") == s and c.get("rs") == total

    if kind == "ipvsadm-restore":
        rules = "".join(f"-A -t {v.vip}:80 -s rr\n" + "".join(f"-a -t {v.vip}:80 -r {r}:80 -m -w 1\n" for r in v.reals)
                        for v in virtuals)
        b.flush()
        with Watcher(b.lab.lb, 0.25, digest=counts) as w:
            t0 = time.monotonic()
            p = subprocess.run(["ip", "netns", "exec", b.lab.lb, "ipvsadm-restore"], input=rules, text=True,
                               capture_output=True, timeout=b.plan.prog_cap)
            t_exit = time.monotonic()
            done = w.wait_for(complete, since=t0, timeout=30)
        b.restored = _saved(b) if done is not None else None
        b.flush()
        return {"services": s, "reals": total, "complete_s": None if done is None else round(done - t0, 2),
                "exit_s": round(t_exit - t0, 2), "rc": p.returncode}

    d = b.daemon(kind, "programming")
    d.write(virtuals)

    def body() -> Result:
        with Watcher(b.lab.lb, 0.25, digest=counts) as w:
            t0 = d.start()
            done = w.wait_for(complete, since=t0, timeout=b.plan.prog_cap)
            c = w.current().get("count", {})
            first = next((ch.t for ch in w.changes if ch.table.get("count", {}).get("rs", 0) > 0), None)
        out: Result = {"services": s, "reals": total, "complete_s": None if done is None else round(done - t0, 2),
                       "first_entry_s": None if first is None else round(first - t0, 2)}
        if done is not None:
            _same_table(b, out)
        if done is None:
            got = c.get("svc", 0) + c.get("rs", 0)
            out["note"] = (f"{c.get('svc', 0)}/{s} services and {c.get('rs', 0)}/{total} reals after "
                           f"{b.plan.prog_cap:g} s")
            if first is not None and got:
                rate = got / max(0.001, b.plan.prog_cap - (first - t0))
                out["entries_per_s"] = round(rate, 1)
                out["extrapolated_s"] = round((first - t0) + (s + total) / rate, 0)
        b.say(f"{kind} programming: {out}")
        return out

    return run_daemon(b, d, body)


SCENARIOS = ("detection", "scale", "reload", "restart", "programming", "edit")


# --- 6. one real edited in a big configuration -----------------------------------------------------------------

_OP = re.compile(r"\bipvsadm -[AEDaed] ")  # an op ipvsd logs as it applies it


def _quiet(log: Path, still: float, timeout: float) -> None:
    """Wait until `log` has not grown for `still` seconds (at most `timeout`)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = log.stat().st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        time.sleep(0.2)


def edit(b: Bench, kind: str) -> Result:
    """The programming scenario's 1,000 × 10 table; then one real taken out of the file and put back, in turn,
    `edits` times: file renamed into place -> the kernel's table changed, and (ipvsd) the ops the reload made.
    ipvsd reloads by itself (`watch_config`); keepalived is sent SIGHUP right after the rename."""
    s, n = b.plan.prog_services, b.plan.prog_reals
    full = _prog_virtuals(s, n)
    total = s * n
    d = b.daemon(kind, "edit")
    d.write(full, autoreload=kind == "ipvsd")

    def reals_are(count: int) -> Callable[[Table], bool]:
        return lambda t: t.get("count", {}).get("svc") == s and t.get("count", {}).get("rs") == count

    def has_reals(count: int) -> Callable[[Table], bool]:
        return lambda t: t.get("count", {}).get("rs") == count

    def body() -> Result:
        times: list[float | None] = []
        ops: list[int] = []
        renamed: list[float] = []
        wrong: list[str] = []
        samples, span, max_gap = 0, 0.0, 0.0
        with Watcher(b.lab.lb, 0.02, digest=counts) as w:
            t0 = d.start()
            if w.wait_for(reals_are(total), since=t0, timeout=b.plan.prog_cap) is None:
                return {"error": f"the table was not complete after {b.plan.prog_cap:g} s"}
        _quiet(d.log, 2.0, 120)  # the start's own work done: ipvsd logs its 11,000 ops after the batch
        for i in range(b.plan.edits):
            k = (i // 2 * 97) % s  # a different service every other edit
            out = i % 2 == 0
            virtuals = [replace(v, reals=v.reals[:-1]) if j == k and out else v for j, v in enumerate(full)]
            tmp = d.workdir.parent / f"{kind}.edit"  # written beside the watched directory, renamed in
            tmp.write_text(RENDER[kind](virtuals, d.settings, d.workdir))
            offset = d.log.stat().st_size
            want = n - 1 if out else n
            # Timed on the edited service alone (a few ms a sample); the whole table is compared after.
            with Watcher(b.lab.lb, 0.002, digest=dest_count, source=one_service(6, full[k].vip, full[k].port)) as one:
                t1 = time.monotonic()
                renamed.append(round(time.time(), 3))  # wall clock, to set beside the daemon's log lines
                tmp.rename(d.conf)
                if kind != "ipvsd":
                    d.reload()
                done = one.wait_for(has_reals(want), since=t1, timeout=120)
            times.append(ms(t1, done))
            samples, span, max_gap = samples + one.samples - 1, span + one.span, max(max_gap, one.max_gap)
            _quiet(d.log, 1.0, 30)  # what else the reload does lands in the log before it is read
            with Watcher(b.lab.lb, 0.02, digest=counts) as whole:
                if not reals_are(total - 1 if out else total)(whole.current()):
                    wrong.append(f"edit {i + 1}: {whole.current()}")
            if kind == "ipvsd":
                with d.log.open() as f:
                    f.seek(offset)
                    ops.append(len(_OP.findall(f.read())))
            b.say(f"{kind} edit {i + 1}/{b.plan.edits} ({'real out' if out else 'real back'}): "
                  f"{times[-1]} ms{f', {ops[-1]} ops' if ops else ''}")
        # The edited service's dests are read every 2 ms plus the time one netlink read takes: the mean gap
        # between samples is the figures' resolution (a change is seen, on average, half a gap late).
        gap = span / samples * 1000 if samples else None
        out_: Result = {"services": s, "reals": total, "ms": times, "sampling_ms": 2, "renamed_at": renamed,
                        "poll": {"samples": samples, "mean_gap_ms": None if gap is None else round(gap, 1),
                                 "max_gap_ms": round(max_gap * 1000, 1)}}
        if wrong:
            out_["error"] = f"the table after an edit was not the file's: {'; '.join(wrong)}"
        if kind == "ipvsd":
            out_["ops"] = ops
        return out_

    return run_daemon(b, d, body)


def run_all(b: Bench, wanted: tuple[str, ...], results: Result, save: Callable[[], None]) -> Result:
    """Every wanted scenario for every daemon, in this order, into `results` (saved after each scenario, so a
    run cut short keeps what it measured); skip what the time budget no longer allows."""

    def budget(need: float, what: str) -> bool:
        if b.left() < need:
            b.say(f"skipping {what}: {b.left():.0f} s left of the time budget")
            return False
        return True

    if "detection" in wanted:
        results["detection"] = {k: detection(b, k) if budget(120, f"detection {k}") else {"skipped": "time budget"}
                                for k in b.plan.daemons}
        save()
    if "reload" in wanted:
        results["reload"] = {k: reload(b, k) if budget(90, f"reload {k}") else {"skipped": "time budget"}
                             for k in b.plan.daemons}
        save()
    if "restart" in wanted:
        results["restart"] = {k: restart(b, k) if budget(90, f"restart {k}") else {"skipped": "time budget"}
                              for k in b.plan.daemons}
        save()
    if "scale" in wanted:
        top = max(b.plan.scale_ns)
        b.many = manymod.Many(b.work / "many", top, lb=b.lab.lb).up()
        try:
            results["scale"] = {}
            for k in b.plan.daemons:
                per: Result = {}
                for n in b.plan.scale_ns:
                    failed = [m for m, v in per.items() if v.get("install_s") is None]
                    if failed:
                        per[str(n)] = {"skipped": f"did not program N={failed[0]} within "
                                                  f"{b.plan.install_cap:g} s"}
                    elif budget(b.plan.install_cap + b.plan.scale_window + 20, f"scale {k} {n}"):
                        per[str(n)] = scale(b, k, n)
                    else:
                        per[str(n)] = {"skipped": "time budget"}
                results["scale"][k] = per
                save()
        finally:
            b.many.down()
    if "programming" in wanted:
        results["programming"] = {"ipvsadm-restore": programming(b, "ipvsadm-restore")}
        for k in b.plan.daemons:
            ok = budget(b.plan.prog_cap + 30, f"programming {k}")
            results["programming"][k] = programming(b, k) if ok else {"skipped": "time budget"}
            save()
    if "edit" in wanted:
        results["edit"] = {}
        for k in b.plan.daemons:
            if k == "ldirectord":  # it does not program the 10,000 reals within the cap (the programming scenario)
                continue
            ok = budget(b.plan.prog_cap + b.plan.edits * 30, f"edit {k}")
            results["edit"][k] = edit(b, k) if ok else {"skipped": "time budget"}
            save()
    return results
