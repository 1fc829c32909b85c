"""`ipvsd probe`: run every configured health check once, concurrently, and print each verdict.

Needs no kernel and no root (except for checks that need them, such as ping without ping_group_range), so an
operator can try checks before deploying. Exit 0 when every check is up, 1 when one is down or the configuration
is invalid (as `ipvsd check`), 2 for a command-line error, such as a `--real` that is not in the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass

from ipvsd.checks import make_probe
from ipvsd.checks.base import Kind, ProbeResult
from ipvsd.commands import FORMAT_HELP, add_config_argument, error, warnings_to_stderr
from ipvsd.config import FORMATS, ConfigErrors, Format, load
from ipvsd.config.schema import Check, HttpCheck
from ipvsd.core.probes import ProbeKey, literal, plan_probes
from ipvsd.errors import ConfigError
from ipvsd.model import DestKey, ServiceKey, canonical_addr
from ipvsd.shell import resolver


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run every configured check once, concurrently, and print one line per real server and check: UP or "
        "DOWN, the real, the check, the reason and the time it took. Needs no kernel and no root (except for "
        "checks that do, such as ping). A real whose host name does not resolve is DOWN with the reason "
        "`dns: NAME does not resolve`. Exit 0 when every check is up, 1 when one is down or the configuration is "
        "invalid, 2 for a command-line error such as a --real that is not in the configuration.")
    add_config_argument(parser)
    parser.add_argument("--format", choices=FORMATS, help=FORMAT_HELP)
    parser.add_argument("--real", metavar="REAL", help="only the checks of this real server: ADDRESS[:PORT], "
                        "[V6][:PORT] or HOST[:PORT] as the configuration names it (no port: every port)")
    parser.add_argument("--json", action="store_true", help="print the results as a JSON list")


@dataclass(frozen=True, slots=True)
class Row:
    """One real and one of its checks, with the services it serves and the verdict."""

    real: str  # ADDR:PORT as ipvsadm shows it, or NAME:PORT for a name that does not resolve
    key: ProbeKey | None
    check: Check | None
    services: tuple[ServiceKey, ...]
    result: ProbeResult

    @property
    def check_name(self) -> str:
        """The check's name; "-" on a line that says why a real's checks could not run."""
        return describe(self.check) if self.check is not None or self.result.ok else "-"

    def as_dict(self) -> dict[str, object]:
        return {"real": self.real, "services": [str(s) for s in self.services],
                "check": self.check_name, "target": str(self.key.target) if self.key else None,
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
    """Parse ADDR, ADDR:PORT, [V6], [V6]:PORT, HOST or HOST:PORT; a host name is kept lower-case, unresolved."""
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        return canonical_addr(addr), int(rest[1:]) if rest.startswith(":") else None
    port: int | None = None
    if text.count(":") == 1:
        text, _, digits = text.partition(":")
        port = int(digits)
    try:
        return canonical_addr(text), port
    except ValueError:
        if not text or text.count(":") or not all(c.isalnum() or c in "-._" for c in text):
            raise
        return text.lower().rstrip("."), port


class NotConfigured(Exception):
    """`--real` names no real server of the configuration."""


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


def rows(config_path: str, only: tuple[str, int | None] | None, fmt: Format | None = None) -> list[Row]:
    """One row per real and check, each check run once; raises NotConfigured when `only` matches no real."""
    config, _ = load(config_path, fmt)
    resolved = resolver.resolve(resolver.names_of(config), {}).addresses
    plan = plan_probes(config, resolve=lambda name: literal(name) or resolved.get(name))
    if only is not None and not any(
            (r.address == only[0] or resolved.get(r.address) == only[0]) and only[1] in (None, r.port or vs.port)
            for vs in config.services for r in vs.reals):
        raise NotConfigured(model_text(only))

    def wanted(addr: str, port: int) -> bool:
        # a host name given to --real matches the address it resolved to, as the configuration names it
        return only is None or (addr in (only[0], resolved.get(only[0])) and (only[1] is None or port == only[1]))

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
        real_server = next(r for r in vs.reals if r.address == name)
        port = real_server.port or vs.port
        if wanted(name, port):
            # one line per configured check, as for a real that resolves: each is down, none could run
            for check in vs.checks_for(real_server) or (None,):
                out.append(Row(f"{name}:{port}", None, check, (service,),
                               ProbeResult.down(Kind.DNS, f"{why} (check not run)")))
    return out


def model_text(real: tuple[str, int | None]) -> str:
    """ADDR, ADDR:PORT or [V6]:PORT, as an operator writes it."""
    addr, port = real
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def run(args: argparse.Namespace) -> int:
    with warnings_to_stderr("probe"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        only = parse_real(args.real) if args.real else None
    except ValueError:
        error("probe", f"--real {args.real!r} is not ADDRESS[:PORT] or HOST[:PORT]")
        return 2
    try:
        table = rows(args.config, only, args.format)
    except ConfigErrors as e:
        for err in e.errors:
            error("probe", err)
        error("probe", f"{args.config}: invalid ({len(e.errors)} error(s))")
        return 1
    except (ConfigError, OSError) as e:
        error("probe", e)
        error("probe", f"{args.config}: invalid")
        return 1
    except NotConfigured as e:
        error("probe", f"--real {e}: no such real server in {args.config}")
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in table], indent=2))
    else:
        width = max((len(str(r.real)) for r in table), default=0)
        cwidth = max((len(r.check_name) for r in table), default=0)
        for r in table:
            verdict = "UP" if r.result.ok else "DOWN"
            print(f"{verdict:<5} {r.real!s:<{width}}  {r.check_name:<{cwidth}}  "
                  f"{r.result.reason}  ({r.result.latency * 1000:.1f} ms)")
        if not table:
            error("probe", f"{args.config}: no real servers configured")
    return 0 if all(r.result.ok for r in table) else 1
