"""`ipvsd check`: validate a configuration without touching the kernel; exit 0 valid, 1 invalid."""

from __future__ import annotations

import argparse
import socket
from typing import Literal

from ipvsd import model
from ipvsd.commands import DEFAULT_CONFIG, error
from ipvsd.config import FORMATS, ConfigErrors, ConfigWarning, Format, load, place, sniff
from ipvsd.config.schema import Check, CheckTiming, Config, ExternalCheck, HttpCheck, RealServer, Sync, VirtualService
from ipvsd.config.sysctls import proc_text
from ipvsd.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: guessed from the file)")
    parser.add_argument("--json", action="store_true", help="print the normalized configuration as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors: nothing when the configuration "
                        "is valid")
    parser.add_argument("--no-host", dest="host", action="store_false",
                        help="skip the checks against this host (the [sync] interface exists and has an IPv4 "
                        "address), to check a configuration meant for another machine")


# Settings of each check type shown even at their defaults, because they say what is asked and what is
# accepted; every other setting of the type is shown when it differs from its default.
_ALWAYS: dict[str, tuple[str, ...]] = {
    "simpletcp": ("send",), "dns": ("name", "qtype", "transport"), "udp": ("min_reply_length", "max_reply_length"),
    "external": ("command",), "ftp": ("login",), "ping": ("count",),
}
_TARGET = ("address", "port", "bindto", "mark", "connect_rounds")


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def describe_check(check: Check) -> str:
    """One line an operator reads: type, target and every setting that decides the verdict."""
    parts: list[str] = [check.type]
    shown = {"type", *CheckTiming.model_fields, *_TARGET}
    if isinstance(check, HttpCheck):
        parts.append(f"{check.method} {check.path}")
        codes = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in check.expect_status)
        parts.append(f"status {codes}")
        shown |= {"method", "path", "expect_status"}
    fields = type(check).model_fields
    always = _ALWAYS.get(check.type, ())
    for name, info in fields.items():
        if name in shown:
            continue
        value = getattr(check, name)
        if name in always or value != info.default:
            # a password decides the verdict too, but a screen (or a ticket it is pasted into) must not show it
            parts.append(f"{name} {'(set)' if name == 'password' else _value(value)}")
    for name in _TARGET:
        value = getattr(check, name)
        if value != fields[name].default:
            parts.append(f"{name} {value}")
    parts.append(f"every {check.interval:g}s timeout {check.timeout:g}s rise {check.rise} fall {check.fall}")
    if check.retry_delay is not None:
        parts.append(f"retry after {check.retry_delay:g}s")
    return " ".join(parts)


def _dest(svc: VirtualService, real: RealServer) -> str:
    try:
        return str(model.AddDest(svc.service_key(), real.dest_key(), real.dest_attrs()))
    except ValueError:  # a hostname: resolved by the daemon
        return f"-a {svc.service_key()} -r {model.addrport(real.address, real.port)} {real.dest_attrs().notation()}"


def _fallback_attrs(svc: VirtualService) -> str:
    fb = svc.fallback
    assert fb is not None
    return RealServer(address=fb.address, forward=fb.forward, weight=fb.weight).dest_attrs().notation()


def summary(config: Config) -> list[str]:
    """What would be programmed: ipvsadm-notation lines for services and reals, with their checks."""
    lines: list[str] = []
    n_reals = n_checks = 0
    # Checks written alike are one model (the loader shares them): each described once, by its identity, which
    # `config` keeps alive throughout (describing 120,000 equal checks was most of `check`'s time beyond loading)
    described: dict[int, str] = {}
    for svc in config.services:
        key = svc.service_key()
        title = f"  # {svc.name}" if svc.name else ""
        lines.append(f"{model.AddService(key, svc.service_attrs())}{title}")
        extras = [f"on failure: {svc.on_failure}"]
        if svc.fallback is not None:
            fb = svc.fallback
            target = model.addrport(fb.address, fb.port or svc.port)
            extras.append(f"fallback {target} {_fallback_attrs(svc)}")
        if svc.quorum != 1 or svc.hysteresis:
            extras.append(f"quorum {svc.quorum} hysteresis {svc.hysteresis}")
        if svc.slow_start:
            extras.append(f"slow start {svc.slow_start:g}s")
        lines.append("    " + "; ".join(extras))
        for real in svc.reals:
            n_reals += 1
            own = f"  # on failure: {real.on_failure}" if real.on_failure not in (None, svc.on_failure) else ""
            if real.slow_start is not None and real.slow_start != svc.slow_start:
                own += f"  # slow start {real.slow_start:g}s"
            lines.append(f"  {_dest(svc, real)}{own}")
            checks = svc.checks_for(real)
            n_checks += len(checks)
            if not checks:
                lines.append("      check: none (always up)")
            for c in checks:
                text = described.get(id(c))
                if text is None:
                    text = described[id(c)] = describe_check(c)
                lines.append(f"      check: {text}")
    lines += _sync_lines(config.sync)
    lines += _announce_lines(config)
    lines += [f"sysctl net.ipv4.vs.{name} = {proc_text(value)}" for name, value in config.sysctl.items()]
    lines.append(f"{len(config.services)} service(s), {n_reals} real(s), {n_checks} check(s)")
    return lines


