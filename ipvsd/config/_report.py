"""Located diagnostics for the readers: warnings, error lists, and pydantic errors translated to `file:line key`."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import TypeAdapter, ValidationError

from ipvsd import model
from ipvsd.config import sysctls
from ipvsd.config.schema import CHECK_TYPES, KNOWN_SCHEDULERS, Check, Config, VirtualService
from ipvsd.errors import ConfigError

Loc = tuple[str | int, ...]


class Where(NamedTuple):
    """A place in a source file: path, line, and the directive/key an operator wrote there (a tuple: readers
    make one per directive, so construction cost shows in large files)."""

    path: str
    line: int | None = None
    key: str | None = None


@dataclass(frozen=True)
class ConfigWarning:
    """Something accepted but worth telling the operator, located like a ConfigError."""

    message: str
    path: str | None = None
    line: int | None = None
    key: str | None = None
    level: Literal["warning", "info"] = "warning"

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}: {self.level}:{key} {self.message}"


MAX_SERVICES = 65536
"""Most virtual services one configuration may expand to (the kernel has no limit; this guards the loader)."""
MAX_REALS = 1_000_000
"""Most real servers, summed over all services, after ranges and groups are expanded."""
MAX_CHECKS = 1_000_000
"""Most check instances (one per real and check) after expansion."""
MAX_MESSAGE = 300
"""Longest error message kept: the rest of a quoted value is cut."""
MAX_REPORTED = 100
"""Most errors kept and printed for one file; the rest are only counted, so a file of 20,000 bad lines gives
a screenful and a total, not megabytes."""


class ConfigErrors(ConfigError):
    """Several configuration errors at once; behaves as the first one, lists the first MAX_REPORTED in
    `errors` and counts them all in `total`."""

    def __init__(self, errors: list[ConfigError], total: int | None = None) -> None:
        first = errors[0]
        super().__init__(first.message, path=first.path, line=first.line, key=first.key)
        self.errors = errors
        self.total = max(total if total is not None else len(errors), len(errors))


class Collector:
    """Errors of one load, gathered so that every one is reported, bounded to MAX_REPORTED kept."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self.total = 0
        # a keepalived group repeats its reals' errors once per address; count and show each once
        self.seen: set[tuple[str | None, int | None, str | None, str]] = set()

    def add(self, e: ConfigError) -> None:
        if isinstance(e, ConfigErrors):
            for x in e.errors:
                self.add(x)
            self.total += e.total - len(e.errors)
            return
        # one line each, of a sensible length: messages quote what was written (a multi-line TOML string, a
        # 100 KB line)
        message = e.message.replace("\r", "\\r").replace("\n", "\\n")
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "..."
        if message != e.message:
            e = ConfigError(message, path=e.path, line=e.line, key=e.key)
        ident = (e.path, e.line, e.key, e.message)
        if ident in self.seen:
            return
        self.seen.add(ident)
        self.total += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(e)

    def __bool__(self) -> bool:
        return self.total > 0

    def raise_if_any(self) -> None:
        if self.total:
            raise ConfigErrors(self.errors, self.total)


def ordered(errors: list[ConfigError]) -> list[ConfigError]:
    """Errors in file order: by file (in order of first appearance), then line."""
    files: dict[str | None, int] = {}
    for e in errors:
        files.setdefault(e.path, len(files))
    return sorted(errors, key=lambda e: (files[e.path], e.line or 0))


class ServiceWhere(Mapping[Loc, Where]):
    """Source places kept per service (`services[i]` maps locations inside service i), the rest in `top`:
    merging every service's places into one dict of long tuples was a large part of loading big files.

    A reader may give a service's places as a function that works them out, called the first time an error or a
    warning asks for one: a valid file then makes none (making them cost a tenth of loading a large file)."""

    def __init__(self) -> None:
        self.top: dict[Loc, Where] = {}
        self.services: list[dict[Loc, Where] | Callable[[], dict[Loc, Where]]] = []

    def get(self, loc: Loc, default: Any = None) -> Any:
        if len(loc) >= 2 and loc[0] == "services" and isinstance(loc[1], int):
            i = loc[1]
            if not 0 <= i < len(self.services):
                return default
            places = self.services[i]
            if callable(places):
                places = self.services[i] = places()
            return places.get(loc[2:], default)
        return self.top.get(loc, default)

    def __getitem__(self, loc: Loc) -> Where:
        found: Where | None = self.get(loc)
        if found is None:
            raise KeyError(loc)
        return found

    def __iter__(self) -> Iterator[Loc]:  # lookups are all the reports need
        return iter(())

    def __len__(self) -> int:
        return 0


