"""`ipvsd probe`: run every configured health check once, concurrently, and print each verdict.

Needs no kernel and no root (except for checks that need them, such as ping without ping_group_range), so an
operator can try checks before deploying. Exit 0 when every check is up, 1 otherwise, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass

from ipvsd.checks import make_probe
from ipvsd.checks.base import Kind, ProbeResult
from ipvsd.config import ConfigErrors, load
from ipvsd.config.schema import Check, HttpCheck
from ipvsd.core.probes import ProbeKey, literal, plan_probes
from ipvsd.errors import ConfigError
from ipvsd.model import DestKey, ServiceKey, canonical_addr
from ipvsd.shell import resolver

DEFAULT_CONFIG = "/etc/ipvsd/ipvsd.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--real", metavar="ADDR[:PORT]", help="only the checks of this real server")
    parser.add_argument("--json", action="store_true", help="print the results as a JSON list")


@dataclass(frozen=True, slots=True)
class Row:
    """One real and one of its checks, with the services it serves and the verdict."""

    real: str  # ADDR:PORT as ipvsadm shows it, or NAME:PORT for a name that does not resolve
    key: ProbeKey | None
    check: Check | None
    services: tuple[ServiceKey, ...]
    result: ProbeResult

    def as_dict(self) -> dict[str, object]:
        return {"real": self.real, "services": [str(s) for s in self.services],
                "check": describe(self.check), "target": str(self.key.target) if self.key else None,
                "up": self.result.ok, "kind": self.result.kind.value, "reason": self.result.reason,
                "latency_ms": round(self.result.latency * 1000, 3)}


def describe(check: Check | None) -> str:
    """A short name for a check: its type and, for HTTP, method and path."""
    if check is None:
        return "none"
    if isinstance(check, HttpCheck):
        return f"{check.type} {check.method} {check.path}"
    return check.type


def parse_real(text: str) -> tuple[str, int | None]:
    """Parse ADDR, ADDR:PORT, [V6] or [V6]:PORT."""
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        return canonical_addr(addr), int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        addr, port = text.split(":")
        return canonical_addr(addr), int(port)
    return canonical_addr(text), None


async def probe_all(jobs: dict[ProbeKey, Check], concurrency: int) -> dict[ProbeKey, ProbeResult]:
    """Run each distinct probe once, at most `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(key: ProbeKey, check: Check) -> tuple[ProbeKey, ProbeResult]:
        async with sem:
            try:
                return key, await make_probe(check).probe(key.target, timeout=check.timeout)
            except Exception as exc:  # a probe bug is reported on its line, not as a traceback for all
                return key, ProbeResult.down(Kind.ERROR, f"probe error: {type(exc).__name__}: {exc}")

    return dict(await asyncio.gather(*(one(k, c) for k, c in jobs.items())))


def rows(config_path: str, only: tuple[str, int | None] | None) -> list[Row]:
    config, _ = load(config_path)
    resolved = resolver.resolve(resolver.names_of(config), {}).addresses
    plan = plan_probes(config, resolve=lambda name: literal(name) or resolved.get(name))

    def wanted(addr: str, port: int) -> bool:
        return only is None or (addr == only[0] and (only[1] is None or port == only[1]))

    selected: dict[tuple[DestKey, ProbeKey | None], list[ServiceKey]] = {}
    for (service, real), keys in plan.reals.items():
        if wanted(real.addr, real.port):
            for key in keys or (None,):
                selected.setdefault((real, key), []).append(service)
    jobs = {k: plan.jobs[k] for _, k in selected if k is not None}
    results = asyncio.run(probe_all(jobs, config.settings.limits.check_concurrency))
    out = []
    for (real, key), services in sorted(selected.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        if (services[0], real) in plan.down and key is None:
            continue
        result = results[key] if key is not None else ProbeResult.up("no check configured (always up)")
        out.append(Row(str(real), key, plan.jobs[key] if key else None, tuple(services), result))
    for (service, real), why in sorted(plan.down.items()):
        if wanted(real.addr, real.port):
            out.append(Row(str(real), None, None, (service,), ProbeResult.down(Kind.DNS, why)))
    for (service, name), why in sorted(plan.unresolved.items()):
        vs = next(v for v in config.services if v.service_key() == service)
        port = next((r.port for r in vs.reals if r.address == name), 0) or vs.port
        if wanted(name, port):
            out.append(Row(f"{name}:{port}", None, None, (service,), ProbeResult.down(Kind.DNS, why)))
    return out


def run(args: argparse.Namespace) -> int:
    try:
        only = parse_real(args.real) if args.real else None
    except ValueError:
        print(f"error: --real {args.real!r} is not ADDR[:PORT]", file=sys.stderr)
        return 2
    try:
        table = rows(args.config, only)
    except ConfigErrors as e:
        for err in e.errors:
            print(f"error: {err}", file=sys.stderr)
        return 2
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in table], indent=2))
    else:
        width = max((len(str(r.real)) for r in table), default=0)
        cwidth = max((len(describe(r.check)) for r in table), default=0)
        for r in table:
            verdict = "UP" if r.result.ok else "DOWN"
            print(f"{verdict:<5} {r.real!s:<{width}}  {describe(r.check):<{cwidth}}  "
                  f"{r.result.reason}  ({r.result.latency * 1000:.1f} ms)")
        if not table:
            print("no real server matched" if only else "no real servers configured", file=sys.stderr)
    return 0 if all(r.result.ok for r in table) else 1