def _announce_lines(config: Config) -> list[str]:
    """The VIP routes as `ip route` would add them, with the services whose quorum each needs."""
    a = config.announce
    if a is None:
        return []
    from ipvsd.core.announce import announcers

    out = [f"ip route add {route} dev {a.device} table {a.table} proto {a.protocol}   # while "
           + " and ".join(k.label() for k in keys) + (" have" if len(keys) > 1 else " has") + " quorum"
           for route, keys in announcers(config).items()]
    out.append(f"# routes withdrawn {a.withdraw_delay:g}s before the reals go; at stop: {a.on_stop}")
    return out


def _sync_lines(sync: Sync | None) -> list[str]:
    """The sync daemons as ipvsadm would start them, or who runs them when ipvsd does not."""
    if sync is None:
        return []
    if sync.owner == "external":
        return [f"# sync daemons on {sync.interface} syncid {sync.syncid}: started and stopped by keepalived "
                f"(lvs_sync_daemon ... inst) or another owner, not by ipvsd"]
    out = []
    for d in sync.wanted():
        words = [f"--start-daemon {'master' if d.state == 1 else 'backup'} --mcast-interface {d.mcast_ifn}",
                 f"--syncid {d.syncid}"]
        for option, value in (("--sync-maxlen", d.sync_maxlen), ("--mcast-group", d.mcast_group),
                              ("--mcast-port", d.mcast_port), ("--mcast-ttl", d.mcast_ttl)):
            if value:
                words.append(f"{option} {value}")
        out.append(" ".join(words))
    return out


# --- what this host must have -----------------------------------------------------------------------------------

Problem = tuple[Literal["error", "warning"], tuple[str | int, ...], str]  # (level, where in the config, message)

_RT_SCOPE_UNIVERSE = 0
_IFA_F_SECONDARY = 0x01


def _ipv4_addresses(index: int) -> list[tuple[str, int, int]]:
    """(address, scope, flags) of every IPv4 address of the interface with this index, by rtnetlink."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [(a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"), a["scope"], a.get("IFA_FLAGS", a["flags"]))
                for a in ipr.get_addr(family=socket.AF_INET) if a["index"] == index]


def host_problems(config: Config) -> list[Problem]:
    """What keeps this host (this network namespace) from running `config`: (level, key, message).

    The kernel's master sync daemon binds the first primary global-scope IPv4 address of its interface
    (net/netfilter/ipvs/ip_vs_sync.c, inet_select_addr with RT_SCOPE_UNIVERSE); failing that, another
    interface's, and with none at all it refuses to start. The backup only joins the group on the interface.

    With [announce], the routing table must be ipvsd's alone (no other protocol's routes) and the device must
    exist. An external check's `user` must exist here."""
    return _announce_problems(config) + _sync_problems(config) + _user_problems(config)