def at(where: Where, message: str) -> ConfigError:
    """A ConfigError located at `where`."""
    return ConfigError(message, path=where.path, line=where.line, key=where.key)


def warn(where: Where, message: str, level: Literal["warning", "info"] = "warning") -> ConfigWarning:
    return ConfigWarning(message, path=where.path, line=where.line, key=where.key, level=level)


def _strip_tags(loc: Loc) -> Loc:
    """Drop discriminated-union tags (`checks, 0, 'http', 'path'` → `checks, 0, path`)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and i > 0 and isinstance(loc[i - 1], int) and part in CHECK_TYPES:
            continue
        out.append(part)
    return tuple(out)


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif err.get("type") == "missing":
        msg = "required"
    elif err.get("type") in ("literal_error", "enum") or "Input should be" in msg:
        msg = msg.replace("Input should be", "must be")
    inp = err.get("input")
    if err.get("type") not in ("missing", "extra_forbidden") and isinstance(inp, str | int | float) \
            and repr(inp) not in msg and len(repr(inp)) < 60:
        msg += f" (got {inp!r})"
    return msg


def locate(loc: Loc, where: Mapping[Loc, Where], default: Where) -> Where:
    """The source place of the longest known prefix of `loc`; the key is the deepest name in `loc` unless the
    source recorded its own directive name at exactly that depth."""
    loc = _strip_tags(loc)
    names = [p for p in loc if isinstance(p, str)]
    for n in range(len(loc), -1, -1):
        found = where.get(loc[:n])
        if found is None:
            continue
        if found.key is None:
            return Where(found.path, found.line, ".".join(names) or None)
        tail = [p for p in loc[n:] if isinstance(p, str)]
        return Where(found.path, found.line, f"{found.key} ({'.'.join(tail)})" if tail else found.key)
    return Where(default.path, default.line, ".".join(names) or None)


def _duplicate_service(data: dict[str, Any]) -> Loc:
    """Where a whole-config error (a service defined twice) points: the second definition."""
    seen: set[Any] = set()
    for i, raw in enumerate(data.get("services") or []):
        try:
            key = VirtualService.model_validate(raw).service_key()
        except (ValidationError, ValueError, TypeError):
            continue
        if key in seen:
            return ("services", i)
        seen.add(key)
    return ()


def validate(data: dict[str, Any], where: Mapping[Loc, Where], default: Where,
             errors: Collector | None = None) -> Config:
    """Validate a reader's dict into a Config; every pydantic error becomes a located ConfigError, reported
    together with the reader's own `errors` (all or nothing: any error, no Config)."""
    errors = errors if errors is not None else Collector()
    data = _checked_sysctls(data, where, default, errors)
    share_checks(data)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        for err in e.errors(include_url=False, include_context=False):
            loc: Loc = tuple(err["loc"])
            if not loc:
                loc = _duplicate_service(data)
            w = locate(loc, where, default)
            errors.add(ConfigError(_message(err), path=w.path, line=w.line, key=w.key))
    if config is not None:
        for loc, message in kernel_refusals(config):
            w = locate(loc, where, default)
            errors.add(ConfigError(message, path=w.path, line=w.line, key=w.key))
    if errors or config is None:
        raise ConfigErrors(ordered(errors.errors)[:MAX_REPORTED], errors.total) from None
    return config


@functools.cache
def _check_adapter() -> TypeAdapter[Check]:
    return TypeAdapter(Check)


