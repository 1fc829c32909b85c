"""results.json -> Markdown: medians, p99 and ipvsd/peer ratios per scenario, and the issue's targets, met or not.

Pure functions of the results; also runnable on the host: `python -m scripts.bench_lab.report results.json`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

PEERS = ("ldirectord", "keepalived")
DAEMONS = ("ipvsd", *PEERS)
R = dict[str, Any]


def summary(values: list[float | None]) -> R:
    """Median and p99 (nearest rank) of the measured values; `missed` counts the ones that timed out."""
    got = sorted(v for v in values if v is not None)
    out: R = {"n": len(got), "missed": len(values) - len(got)}
    if got:
        out["median"] = statistics.median(got)
        out["p99"] = got[max(0, math.ceil(0.99 * len(got)) - 1)]
    return out


def _num(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if digits else f"{v:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def _cell(s: R) -> str:
    if "median" not in s:
        return f"no result ({s['missed']} timed out)" if s.get("missed") else "–"
    miss = f" ({s['missed']} missed)" if s["missed"] else ""
    return f"{_num(s['median'])} / {_num(s['p99'])}{miss}"


def _why(r: R) -> str:
    return str(r.get("error") or r.get("skipped") or "")


DETECTION_ROWS = (("kill", "drain", "HTTP server killed → out of the table"),
                  ("kill", "restore", "server restarted (listening) → back in"),
                  ("page", "drain", "page loses the receive string → out"),
                  ("page", "restore", "page fixed → back in"))


def _samples(res: R, k: str, mode: str, what: str) -> list[float | None]:
    got = res.get(k, {}).get(mode, {})
    values: list[float | None] = list(got.get(what, []))
    if what == "restore":  # a real that never went out has no restore time (an early run stored 0 for it)
        values = [None if d is None else v for d, v in zip(got.get("drain", []), values, strict=False)]
    return values


def detection_stats(res: R) -> dict[tuple[str, str, str], R]:
    return {(k, mode, what): summary(_samples(res, k, mode, what))
            for k in DAEMONS for mode, what, _ in DETECTION_ROWS}


def detection_table(res: R) -> list[str]:
    st = detection_stats(res)
    reps = max((s["n"] + s["missed"] for s in st.values()), default=0)
    out = [f"### 1. Detection → drain, and restore (ms, median / p99 of {reps} repetitions)", "",
           "| event | ipvsd | ldirectord | keepalived | ipvsd / ldirectord | ipvsd / keepalived |",
           "|---|---:|---:|---:|---:|---:|"]
    for mode, what, label in DETECTION_ROWS:
        cells = [_cell(st[(k, mode, what)]) for k in DAEMONS]
        me = st[("ipvsd", mode, what)].get("median")
        ratios = [_ratio(me, st[(p, mode, what)].get("median")) for p in PEERS]
        out.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    starts = [_num(res.get(k, {}).get("startup_ms")) for k in DAEMONS]
    out.append("| start → both reals programmed (one run) | " + " | ".join(starts) + " | | |")
    notes = [f"{k}: {_why(res[k])}" for k in DAEMONS if _why(res.get(k, {}))]
    notes += [f"{k} {m}: {res[k][m]['aborted']}" for k in DAEMONS for m in ("kill", "page")
              if res.get(k, {}).get(m, {}).get("aborted")]
    return out + ([""] + [f"- {n}" for n in notes] if notes else [])


def scale_table(res: R) -> list[str]:
    out = ["### 2. Scale: N reals in one service, interval 1 s", "",
           "| N | daemon | all N programmed (s) | CPU s per 1,000 checks (of which kernel) | CPU ipvsd / this "
           "| checks/s (expected) "
           "| gap between checks of a real p50 / p99 (s) | RSS (MiB) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    ns = sorted({int(n) for k in DAEMONS for n in res.get(k, {}) if n.isdigit()})
    for n in ns:
        mine = res.get("ipvsd", {}).get(str(n), {}).get("cpu_s_per_1000_checks")
        for k in DAEMONS:
            r = res.get(k, {}).get(str(n), {})
            if _why(r):
                out.append(f"| {n} | {k} | {_why(r)} | | | | | |")
                continue
            inst = _num(r.get("install_s"), 1) if r.get("install_s") is not None else r.get("install_note", "–")
            cpu = r.get("cpu_s_per_1000_checks")
            kernel = r.get("sys_s_per_1000_checks")
            split = f" ({_num(kernel, 2)})" if kernel is not None else ""  # runs before the split: total alone
            vs = _ratio(mine, cpu) if k != "ipvsd" else ""
            out.append(f"| {n} | {k} | {inst} | {_num(cpu, 2)}{split} | {vs} "
                       f"| {_num(r.get('checks_per_s'), 1)} ({_num(r.get('expected_per_s'))}) "
                       f"| {_num(r.get('gap_p50_s'), 2)} / {_num(r.get('gap_p99_s'), 2)} "
                       f"| {_num(r.get('rss_mib'), 1)} |")
    return out


def _failed(req: R) -> int:
    return sum(v for k, v in req.items() if k != "ok")


def _req_cell(req: R) -> str:
    total = sum(req.values())
    bad = {k: v for k, v in req.items() if k != "ok" and v}
    detail = " (" + ", ".join(f"{v} {k}" for k, v in bad.items()) + ")" if bad else ""
    return f"{_failed(req)} of {total}{detail}"


def reload_table(res: R) -> list[str]:
    out = ["### 3. Reload disruption (SIGHUP after each edit, steady requests through the VIP)", "",
           "| edit | daemon | failed requests | untouched reals: entry changes / counter resets | applied (ms) |",
           "|---|---|---:|---:|---:|"]
    names = next((list(res[k]["phases"]) for k in DAEMONS if "phases" in res.get(k, {})), [])
    for name in names:
        for k in DAEMONS:
            r = res.get(k, {})
            if _why(r):
                out.append(f"| {name} | {k} | {_why(r)} | | |")
                continue
            p = r["phases"].get(name, {})
            applied = _num(p.get("applied_ms")) if p.get("reached_expected", True) else "not reached in 20 s"
            out.append(f"| {name} | {k} | {_req_cell(p.get('requests', {}))} | {p.get('untouched_changes')} / "
                       f"{p.get('untouched_counter_resets')} | {applied} |")
    return out


def restart_table(res: R) -> list[str]:
    out = ["### 4. Restart disruption (each daemon told to leave the table on stop; steady requests)", "",
           "| action | daemon | failed requests | table changes | time the table was not rs1+rs2 (ms) |",
           "|---|---|---:|---:|---:|"]
    for name in ("stop+start", "kill+start"):
        for k in DAEMONS:
            r = res.get(k, {})
            if _why(r):
                out.append(f"| {name} | {k} | {_why(r)} | | |")
                continue
            p = r["phases"].get(name, {})
            back = "" if p.get("back_to_expected", True) else " (not back)"
            out.append(f"| {name} | {k} | {_req_cell(p.get('requests', {}))} | {p.get('table_changes')} "
                       f"| {_num(p.get('not_full_ms'))}{back} |")
    return out


def programming_table(res: R) -> list[str]:
    ref = res.get("ipvsadm-restore", {}).get("complete_s")
    r0 = res.get("ipvsadm-restore", {})
    out = [f"### 5. Programming {r0.get('services', '?')} services × "
           f"{(r0.get('reals') or 0) // max(1, r0.get('services') or 1)} reals from an empty table", "",
           "| programmer | time until complete (s) | vs ipvsadm-restore | note |", "|---|---:|---:|---|"]
    for k in ("ipvsadm-restore", *DAEMONS):
        r = res.get(k, {})
        if _why(r):
            out.append(f"| {k} | – | – | {_why(r)} |")
            continue
        t = r.get("complete_s")
        notes = [r.get("note", "")]
        if r.get("extrapolated_s"):
            notes.append(f"{r['entries_per_s']} entries/s, ~{r['extrapolated_s']:.0f} s to complete at that rate")
        if "same_table_as_restore" in r:
            notes.append("the same rules as ipvsadm-restore's (`ipvsadm -Sn`)" if r["same_table_as_restore"]
                         else f"rules differ from ipvsadm-restore's: {r.get('table_diff')}")
        note = "; ".join(n for n in notes if n)
        out.append(f"| {k} | {_num(t, 1)} | {_ratio(t, ref)} | {note} |")
    return out


def edit_table(res: R) -> list[str]:
    r0: R = next((r for r in res.values() if r.get("services")), {})
    out = [f"### 6. One real taken out of a {r0.get('services', '?')}-service, {r0.get('reals', '?')}-real "
           "configuration and put back (file renamed into place → table changed)", "",
           "| daemon | how | edits | ms p50 / max | ops per edit | table sampled every (ms, mean / max) |",
           "|---|---|---:|---:|---|---:|"]
    for k, r in res.items():
        if _why(r):
            out.append(f"| {k} | | | {_why(r)} | | |")
            continue
        times = r.get("ms", [])
        poll = r.get("poll", {})
        st = summary(times)
        got = [t for t in times if t is not None]
        ops = r.get("ops")
        out.append(f"| {k} | {'autoreload' if k == 'ipvsd' else 'SIGHUP'} | {len(times)} | "
                   f"{_num(st.get('median'))} / {_num(max(got) if got else None)} | "
                   f"{', '.join(map(str, ops)) if ops is not None else '–'} | "
                   f"{_num(poll.get('mean_gap_ms'))} / {_num(poll.get('max_gap_ms'))} |")
    return out


def perf_targets(results: R) -> list[tuple[str, str, bool | None]]:
    """Issue 18's targets that one run measures: start-up, programming, an edit in a big configuration."""
    rows: list[tuple[str, str, bool | None]] = []
    det = results.get("detection", {})
    mine, ka = det.get("ipvsd", {}).get("startup_ms"), det.get("keepalived", {}).get("startup_ms")
    if mine is not None and ka is not None:
        rows.append(("start → seed reals programmed ≤ 2 × keepalived", f"{_num(mine)} vs {_num(ka)} ms "
                     f"({_ratio(mine, ka)} ×)", mine <= 2 * ka))
    prog = results.get("programming", {})
    mine, ref = prog.get("ipvsd", {}).get("complete_s"), prog.get("ipvsadm-restore", {}).get("complete_s")
    if mine is not None and ref is not None:
        rows.append(("programming 1,000 × 10 ≤ 1.0 × ipvsadm-restore", f"{_num(mine, 1)} vs {_num(ref, 1)} s "
                     f"({_ratio(mine, ref)} ×)", mine <= ref))
    ed = results.get("edit", {}).get("ipvsd", {})
    if ed.get("ms"):
        p50 = summary(ed["ms"]).get("median")
        ops = ed.get("ops", [])
        rows.append(("one real edited in 10,000: 1 op, p50 ≤ 100 ms", f"p50 {_num(p50)} ms; ops {ops}",
                     p50 is not None and p50 <= 100 and all(o == 1 for o in ops)))
    return rows


