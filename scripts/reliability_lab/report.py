"""results.json -> a Markdown table: per scenario what was done, how many times, what was lost, and whether the
target (nothing lost) was met. Pure functions of the results; `python -m scripts.reliability_lab.report FILE`."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

R = dict[str, Any]


def _p(values: list[float]) -> str:
    if not values:
        return "–"
    v = sorted(values)
    return f"p50 {statistics.median(v):.2f} s, max {v[-1]:.2f} s"


def rows(res: R) -> list[tuple[str, str, str, bool]]:
    """(scenario, what was done, what was lost / measured, target met)."""
    out: list[tuple[str, str, str, bool]] = []

    def broken(name: str) -> bool:
        r = res.get(name)
        if r is None:
            if name in res.get("meta", {}).get("scenarios", ()):  # asked for, and no result: the run broke off
                out.append((name, "–", "no result (the run ended before it)", False))
            return True
        if "error" in r or "skipped" in r:
            out.append((name, "–", str(r.get("error") or r.get("skipped")), False))
            return True
        return False

    if not broken("restarts"):
        rounds = res["restarts"]["rounds"]
        kills = sum({"KILL": 1, "TERM": 0}.get(r["signal"], 2) for r in rounds)
        early = sum(1 for r in rounds if r.get("killed_in_start_up_at_s") is not None)
        terms = sum(1 for r in rounds if r["signal"] == "TERM")
        fails = sum(r["failed"] for r in rounds)
        reqs = sum(r["requests"] for r in rounds)
        changes = sum(r["table_changes"] for r in rounds)
        ops = sum(len(r["ops"]) for r in rounds)
        breaks = sum(r["long_lived_breaks"] for r in rounds)
        ready = [r["ready_s"] for r in rounds if r["ready_s"] is not None]
        ok = bool(rounds) and fails == 0 and changes == 0 and ops == 0 and breaks == 0 and len(ready) == len(rounds)
        out.append(("1 restarts", f"{kills} × kill -9 ({early} of them during a start-up, before READY), {terms} × "
                    "SIGTERM, each then a start",
                    f"failed requests {fails}/{reqs}, long-lived breaks {breaks}, table changes {changes}, kernel "
                    f"ops {ops}; READY {_p(ready)} ({len(rounds) - len(ready)} never)", ok))
    if not broken("reloads"):
        e = res["reloads"]["edits"]
        valid = [x for x in e if x["valid"]]
        bad = [x for x in e if not x["valid"]]
        v_ok = sum(1 for x in valid if x["ok"])
        b_ok = sum(1 for x in bad if x["ok"])
        r = res["reloads"]
        out.append(("2 reloads", f"{len(e)} edits (autoreload and SIGHUP): {len(valid)} valid, {len(bad)} invalid",
                    f"valid applied with exactly their ops {v_ok}/{len(valid)}; invalid rejected with a located "
                    f"error and the table kept {b_ok}/{len(bad)}; failed requests {r['failed']}/{r['requests']}, "
                    f"long-lived breaks {r['long_lived_breaks']}",
                    v_ok == len(valid) and b_ok == len(bad) and r["failed"] == 0 and r["long_lived_breaks"] == 0))
    if not broken("handedits"):
        e = res["handedits"]["edits"]
        own = [x for x in e if x["owned"]]
        foreign = [x for x in e if not x["owned"]]
        fixed = sum(1 for x in own if x["within_resync"])
        times = [x["restored_s"] for x in own if x["restored_s"] is not None]
        touched = sum(1 for x in foreign if x["touched"])
        out.append(("3 hand edits", f"{len(own)} ipvsadm edits of owned entries, {len(foreign)} of a foreign service",
                    f"owned restored within the resync interval {fixed}/{len(own)} ({_p(times)}); foreign touched "
                    f"{touched}/{len(foreign)}", fixed == len(own) and touched == 0))
    if not broken("hostile"):
        h = res["hostile"]
        late = [k for k, v in h["servers"].items() if not v["within_budget"]]
        listed = ", ".join(f"{k} {v['down_s']}" for k, v in h["servers"].items())
        ok = not late and h["false_down"] == 0 and not h["crashed"] and h["rss_growth_mb"] < 10 and \
            h["recovered_s"] is not None
        out.append(("4 hostile reals", f"{len(h['servers'])} servers turn hostile beside 2 healthy, held "
                    f"{h['hold_s']:.0f} s", f"out after (s): {listed}; late {len(late)}; healthy reals seen out "
                    f"{h['false_down']}; RSS growth {h['rss_growth_mb']} MB; crashed {h['crashed']}; all back "
                    f"after {h['recovered_s']} s", ok))
    if not broken("faults"):
        f = res["faults"]["faults"]
        good = sum(1 for x in f if x["ok"])
        said = ", ".join(f"{x['fault']}: said {x['said']}×, back after {x['recovered_s']} s, failed requests "
                         f"{x['failed']}{'' if x['table_ok'] else ', TABLE WRONG'}" for x in f)
        out.append(("5 faults (lab)", f"{len(f)} faults made around the running daemon under traffic",
                    f"{good}/{len(f)} kept the table, were said once and recovered; {said}",
                    bool(f) and good == len(f)))
    if "faults_native" in res and not broken("faults_native"):
        f = {k: v for k, v in res["faults_native"].items() if isinstance(v, dict)}
        tests = sum(v["passed"] + v["failed"] for v in f.values())
        out.append(("5 faults (fake kernel)", f"{len(f)} faults ({', '.join(k.replace('_', ' ') for k in f)}) "
                    f"in {tests} tests, natively",
                    "; ".join(f"{k.replace('_', ' ')}: {v['passed']} passed, {v['failed']} failed"
                              for k, v in f.items()),
                    all(v["ok"] for v in f.values()) and res["faults_native"].get("exit_status") == 0))
    if not broken("soak"):
        s = res["soak"]
        out.append(("6 soak", f"{s['minutes']} min, {sum(s['events'].values())} events "
                    f"({', '.join(f'{k} {v}' for k, v in sorted(s['events'].items()))})",
                    f"invariant violations {s['violations']} in {s['samples']} samples; requests failed "
                    f"{s['failed']}/{s['requests']} (in flight to a real as it died)", s["violations"] == 0))
    if "fuzz" in res and not broken("fuzz"):
        f = res["fuzz"]
        fmts = f["configs"]["per_format"]
        c = f["control"]
        done = ", ".join(f"{v['cases']:,} {k}" for k, v in fmts.items())
        lost = "; ".join(f"{k}: tracebacks {v['traceback']}, hangs {v['hang']}, unlocated {v['unlocated']} "
                         f"(accepted {v['accepted']:,}, located errors {v['located']:,})" for k, v in fmts.items())
        lost += (f"; control: {c['answered']}/{c['requests']} answered, hangs {c['hang']}, internal errors "
                 f"{c['internal_error']}, unhandled {c['unhandled']}, alive after {not c['dead_after']}")
        out.append(("7 fuzzed input", f"mutated configurations ({done}) and {c['requests']:,} control requests, "
                    f"natively, {f['seconds']:.0f} s", lost, f["bad"] == 0 and bool(f["complete"])))
    return out


def passed(res: R) -> bool:
    """Every scenario that ran met its target (and at least one ran)."""
    got = rows(res)
    return bool(got) and all(ok for *_, ok in got)


def markdown(res: R) -> str:
    m = res.get("meta", {})
    lines = [f"ipvsd reliability run, {m.get('date', '?')}, kernel {m.get('kernel', '?')}, ipvsd as "
             f"{m.get('user', '?')}; {m.get('settings', '')}; {m.get('elapsed_s', '?')} s in all", "",
             "| scenario | done | lost / measured | target met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'yes' if ok else '**no**'} |" for a, b, c, ok in rows(res)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="reliability_lab.report")
    ap.add_argument("results", type=Path)
    ap.add_argument("--fuzz", type=Path, help="the native fuzz run's JSON")
    ap.add_argument("--faults", type=Path, help="the fault tests' JSON (scripts/reliability_lab/faults.py)")
    ap.add_argument("--check", action="store_true", help="print nothing; exit 1 unless every target is met")
    args = ap.parse_args(argv)
    res: R = json.loads(args.results.read_text())
    if args.fuzz:
        try:
            res["fuzz"] = json.loads(args.fuzz.read_text())
        except (OSError, ValueError) as e:
            res["fuzz"] = {"error": f"no fuzz results ({e})"}
    if args.faults:
        try:
            res["faults_native"] = json.loads(args.faults.read_text())
        except (OSError, ValueError) as e:
            res["faults_native"] = {"error": f"no fault results ({e})"}
    if args.check:
        return 0 if passed(res) else 1
    print(markdown(res), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