def share_checks(data: dict[str, Any]) -> None:
    """Replace in `data` each check that is valid on its own by its model, one model for all checks written
    alike. A large configuration repeats one check for every service or real: it is validated once and kept once
    (validating and keeping 120,000 equal checks was a fifth of loading such a file). A check that is not valid
    stays as written, for the whole Config's validation to report where it is."""
    made: dict[str, Any] = {}
    # A reader may hand the same dict to many services (ldirectord's virtuals written alike): known by its id, it
    # is not written out again. `data` holds every dict to the end, so no id is reused meanwhile.
    seen: dict[int, Any] = {}

    def shared(checks: Any) -> Any:
        if not isinstance(checks, list):
            return checks
        out = []
        for c in checks:
            if isinstance(c, dict):
                model = seen.get(id(c))
                if model is None:
                    key = repr(c)  # tells 1 from 1.0 and True, and a list from a tuple: equal keys validate alike
                    if key not in made:
                        try:
                            made[key] = _check_adapter().validate_python(c)
                        except ValidationError:
                            made[key] = c
                    model = seen[id(c)] = made[key]
                c = model
            out.append(c)
        return out

    services = data.get("services")
    for svc in services if isinstance(services, list) else ():
        if not isinstance(svc, dict):
            continue
        if "checks" in svc:
            svc["checks"] = shared(svc["checks"])
        reals = svc.get("reals")
        for real in reals if isinstance(reals, list) else ():
            if isinstance(real, dict) and "checks" in real:
                real["checks"] = shared(real["checks"])


def _checked_sysctls(data: dict[str, Any], where: Mapping[Loc, Where], default: Where,
                     errors: Collector) -> dict[str, Any]:
    """`data` without the [sysctl] entries the kernel's table refuses, each reported at its own key and line
    (the model would refuse them too, but at the whole table)."""
    table = data.get("sysctl")
    if not isinstance(table, dict):
        return data
    kept: dict[str, Any] = {}
    for name, value in table.items():
        try:
            sysctls.check(name, value)
        except ValueError as e:
            w = locate(("sysctl", name), where, default)
            errors.add(ConfigError(str(e), path=w.path, line=w.line, key=f"sysctl.{name}"))
            continue
        kept[name] = value
    return {**data, "sysctl": kept}


def kernel_refusals(config: Config, only: Iterable[int] | None = None) -> Iterator[tuple[Loc, str]]:
    """What a valid-looking model still holds that the kernel would refuse: a real (or sorry server) of the
    other address family than its service, unless tunnelled (the only mix IPVS accepts); `only`: the positions
    of the services to look at (a reread's changed ones: those it kept were found free of it before)."""
    for i in range(len(config.services)) if only is None else only:
        svc = config.services[i]
        af = svc.af
        if af == model.AF_INET:  # the common case, asked of every real: an IPv6 literal is the one with a colon
            for j, r in enumerate(svc.reals):
                if ":" in r.address and r.forward != "tunnel":
                    yield ("services", i, "reals", j, "address"), _mixed(r.address, af, "real")
        else:
            for j, r in enumerate(svc.reals):
                if r.forward != "tunnel" and _family(r.address) not in (None, af):
                    yield ("services", i, "reals", j, "address"), _mixed(r.address, af, "real")
        fb = svc.fallback
        if fb is not None and fb.forward != "tunnel" and _family(fb.address) not in (None, af):
            yield ("services", i, "fallback", "address"), _mixed(fb.address, af, "sorry server")


def _family(address: str) -> int | None:
    """The family of an IP literal; None for a hostname (resolved later, by the daemon)."""
    # validated addresses are canonical IPs or hostnames (never all digits and dots, never with a colon)
    if ":" in address:
        return model.AF_INET6
    return model.AF_INET if address.replace(".", "").isdecimal() else None


def _mixed(address: str, af: int, what: str) -> str:
    mine, theirs = ("IPv6", "IPv4") if af == model.AF_INET6 else ("IPv4", "IPv6")
    return (f"{what} {address} is {theirs} but the service is {mine}; IPVS mixes families only for tunnel "
            f"forwarding")