def targets(results: R) -> list[str]:
    """The issue's targets, each evaluated on this run's numbers."""
    rows: list[tuple[str, str, bool | None]] = []
    det = results.get("detection")
    if det:
        st = detection_stats(det)

        def med(k: str, mode: str, what: str) -> float | None:
            return st[(k, mode, what)].get("median")

        def best(mode: str, what: str) -> float | None:
            got = [m for p in PEERS if (m := med(p, mode, what)) is not None]
            return min(got) if got else None

        def check(label: str, mine: float | None, limit: float | None, how: str) -> None:
            ok = None if mine is None or limit is None else mine <= limit
            rows.append((label, f"{_num(mine)} ms; limit {_num(limit)} ms ({how})", ok))

        b = best("kill", "drain")
        check("killed → drained ≤ 0.2 × best peer", med("ipvsd", "kill", "drain"), b and 0.2 * b,
              f"0.2 × {_num(b)}")
        b = best("page", "drain")
        limit = None if b is None else min(b, 1000 * 1 / 2 + 100)
        check("receive string lost → drained ≤ best peer and ≤ interval/2 + 100 ms",
              med("ipvsd", "page", "drain"), limit, f"min({_num(b)}, 600)")
        for mode, label in (("kill", "restart"), ("page", "page fixed")):
            b = best(mode, "restore")
            check(f"restore ({label}) ≤ 0.5 × best peer", med("ipvsd", mode, "restore"), b and 0.5 * b,
                  f"0.5 × {_num(b)}")
    sc = results.get("scale")
    if sc:
        for n in sorted({int(n) for n in sc.get("ipvsd", {}) if n.isdigit()}):
            mine = sc.get("ipvsd", {}).get(str(n), {}).get("cpu_s_per_1000_checks")
            ka = sc.get("keepalived", {}).get(str(n), {}).get("cpu_s_per_1000_checks")
            ok = None if mine is None or ka is None else mine <= ka
            rows.append((f"CPU per check ≤ keepalived (N={n})", f"{_num(mine, 2)} vs {_num(ka, 2)} s/1,000", ok))
    for scen in ("reload", "restart"):
        r = results.get(scen, {}).get("ipvsd", {})
        if "phases" in r:
            failed = sum(_failed(p.get("requests", {})) for p in r["phases"].values())
            rows.append((f"{scen} disruption: 0 failed requests", f"{failed} failed", failed == 0))
    rows += perf_targets(results)
    out = ["### Targets (issues 8 and 18)", "", "| target | measured | met |", "|---|---|---|"]
    for label, measured, ok in rows:
        out.append(f"| {label} | {measured} | {'yes' if ok else 'no' if ok is False else '–'} |")
    return out


