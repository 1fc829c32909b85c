"""`ipvsd plan`: print the operations `ipvsd run` would apply now to the live kernel; apply nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ipvsd import config as configmod
from ipvsd.checks.base import ProbeResult
from ipvsd.commands import FORMAT_HELP, add_config_argument, error
from ipvsd.core import plan, syncd
from ipvsd.core.announce import RoutePlan
from ipvsd.core.decide import Decision, decide
from ipvsd.core.health import HealthState
from ipvsd.core.probes import ProbeKey, health_of, literal, plan_probes
from ipvsd.errors import ConfigError, IpvsdError
from ipvsd.kernel import Kernel
from ipvsd.shell import statefile
from ipvsd.shell.resolver import Lookup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print, in ipvsadm notation, the operations `ipvsd run` would apply to the live kernel now, and apply "
        "nothing. The checks run once and one result decides, as if rise and fall were met (--no-probe: every "
        "checked real stays as the kernel has it); ownership and drains come from the daemon's state directory. "
        "A repair of drift is marked `# drift`; a plan the blast-radius guard would refuse is shown on standard "
        "error with the operations it withholds. The connection-sync daemons' operations follow, each with its "
        "reason (a daemon adopted or released needs none and is said on standard error). Reads the kernel's "
        "table, so it needs root and IPVS; exit 0, or 1 for an invalid configuration or a kernel error.")
    add_config_argument(parser)
    parser.add_argument("--format", choices=configmod.FORMATS, help=FORMAT_HELP)
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory (ownership, drains)")
    parser.add_argument("--no-probe", action="store_true",
                        help="do not run the checks: every checked real keeps its kernel state")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


async def compute(config: configmod.Config, kernel: Kernel, state_path: Path, *, probe: bool,
                  now: float | None = None, lookup: Lookup | None = None) -> plan.Plan:
    """Return the plan a daemon pass would apply now, after running every check once (unless `probe` is off)."""
    return (await compute_decision(config, kernel, state_path, probe=probe, now=now, lookup=lookup)).plan


async def compute_decision(config: configmod.Config, kernel: Kernel, state_path: Path, *, probe: bool,
                           now: float | None = None, lookup: Lookup | None = None,
                           routes: Iterable[str] | None = None) -> Decision:
    """Return what a daemon pass would do now (`compute`), with the VIP routes' changes when `routes` (ipvsd's
    routes in the [announce] table) are given.

    The same decide step as the daemon's passes, with the memory the daemon persisted (ownership, drains,
    quorum) and the maintenance in force; only `previous` (drift vs change) is the daemon's alone.
    """
    from ipvsd.shell import resolver
    from ipvsd.shell.maintenance_store import current, director_since

    memory = statefile.load(state_path)
    resolved = resolver.resolve(resolver.names_of(config), {}, lookup or resolver.getaddrinfo).addresses
    probes = plan_probes(config, resolve=lambda name: literal(name) or resolved.get(name))
    results: dict[ProbeKey, ProbeResult] = {}
    if probe:
        from ipvsd.commands.probe import probe_all

        results = await probe_all(probes.jobs, config.settings.limits.check_concurrency)
    # Without probing, every checked real is unsettled: it keeps what the kernel has (Want.KEEP).
    health = health_of(probes, lambda k: _settled(results[k]) if k in results else None)
    wall = time.time() if now is None else now
    drained = current(state_path.parent, config.settings.maintenance_dir, resolved.get, now=wall)
    observed = await kernel.services()
    director = director_since(state_path.parent)
    return decide(config, health, observed, memory, now=wall, maintenance=drained, resolved=resolved,
                  routes=routes, director_since=director)


async def compute_sync(config: configmod.Config, kernel: Kernel, state_path: Path) -> syncd.SyncPlan:
    """Return the sync daemons' steps a daemon pass would take now, with the ownership the daemon persisted."""
    return syncd.decide(config.sync, await kernel.daemons(), statefile.load(state_path).daemons)


def _settled(result: ProbeResult) -> HealthState:
    """The state one result gives a probe in `ipvsd plan` (one result decides, as rise/fall were met)."""
    return HealthState(up=result.ok, settled=True, streak=0, since=0.0)


def run(args: argparse.Namespace) -> int:
    try:
        config, _ = configmod.load(args.config, args.format)
    except ConfigError as e:
        for err in getattr(e, "errors", [e]):
            error("plan", err)
        return 1
    from ipvsd.kernel.netlink import NetlinkKernel

    state_path = Path(args.state_dir or config.settings.state_dir) / "state.json"

    routes: set[str] | None = None
    if config.announce is not None:
        from ipvsd.shell.routes import RouteTable

        try:
            routes = RouteTable.of(config.announce).read()
        except OSError as e:
            error("plan", f"cannot read routing table {config.announce.table}: {e}")
            return 1

    async def go() -> tuple[Decision, syncd.SyncPlan]:
        kernel = NetlinkKernel()
        try:
            return (await compute_decision(config, kernel, state_path, probe=not args.no_probe, routes=routes),
                    await compute_sync(config, kernel, state_path))
        finally:
            await kernel.close()

    try:
        d, sync = asyncio.run(go())
    except IpvsdError as e:
        error("plan", e)
        return 1
    p = d.plan
    r = d.routes or RoutePlan()
    drift = set(p.drift)
    if args.json:
        print(json.dumps({"ops": [str(op) for op in p.ops], "refused": p.refused,
                          "withheld": [str(op) for op in p.withheld],
                          "sync": [{"action": s.action, "ops": [str(op) for op in s.ops], "why": s.why}
                                   for s in sync.steps],
                          "routes": [{"action": a, "route": route, "why": why}
                                     for a, steps in (("withdraw", r.withdraw), ("announce", r.announce))
                                     for route, why in steps]}, indent=2))
    else:
        table = f"table {config.announce.table} proto {config.announce.protocol}" if config.announce else ""
        for route, why in r.withdraw:  # a pass withdraws before the table's ops...
            print(f"ip route del {route} {table}   # {why}")
        for op in p.ops:
            print(f"ipvsadm {op}{'   # drift' if op in drift else ''}")
        if p.refused:
            print(f"# refused: {p.refused}; withheld:", file=sys.stderr)
            for op in p.withheld:
                print(f"#   ipvsadm {op}", file=sys.stderr)
        for route, why in r.announce:  # ...and announces after them
            print(f"ip route add {route} dev {config.announce.device if config.announce else 'lo'} {table}"
                  f"   # {why}")
        print_sync(sync)
        if not p.ops and not p.refused and not sync.ops and not r.withdraw and not r.announce:
            print("# nothing to do: the kernel matches the configuration", file=sys.stderr)
    return 0


def print_sync(sync: syncd.SyncPlan) -> None:
    """The sync daemons' ops on standard output, each with its reason; a step without ops on standard error."""
    for step in sync.steps:
        if not step.ops:
            print(f"# {step.why}", file=sys.stderr)
        for op in step.ops:
            print(f"ipvsadm {op}   # {step.why}")