CONSISTENT_SCHEDULERS = ("mh", "sh")
_SHIPPED = frozenset(KNOWN_SCHEDULERS)
MH_FALLBACK = 1  # sched_flags holds the kernel's flag numbers: mh-fallback is flag-1


def _scale_out(config: Config, schedulers: set[str]) -> list[tuple[Loc, str, str]]:
    """What keeps N directors behind ECMP from sending a flow to the same real whichever director gets it: the
    scheduler, reals deleted rather than quiesced, sloppy_tcp (docs/scale-out.md); `schedulers`: the services'."""
    out: list[tuple[Loc, str, str]] = []
    for i, svc in enumerate(config.services if "mh" in schedulers else ()):
        if (svc.scheduler == "mh" and MH_FALLBACK not in svc.sched_flags
                and any(svc.on_failure_for(r) == "quiesce" for r in svc.reals)):
            out.append((("services", i, "scheduler"), "sched_flags", "mh with on_failure = \"quiesce\" and without "
                        "sched_flags mh-fallback: a new connection that hashes to a quiesced real is dropped; "
                        "mh-fallback sends it to the next real of the table"))
    if config.announce is None:
        return out
    if config.sysctl.get("sloppy_tcp") != 1:
        out.append((("announce", "table"), "announce", "with [announce], set [sysctl] sloppy_tcp = 1: a flow that "
                    "the router moves to another director arrives without a SYN, and without sloppy_tcp that "
                    "director does not forward it"))
    for i, svc in enumerate(config.services):
        if not svc.announced():
            if svc.announce is True and svc.fwmark is not None:
                out.append((("services", i, "fwmark"), "announce", "a fwmark service has no address to announce: "
                            "list its VIPs (announce = [\"192.0.2.10\"]) or set announce = false"))
            continue
        if svc.scheduler not in CONSISTENT_SCHEDULERS:
            out.append((("services", i, "scheduler"), "scheduler", f"scheduler {svc.scheduler!r} on an announced "
                        "service: each director picks its own real, so a flow the router moves to another "
                        "director reaches another real and is reset; mh picks the same real on every director"))
        elif any(svc.on_failure_for(r) == "remove" for r in svc.reals):
            out.append((("services", i, "on_failure"), "on_failure", f"{svc.scheduler} on an announced service "
                        "with on_failure = \"remove\": a real deleted and added again lands elsewhere in the "
                        "kernel's list, so directors' tables disagree; on_failure = \"quiesce\" keeps them equal"))
    return out


def lint(config: Config, where: Mapping[Loc, Where], default: Where) -> list[ConfigWarning]:
    """Warnings about a valid Config: a scheduler name the kernel does not ship (it is refused unless a module
    of that name is installed), a sysctl newer than Linux 6.1. One warning per source line, however many
    services the line made."""
    out: dict[tuple[str, int | None, str], ConfigWarning] = {}
    # The schedulers gathered once, in C: each service is looked at only when they include one to warn about
    # (every reload lints, and most configurations have none).
    schedulers = set(map(operator.attrgetter("scheduler"), config.services))
    for i, svc in enumerate(config.services if not schedulers <= _SHIPPED else ()):
        if svc.scheduler not in KNOWN_SCHEDULERS:
            w = locate(("services", i, "scheduler"), where, default)
            message = (f"unknown scheduler {svc.scheduler!r}: the kernel has {' '.join(KNOWN_SCHEDULERS)}; "
                       f"adding the service fails unless a module ip_vs_{svc.scheduler} is installed")
            out.setdefault((w.path, w.line, message), ConfigWarning(message, w.path, w.line, w.key))
    for loc, key, message in _scale_out(config, schedulers):
        w = locate(loc, where, default)
        out.setdefault((w.path, w.line, message), ConfigWarning(message, w.path, w.line, w.key or key))
    for name in config.sysctl:
        knob = sysctls.KNOBS[name]
        if knob.since is not None:
            w = locate(("sysctl", name), where, default)
            message = f"net.ipv4.vs.{name} exists from Linux {knob.since} on: an older kernel has no such file"
            out.setdefault((w.path, w.line, message), ConfigWarning(message, w.path, w.line, f"sysctl.{name}"))
    return list(out.values())
