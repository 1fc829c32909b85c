"""Inside the lab VM: build the topology once, run the reliability scenarios against one ipvsd, write results.json.

    python -m scripts.reliability_lab --out DIR [--quick] [--soak-minutes M] [--user UID] [scenario ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from scripts.bench_lab.peers import ROOT
from scripts.reliability_lab import faults_lab, handedits, hostile, reloads, report, restarts, soak
from scripts.reliability_lab.rig import Rig, base_layout
from tests.kernel import installed
from tests.kernel.lab import Lab

SCENARIOS = ("handedits", "hostile", "faults", "reloads", "restarts", "soak")


@dataclass(frozen=True)
class Plan:
    """How much of each scenario: the issue's counts by default; QUICK is the slice CI runs."""

    kills: int = 100
    terms: int = 20
    edits: int = 100
    soak_minutes: float = 60.0
    hostile_hold: float = 60.0


QUICK = Plan(kills=3, terms=1, edits=8, soak_minutes=1.0, hostile_hold=10.0)


def unprivileged(uid: int, work: Path) -> tuple[str, ...]:
    """setpriv to `uid` with CAP_NET_ADMIN and CAP_NET_RAW only, as the systemd unit runs the daemon."""
    for d in (work / "state", work / "run"):
        os.chown(d, uid, uid)
    caps = "-all,+net_admin,+net_raw"
    return ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", f"--inh-caps={caps}",
            f"--ambient-caps={caps}", f"--bounding-set={caps}", "--")


def main() -> int:
    ap = argparse.ArgumentParser(prog="reliability_lab")
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--soak-minutes", type=float)
    ap.add_argument("--kills", type=int)
    ap.add_argument("--edits", type=int)
    ap.add_argument("--user", type=int, metavar="UID", help="run ipvsd as this uid with two capabilities")
    ap.add_argument("--budget", type=float, default=5400.0, help="seconds before remaining work is skipped")
    ap.add_argument("--work", type=Path, default=Path("/tmp/reliability"))
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--installed", type=Path, metavar="ARCHIVE",
                    help="run ipvsd from this archive unpacked on the VM's tmpfs (tests/kernel/installed.py)")
    args = ap.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    plan = QUICK if args.quick else Plan()
    if args.soak_minutes is not None:
        plan = replace(plan, soak_minutes=args.soak_minutes)
    if args.kills is not None:
        plan = replace(plan, kills=args.kills, terms=max(1, args.kills // 5))
    if args.edits is not None:
        plan = replace(plan, edits=args.edits)
    wanted = [s for s in SCENARIOS if s in args.scenarios] if args.scenarios else list(SCENARIOS)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    os.chmod(args.work, 0o755)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    rng = random.Random(args.seed)
    lab = Lab(root=args.work / "lab", n=4).up()
    for r in lab.reals:
        os.chmod(r.dir, 0o755)
    if args.installed:
        installed.use(args.installed)
    rig = Rig(lab, args.work / "ipvsd", base_layout(lab))
    if args.user is not None:
        rig.prefix = unprivileged(args.user, rig.work)
    results: dict[str, Any] = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "kernel": platform.release(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "quick": args.quick, "plan": asdict(plan), "seed": args.seed,
        "scenarios": wanted,
        "user": f"uid {args.user}, CAP_NET_ADMIN + CAP_NET_RAW only" if args.user is not None else "root",
        "settings": "interval 1 s, timeout 1 s, rise 1, fall 1, on_failure remove, resync 2 s, watch_config on, "
                    "clean_stop off",
        "daemon_files": installed.describe(),
    }}
    t_all = time.monotonic()

    def say(msg: str) -> None:
        print(f"reliability[{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)

    def save() -> None:
        results["meta"]["elapsed_s"] = round(time.monotonic() - t_all, 1)
        tmp = args.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
        tmp.rename(args.out / "results.json")
        if rig.log_path.exists():
            shutil.copyfile(rig.log_path, args.out / "ipvsd.log")

    try:
        rig.write(rig.layout)
        t0 = rig.start()
        ready = rig.wait_ready(t0)
        results["meta"]["first_ready_s"] = None if ready is None else round(ready - t0, 2)
        for name in wanted:
            if time.monotonic() > deadline:
                results[name] = {"skipped": "out of time"}
                continue
            say(f"--- {name}")
            t = time.monotonic()
            rig.write(base_layout(lab))
            try:
                if not rig.running:
                    t0 = rig.start()
                    rig.wait_ready(t0)
                results[name] = run_one(name, rig, say, plan, rng, deadline)
            except Exception as e:  # one scenario's failure is its result; the others still run
                say(f"{name}: {type(e).__name__}: {e}")
                results[name] = {"error": f"{type(e).__name__}: {e}"}
            results[name]["elapsed_s"] = round(time.monotonic() - t, 1)
            if not rig.running:
                results[name]["daemon_exited"] = True
            save()
    finally:
        save()
        rig.close()
        lab.down()
    print(report.markdown(results))
    return 0 if report.passed(results) else 1


def run_one(name: str, rig: Rig, say: Any, plan: Plan, rng: random.Random, deadline: float) -> dict[str, Any]:
    if name == "restarts":
        return restarts.run(rig, say, kills=plan.kills, terms=plan.terms, rng=rng, deadline=deadline)
    if name == "reloads":
        return reloads.run(rig, say, edits=plan.edits, rng=rng, deadline=deadline)
    if name == "handedits":
        return handedits.run(rig, say)
    if name == "hostile":
        return hostile.run(rig, say, hold=plan.hostile_hold)
    if name == "faults":
        return faults_lab.run(rig, say)
    return soak.run(rig, say, minutes=plan.soak_minutes, rng=rng)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
