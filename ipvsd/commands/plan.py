"""`ipvsd plan`: print the operations `ipvsd run` would apply now to the live kernel; apply nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from ipvsd import config as configmod
from ipvsd.core import desired, plan
from ipvsd.errors import ConfigError, IpvsdError
from ipvsd.kernel import Kernel
from ipvsd.model import DestKey, ServiceKey
from ipvsd.shell import statefile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration file")
    parser.add_argument("--format", choices=configmod.FORMATS, help="configuration format (default: sniffed)")
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory (ownership, drains)")
    parser.add_argument("--no-probe", action="store_true",
                        help="do not run the checks: every checked real keeps its kernel state")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


async def compute(config: configmod.Config, kernel: Kernel, state_path: Path, *, probe: bool) -> plan.Plan:
    """Return the plan a daemon pass would apply now, after running every check once (unless `probe` is off)."""
    from ipvsd.shell.daemon import RealHealth, resolve_hosts
    from ipvsd.shell.scheduler import plan_probes

    st = statefile.load(state_path)
    resolved = resolve_hosts(config, {})
    probes = plan_probes(config, resolve=lambda a: resolved.get(a, a))
    health: dict[tuple[ServiceKey, DestKey], RealHealth] = {}
    if probe:
        from ipvsd.commands.probe import probe_all

        results = await probe_all(probes.jobs, config.settings.limits.check_concurrency)
        for real, keys in probes.reals.items():
            if keys:
                health[real] = RealHealth(up=all(results[k].ok for k in keys), settled=True)
    from ipvsd.shell import maintenance_store as maintenance

    drained = maintenance.current(state_path.parent, config.settings.maintenance_dir, resolved.get)
    observed = await kernel.services()
    built = desired.build(config, health, maintenance=st.maintenance | drained, observed=observed,
                          resolved=resolved)
    return plan.plan(built.table, observed, owned=st.owned, limits=desired.limits(config), now=time.time(),
                     drains=st.drains)


def run(args: argparse.Namespace) -> int:
    try:
        config, _ = configmod.load(args.config, args.format)
    except ConfigError as e:
        for err in getattr(e, "errors", [e]):
            print(f"ipvsd: {err}", file=sys.stderr)
        return 1
    from ipvsd.kernel.netlink import NetlinkKernel

    state_path = Path(args.state_dir or config.settings.state_dir) / "state.json"

    async def go() -> plan.Plan:
        kernel = NetlinkKernel()
        try:
            return await compute(config, kernel, state_path, probe=not args.no_probe)
        finally:
            await kernel.close()

    try:
        p = asyncio.run(go())
    except IpvsdError as e:
        print(f"ipvsd: {e}", file=sys.stderr)
        return 1
    drift = set(p.drift)
    if args.json:
        print(json.dumps({"ops": [str(op) for op in p.ops], "refused": p.refused,
                          "withheld": [str(op) for op in p.withheld]}, indent=2))
    else:
        for op in p.ops:
            print(f"ipvsadm {op}{'   # drift' if op in drift else ''}")
        if p.refused:
            print(f"# refused: {p.refused}; withheld:", file=sys.stderr)
            for op in p.withheld:
                print(f"#   ipvsadm {op}", file=sys.stderr)
        if not p.ops and not p.refused:
            print("# nothing to do: the kernel matches the configuration", file=sys.stderr)
    return 0