def _start_costs(costs: R) -> list[str]:
    """One line: the interpreter's start and `ipvsd run`'s imports, from each place, in this VM."""
    if not costs:
        return []
    parts = [f"{where}: `python -c pass` {c.get('python')} s, `ipvsd run`'s imports {c.get('imports')} s"
             for where, c in costs.items()]
    return [f"Start costs in this VM (best of three; installed = the VM's tmpfs, shared = 9p): {'; '.join(parts)}."]


def markdown(results: R) -> str:
    m = results.get("meta", {})
    out = [f"## ipvsd vs ldirectord vs keepalived — {m.get('date', '?')}", "",
           f"Kernel {m.get('kernel')}, {m.get('cpus')} vCPUs (emulated: compare ratios, not absolute times); "
           f"ipvsd {m.get('ipvsd')}, ldirectord {m.get('ldirectord')}, keepalived {m.get('keepalived')}, "
           f"nginx {m.get('nginx')}; {'quick mode; ' if m.get('quick') else ''}run took {m.get('elapsed_s')} s.",
           f"All daemons: {m.get('settings')}.",
           f"ipvsd's interpreter and modules: {m.get('daemon_files', 'the checkout, over the VM shared filesystem')}.",
           *_start_costs(m.get("start_costs_s", {})), ""]
    parts = (("detection", detection_table), ("scale", scale_table), ("reload", reload_table),
             ("restart", restart_table), ("programming", programming_table), ("edit", edit_table))
    for key, fn in parts:
        if key in results:
            out += [*fn(results[key]), ""]
    out += targets(results)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