def _user_problems(config: Config) -> list[Problem]:
    """An external check's `user` must exist; switching to it takes capabilities the shipped unit withholds."""
    from ipvsd.checks.external import user_problem

    first: dict[str, tuple[str | int, ...]] = {}  # each user once, located where it is first named
    for i, vs in enumerate(config.services):
        lists: list[tuple[tuple[str | int, ...], tuple[Check, ...]]] = [(("services", i, "checks"), vs.checks)]
        lists += [(("services", i, "reals", k, "checks"), r.checks) for k, r in enumerate(vs.reals) if r.checks]
        for at, checks in lists:
            for j, c in enumerate(checks):
                if isinstance(c, ExternalCheck) and c.user:
                    first.setdefault(c.user, (*at, j, "user"))
    out: list[Problem] = []
    for user, loc in sorted(first.items()):
        problem = user_problem(user, privileged=False)
        if problem is not None:
            out.append(("error", loc, problem))
        else:
            out.append(("warning", loc, f"external check user = {user!r}: ipvsd needs CAP_SETUID and CAP_SETGID "
                        "to run it as that user, which etc/ipvsd.service does not grant (ipvsd runs as its own "
                        "user with CAP_NET_ADMIN and CAP_NET_RAW only); without them the daemon refuses this "
                        "configuration"))
    return out


def _announce_problems(config: Config) -> list[Problem]:
    if config.announce is None:
        return []
    from ipvsd.shell.routes import RouteTable

    try:
        conflict = RouteTable.of(config.announce).conflict()
    except OSError as e:
        return [("warning", ("announce", "table"), f"cannot read routing table {config.announce.table} ({e}): "
                                                   "whether another program writes to it is not checked")]
    if conflict is None:
        return []
    key, _, message = conflict.partition(": ")
    return [("error", tuple(key.split(".")), message)]


def _sync_problems(config: Config) -> list[Problem]:
    sync = config.sync
    if sync is None or sync.owner != "ipvsd":
        return []
    key = ("sync", "interface")
    name = sync.interface
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return [("error", key, f"no network interface {name!r} on this host: the sync daemons send and receive "
                               "on it")]
    if sync.daemons == "backup":
        return []
    try:
        addresses = _ipv4_addresses(index)
    except OSError as e:
        return [("warning", key, f"cannot read the addresses of {name!r} ({e}): its IPv4 address is not checked")]
    found = master_address_problem(name, addresses)
    return [(found[0], key, found[1])] if found else []


def master_address_problem(name: str, addresses: list[tuple[str, int, int]]
                           ) -> tuple[Literal["error", "warning"], str] | None:
    """What the interface's IPv4 addresses, (address, scope, flags), mean for the master sync daemon."""
    if not addresses:
        return "error", (f"interface {name!r} has no IPv4 address: the master sync daemon binds one (the kernel "
                         "would take another interface's address, or start it bound to 0.0.0.0 and only log "
                         "\"You probably need to specify IP address on multicast interface\")")
    if not any(scope == _RT_SCOPE_UNIVERSE and not flags & _IFA_F_SECONDARY for _, scope, flags in addresses):
        shown = ", ".join(a for a, _, _ in addresses)
        return "warning", (f"interface {name!r} has no global-scope IPv4 address ({shown} only): the master sync "
                           "daemon binds another interface's address, or 0.0.0.0 when there is none")
    return None


def _host_check(path: str, fmt: Format, config: Config, quiet: bool) -> int:
    """Report what this host lacks, located in the file; the number of errors."""
    problems = host_problems(config)
    for level, key, message in problems:
        at = place(path, fmt, key)
        if level == "error":
            error("check", ConfigError(message, path=at.path, line=at.line, key=at.key))
        elif not quiet:
            error("check", ConfigWarning(message, path=at.path, line=at.line, key=at.key))
    return sum(1 for level, _, _ in problems if level == "error")


def run(args: argparse.Namespace) -> int:
    try:
        fmt = args.format or sniff(args.config)
        config, warnings = load(args.config, fmt)
    except ConfigErrors as e:
        for err in e.errors:
            error("check", err)
        if e.total > len(e.errors):
            error("check", f"... and {e.total - len(e.errors)} more error(s) not shown")
        error("check", f"{args.config}: invalid ({e.total} error(s))")
        return 1
    except ConfigError as e:
        error("check", e)
        error("check", f"{args.config}: invalid")
        return 1
    for w in [] if args.quiet else warnings:
        error("check", w)
    failures = _host_check(args.config, fmt, config, args.quiet) if args.host else 0
    if failures:
        error("check", f"{args.config}: valid, but not on this host ({failures} error(s); --no-host checks a "
                       "configuration meant for another machine)")
        return 1
    if args.json:
        print(config.model_dump_json(indent=2))
        return 0
    if not args.quiet:
        print(f"{args.config}: valid ({fmt} format)")
        for line in summary(config):
            print(line)
    return 0
