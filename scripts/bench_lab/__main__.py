"""Inside the lab VM: build the topology once, run the scenarios for every daemon, write results.json.

    python -m scripts.bench_lab --out DIR [--quick] [--budget SECONDS] [scenario ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.bench_lab import report
from scripts.bench_lab.peers import DAEMONS, ROOT
from scripts.bench_lab.scenarios import QUICK, SCENARIOS, Bench, Plan, run_all
from tests.kernel import installed
from tests.kernel.lab import Lab


def version(*argv: str) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError as e:
        return f"unavailable ({e.strerror})"
    return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else "?"


def meta(plan: Plan, quick: bool) -> dict[str, object]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "ipvsd": version("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
        "ldirectord": version("dpkg-query", "-W", "-f=${Version}", "ldirectord"),
        "keepalived": version("dpkg-query", "-W", "-f=${Version}", "keepalived"),
        "nginx": version("dpkg-query", "-W", "-f=${Version}", "nginx"),
        "python": platform.python_version(),
        "quick": quick,
        "plan": plan.__dict__,
        "settings": "interval 1 s, timeout 1 s, 1 failure -> down, 1 success -> up, failed real removed "
                    "(not quiesced), new reals start down until checked",
    }


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench_lab")
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget", type=float, default=3300.0, help="seconds before remaining work is skipped")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench"))
    ap.add_argument("--reps", type=int, help="detection repetitions (default 10; quick 3)")
    ap.add_argument("--sizes", help="scale scenario's N values, e.g. 100,500,1000")
    ap.add_argument("--daemons", help="comma-separated subset of ipvsd,ldirectord,keepalived (development only)")
    ap.add_argument("--installed", type=Path, metavar="ARCHIVE",
                    help="run ipvsd from this archive unpacked on the VM's tmpfs (tests/kernel/installed.py)")
    args = ap.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    wanted = tuple(args.scenarios) or SCENARIOS
    plan = QUICK if args.quick else Plan()
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    if args.sizes:
        plan = dataclasses.replace(plan, scale_ns=tuple(int(n) for n in args.sizes.split(",")))
    if args.daemons:
        daemons = tuple(args.daemons.split(","))
        if not set(daemons) <= set(DAEMONS):
            ap.error(f"--daemons: choose from {', '.join(DAEMONS)}")
        plan = dataclasses.replace(plan, daemons=daemons)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.installed:
        installed.use(args.installed)
    lab = Lab(root=args.work / "lab", n=4).up()
    b = Bench(lab, args.work, plan, deadline=time.monotonic() + args.budget)
    results: dict[str, object] = {"meta": {**meta(plan, args.quick), "daemon_files": installed.describe(),
                                           "start_costs_s": installed.start_costs()}}
    t0 = time.monotonic()

    def save() -> None:
        results["meta"]["elapsed_s"] = round(time.monotonic() - t0, 1)  # type: ignore[index]
        tmp = args.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.rename(args.out / "results.json")
        _keep_logs(args.work, args.out / "logs")

    try:
        run_all(b, wanted, results, save)
    finally:
        save()
        lab.down()
    print(report.markdown(results))
    return 0


def _keep_logs(work: Path, dest: Path) -> None:
    """Copy the daemons' configs and logs (not the big generated ones) next to results.json."""
    for f in work.glob("*/*/*"):
        if f.is_file() and f.stat().st_size < 2_000_000 and f.suffix in (".out", ".log", ".toml", ".cf", ".conf"):
            target = dest / f.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)


if __name__ == "__main__":
    sys.exit(main())
