"""ldirectord.cf, read verbatim with ldirectord's *code* semantics, into the canonical Config.

Differences from ldirectord, all deliberate: checks run concurrently (never serially, so a per-virtual
checkinterval is honoured); a virtual's lines may be indented by any amount and may be separated by blank
lines; hostnames are kept for the daemon to resolve; directives ipvsd does not implement are accepted with a
warning naming the line; a negotiate check that ldirectord would silently skip (service "none") warns loudly.
"""

from __future__ import annotations

import functools
import operator
import re
import shlex
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ipvsd.config import _report, _source
from ipvsd.config._ranges import count_range, expand_range
from ipvsd.config._report import ConfigWarning, Loc, Where
from ipvsd.config.schema import Config, is_count
from ipvsd.errors import ConfigError

# ldirectord's port → negotiate service table (ld_port_to_service); any other port means "none".
PORT_SERVICE = {21: "ftp", 25: "smtp", 53: "dns", 80: "http", 110: "pop", 119: "nntp", 143: "imap", 389: "ldap",
                443: "https", 587: "submission", 636: "ldaps", 993: "imaps", 995: "pops", 1521: "oracle",
                1812: "radius", 3128: "http_proxy", 3306: "mysql", 5060: "sip", 5432: "pgsql"}
SERVICES = frozenset(PORT_SERVICE.values()) | {"none", "simpletcp"}
UNSUPPORTED_SERVICES = frozenset({"ldap", "ldaps", "mysql", "oracle", "pgsql", "radius", "sip", "http_proxy"})
CHECKTYPES = ("connect", "negotiate", "ping", "external", "external-perl", "on", "off")
# Service names when /etc/services is absent (minimal containers): the ones ldirectord configs use.
_WELL_KNOWN = {"ftp": 21, "ssh": 22, "smtp": 25, "domain": 53, "http": 80, "www": 80, "pop3": 110, "nntp": 119,
               "imap": 143, "imap2": 143, "ldap": 389, "https": 443, "submission": 587, "ldaps": 636,
               "imaps": 993, "pop3s": 995, "mysql": 3306, "postgresql": 5432, "sip": 5060, "radius": 1812}

GLOBAL_ONLY = ("autoreload", "callback", "logfile", "emailalertfrom", "execute", "supervised", "fork",
               "readdquiescent", "maintenancedir")
SHARED = ("checktimeout", "negotiatetimeout", "checkinterval", "checkcount", "failurecount", "fallback",
          "fallback6", "fallbackcommand", "quiescent", "emailalert", "emailalertfreq", "emailalertstatus",
          "smtp", "cleanstop")
VIRTUAL_ONLY = ("real", "real6", "request", "receive", "checktype", "checkcommand", "checkport", "login",
                "passwd", "database", "secret", "load", "scheduler", "schedflags", "persistent", "netmask",
                "protocol", "ops", "service", "httpmethod", "virtualhost", "monitorfile", "servicename",
                "comment")
REMOVED = {"timeout": "removed from ldirectord; use checktimeout and negotiatetimeout",
           "connecttimeout": "removed from ldirectord; use negotiatetimeout"}
_IN_VIRTUAL = frozenset((*VIRTUAL_ONLY, *SHARED))  # what a virtual block may hold, tested on every line
_AT_TOP = frozenset((*GLOBAL_ONLY, *SHARED))
NOT_IMPLEMENTED = {
    "emailalert": "e-mail alerts are not implemented; use `ipvsd events` or the metrics",
    "emailalertfrom": "e-mail alerts are not implemented",
    "emailalertfreq": "e-mail alerts are not implemented",
    "emailalertstatus": "e-mail alerts are not implemented",
    "smtp": "e-mail alerts are not implemented",
    "execute": "starting other ldirectord instances is not implemented; run one ipvsd per config",
    "monitorfile": "monitor files are not implemented; use `ipvsd events`",
    "logfile": "ipvsd logs to stderr (the journal); logfile is ignored",
    "load": "ldirectord parses but never uses `load`; ignored",
    "database": "database checks are not implemented; ignored",
    "secret": "radius checks are not implemented; ignored",
}
INFO_ONLY = {"supervised": "ipvsd always runs in the foreground; ignored",
             "fork": "ipvsd runs all checks concurrently; fork is not needed"}


class _Skipped(Exception):
    """A virtual left out because an error inside it was already collected."""


class _LimitReached(Exception):
    """The configuration grew past a limit (already collected): read no further."""


@dataclass(slots=True)
class _Directive:
    name: str
    value: str
    line: int


@dataclass(slots=True)
class _Virtual:
    line: int
    af6: bool
    target: str
    settings: list[_Directive] = field(default_factory=list)  # every directive but the reals, in order
    last: dict[str, _Directive] = field(default_factory=dict)  # the last setting of each name: what get() answers
    reals: list[_Directive] = field(default_factory=list)  # the real and real6 lines

    def add(self, d: _Directive) -> None:
        if d.name == "real" or d.name == "real6":
            self.reals.append(d)
        else:
            self.settings.append(d)
            self.last[d.name] = d

    def get(self, name: str) -> _Directive | None:
        return self.last.get(name)


# name[=value]; the value's surrounding blanks are stripped after the match (a lazy `(.*?)\s*$` backtracked at
# every character of every value)
_DIRECTIVE = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\s*(?:=(.*))?")
_NAME_OF = operator.attrgetter("name")
_VALUE = operator.attrgetter("value")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d{1,18}")
_VIRTUAL6 = re.compile(r"\[([0-9A-Fa-f:.]+)\]:([0-9A-Za-z_-]+)")
_VIRTUAL4 = re.compile(r"([0-9A-Za-z._+-]+):([0-9A-Za-z_-]+)")
_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
_REAL = re.compile(rf"{_HOST}(?:->{_HOST})?(?::([0-9A-Za-z_-]+))?(?:\s+(.*))?")
_THRESHOLD = re.compile(r"[lu]:\d{1,18}")
_REAL_TOKEN = re.compile(r'"[^"]*"|\S+')
_URL = re.compile(r"https?://")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class _Reader:
    def __init__(self, path: str, text: str, fast: bool = True) -> None:
        self.path = path
        self.text = text
        self.fast = fast  # False: every line through scan_line, every virtual worked out on its own (tests)
        self.errors = _report.Collector()
        self.n_reals = 0
        self.warnings: list[ConfigWarning] = []
        self.glob: dict[str, _Directive] = {}
        self.virtuals: list[_Virtual] = []
        self.where = _report.ServiceWhere()
        self.defaults: dict[str, Any] = {}
        self.global_timeouts = (5, 30)
        self.shapes: dict[tuple[Any, ...], tuple[tuple[dict[str, Any], dict[str, Any] | None],
                                                 tuple[tuple[int, ConfigWarning], ...]]] = {}  # see virtual()
        self.real_flags: dict[str | None, _RealFlags | str] = {}
        self.services: dict[tuple[str, str], int] = {}  # service names' ports, by name and protocol

    def unquote(self, d: _Directive) -> str:
        """The value without its surrounding double quotes; an opening quote without its closing one is an
        error (ldirectord would keep the quote as part of the value: `request="x` asks for `/"x`)."""
        v = d.value
        if v.startswith('"') and (len(v) < 2 or not v.endswith('"')):
            raise self.err(d, f"unterminated quoted string {v!r}")
        return _unquote(v)

    def at(self, line: int, key: str | None) -> Where:
        return Where(self.path, line, key)

    def err(self, d: _Directive | _Virtual, message: str, key: str | None = None) -> ConfigError:
        name = key if key is not None else (d.name if isinstance(d, _Directive) else "virtual")
        return ConfigError(message, path=self.path, line=d.line, key=name)

    def warn(self, d: _Directive, message: str, level: str = "warning") -> None:
        self.warnings.append(ConfigWarning(message, path=self.path, line=d.line, key=d.name,
                                           level="info" if level == "info" else "warning"))

    # --- lines ----------------------------------------------------------------------------------------------

    def scan(self) -> None:
        current: _Virtual | None = None
        heads: dict[str, tuple[str, int]] = {}  # the text before a line's "=", as _head reads it
        fast = self.fast
        for no, raw in enumerate(self.text.splitlines(), 1):
            # Fast path for the lines nearly every file is made of, `<indent>name=value` without a comment
            # inside a virtual block, and `virtual=...` lines: the same result as scan_line, without its
            # regular expression and comment scan. Anything else takes scan_line.
            head, eq, value = raw.partition("=")
            if eq and fast and "#" not in raw:
                found = heads.get(head)
                if found is None:
                    found = heads[head] = _head(head)
                name, kind = found
                if kind >= _LINE_SETTING and current is not None:
                    value = value.strip()  # tabs become spaces, as scan_line's whole-line replace does
                    d = _Directive(name, value.replace("\t", "    ") if "\t" in value else value, no)
                    if kind == _LINE_REAL:  # _Virtual.add, inlined
                        current.reals.append(d)
                    else:
                        current.settings.append(d)
                        current.last[name] = d
                    continue
                if kind == _LINE_VIRTUAL:
                    value = value.strip()
                    current = _Virtual(no, name == "virtual6", value.replace("\t", "    ") if "\t" in value
                                       else value)
                    self.virtuals.append(current)
                    continue
            # ldirectord strips "#..." on virtual lines; doing it everywhere accepts a superset.
            body = _strip_comment(raw.replace("\t", "    "))
            if not body:  # blank, or only a comment (it comes back right-stripped)
                continue
            try:
                current = self.scan_line(body, no, current)
            except ConfigError as e:
                self.errors.add(e)
                if body[0] != " ":  # an unindented line ends the virtual block, even a bad one
                    current = None

    def scan_line(self, body: str, no: int, current: _Virtual | None) -> _Virtual | None:
        """Take one directive; return the virtual block that later indented lines belong to."""
        indented = body[0] == " "
        text = body.lstrip()  # _strip_comment has stripped the right
        m = _DIRECTIVE.fullmatch(text)
        if not m:
            raise ConfigError(f"cannot parse {text!r} (expected name=value)", path=self.path, line=no)
        name, value = m.group(1, 2)
        d = _Directive(name, value.strip() if value else "", no)
        if name in ("virtual", "virtual6") and not indented:
            current = _Virtual(no, name == "virtual6", d.value)
            self.virtuals.append(current)
            return current
        if indented:
            if current is None:
                raise self.err(d, "indented directive outside a virtual block")
            if name in _IN_VIRTUAL:
                current.add(d)
                return current
            if name in REMOVED:
                raise self.err(d, REMOVED[name])
            if name in GLOBAL_ONLY:
                raise self.err(d, "is a global directive; it cannot be set inside a virtual block")
            raise self.err(d, "unknown directive (check the spelling)")
        current = None
        if d.name in REMOVED:
            raise self.err(d, REMOVED[d.name])
        if d.name in VIRTUAL_ONLY:
            raise self.err(d, "belongs inside a virtual block (indent it under a virtual= line)")
        if d.name not in _AT_TOP:
            raise self.err(d, "unknown directive (check the spelling)")
        if d.name == "supervised" and value is None:
            d.value = "yes"
        elif value is None:
            raise self.err(d, "needs a value (name=value)")
        self.glob[d.name] = d
        return current

    # --- values ---------------------------------------------------------------------------------------------

    def yesno(self, d: _Directive) -> bool:
        if d.value not in ("yes", "no"):
            raise self.err(d, f"must be 'yes' or 'no' (got {d.value!r})")
        return d.value == "yes"

    def positive(self, d: _Directive) -> int:
        if not is_count(d.value) or int(d.value) <= 0:
            raise self.err(d, f"must be a positive number of seconds/times (got {d.value!r})")
        return int(d.value)

    def port(self, d: _Directive | _Virtual, text: str, proto: str = "tcp") -> int:
        if is_count(text):
            p = int(text)
        elif (known := self.services.get((text, proto))) is not None:
            p = known  # getservbyname reads /etc/services again at every call
        else:
            try:
                p = socket.getservbyname(text, proto)
            except (OSError, ValueError):  # ValueError: a NUL in the name
                if text not in _WELL_KNOWN:
                    raise self.err(d, f"unknown service name {text!r}") from None
                p = _WELL_KNOWN[text]
            if self.fast:
                self.services[text, proto] = p
        if not 0 <= p <= 65535:
            raise self.err(d, f"port {p} is out of range")
        return p

    def setting(self, v: _Virtual | None, name: str) -> _Directive | None:
        """A per-virtual value, else the global one."""
        if v is not None:
            d = v.get(name)
            if d is not None:
                return d
        return self.glob.get(name)

    # --- build ----------------------------------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"clean_stop": True, "watch_config": False}  # ldirectord: autoreload = no
        for name, d in self.glob.items():
            try:
                if name in NOT_IMPLEMENTED:
                    self.warn(d, NOT_IMPLEMENTED[name])
                elif name in INFO_ONLY:
                    self.warn(d, INFO_ONLY[name], "info")
                elif name == "autoreload":
                    settings["watch_config"] = self.yesno(d)
                elif name == "callback":
                    settings["config_callback"] = self.unquote(d)
                elif name == "readdquiescent":
                    settings["readd_quiescent"] = self.yesno(d)
                elif name == "cleanstop":
                    settings["clean_stop"] = self.yesno(d)
                elif name == "maintenancedir":
                    settings["maintenance_dir"] = self.unquote(d)
                elif name in ("quiescent",):
                    self.yesno(d)
                elif name in ("checktimeout", "negotiatetimeout", "checkinterval", "checkcount", "failurecount"):
                    self.positive(d)
                    if name == "checkcount":
                        self.warn(d, "deprecated in ldirectord; applies to ping checks only (use failurecount)", "info")
            except ConfigError as e:
                self.errors.add(e)
        try:
            interval = self.positive(self.glob["checkinterval"]) if "checkinterval" in self.glob else 10
            ct, nt = self._timeouts(None, 5, 30)
            fall = self.positive(self.glob["failurecount"]) if "failurecount" in self.glob else 1
        except ConfigError:  # already collected above; carry on with the defaults to find the other errors
            interval, ct, nt, fall = 10, 5, 30, 1
        self.defaults = {"interval": float(interval), "timeout": float(ct), "rise": 1, "fall": fall,
                         "warmup": 0.0, "alpha": True}
        self.global_timeouts = (ct, nt)
        services: list[dict[str, Any]] = []
        for v in self.virtuals:
            if len(services) >= _report.MAX_SERVICES:
                self.errors.add(self.err(v, f"more than {_report.MAX_SERVICES} virtual services; ipvsd's limit is "
                                            f"{_report.MAX_SERVICES}"))
                break
            try:
                services.append(self.virtual(len(services), v))
            except ConfigError as e:
                self.errors.add(e)
            except _Skipped:
                pass
            except _LimitReached:
                break
        return {"settings": settings, "check_defaults": self.defaults, "services": services}

    def _timeouts(self, v: _Virtual | None, ct_default: int, nt_default: int) -> tuple[int, int]:
        """(checktimeout, negotiatetimeout): each falls back to the other when only that one is set."""
        def own(name: str) -> int | None:
            d = v.get(name) if v is not None else self.glob.get(name)
            return self.positive(d) if d is not None else None
        ct, nt = own("checktimeout"), own("negotiatetimeout")
        return (ct if ct is not None else (nt if nt is not None else ct_default),
                nt if nt is not None else (ct if ct is not None else nt_default))

    def virtual(self, i: int, v: _Virtual) -> dict[str, Any]:
        svc: dict[str, Any] = {}
        target = v.target
        fwmark: int | None = None
        vport_text: str | None = None
        if is_count(target):  # _NUMBER: \d is what isdecimal() takes
            fwmark = int(target)
            svc["fwmark"] = fwmark
            if v.af6:
                svc["family"] = "inet6"
        else:
            if target.startswith("["):  # _VIRTUAL4 matches no "[", _VIRTUAL6 nothing else
                m = _VIRTUAL6.fullmatch(target)
                if m and not v.af6:
                    raise self.err(v, 'an IPv6 address needs "virtual6" instead of "virtual"')
            else:
                m = _VIRTUAL4.fullmatch(target)
            if m is None:
                raise self.err(v, f"invalid address for virtual service {target!r} (ip:port, [ipv6]:port or a "
                                  "fwmark number)")
            svc["address"] = m.group(1)
            vport_text = m.group(2)
        proto = "fwm" if fwmark is not None else ("udp" if vport_text in ("53", "domain") else "tcp")
        last = v.last
        pd = last.get("protocol")
        if pd is not None:
            if pd.value not in ("tcp", "udp", "fwm"):
                raise self.err(pd, f"must be tcp, udp or fwm (got {pd.value!r})")
            if (pd.value == "fwm") != (fwmark is not None):
                raise self.err(pd, "must be fwm for a fwmark virtual, tcp or udp for an address" if fwmark is None
                               else "a fwmark virtual service must use protocol=fwm")
            proto = pd.value
        vport = 0
        if vport_text is not None:
            vport = self.port(v, vport_text, proto)
            svc["port"] = vport
            svc["protocol"] = proto

        # What follows depends only on the block's settings and the service's kind, protocol and port: virtuals
        # written alike share it, worked out once (its dicts too: validation only reads them). Their warnings are
        # told again at each, at its own lines; an error is never shared (each virtual reports its own).
        shape = seen = None
        if self.fast:
            shape = (v.af6, fwmark is None, proto, vport, tuple(map(_NAME_OF, v.settings)),
                     tuple(map(_VALUE, v.settings)))
            if (seen := self.shapes.get(shape)) is not None:
                shared, told = seen
                for k, w in told:
                    self.warnings.append(ConfigWarning(w.message, path=w.path, line=v.settings[k].line if k >= 0
                                                       else v.line, key=w.key, level=w.level))
        if shape is None or seen is None:
            warned = len(self.warnings)
            shared = self.settings(v, proto, vport, fwmark)
            if shape is not None and (retold := self.retell(v, self.warnings[warned:])) is not None:
                self.shapes[shape] = shared, retold
        settings, service_check = shared
        svc.update(settings)
        svc["checks"] = list(settings["checks"])
        fb = last.get("fallback6" if v.af6 else "fallback") or self.glob.get("fallback6" if v.af6 else "fallback")

        reals: list[dict[str, Any]] = []
        real_lines: list[_Directive] = []  # the line of each output real (a range makes several of one line)
        bad = False
        port = vport if fwmark is None else 0
        for d in v.reals:
            try:
                if (d.name == "real6") != v.af6:
                    raise self.err(d, f'use "{"real6" if v.af6 else "real"}" in a '
                                      f'{"virtual6" if v.af6 else "virtual"} block')
                found = self.real(d, port, service_check)
            except ConfigError as e:
                self.errors.add(e)
                bad = True
                continue
            if len(found) == 1:
                real_lines.append(d)
                reals.append(found[0])
            else:
                real_lines += [d] * len(found)
                reals += found
        if bad:
            raise _Skipped
        svc["reals"] = reals
        assert i == len(self.where.services)  # a virtual that fails above adds no service and no places
        self.where.services.append(functools.partial(_service_places, self.path, v, fb, real_lines))
        return svc

    def retell(self, v: _Virtual, warnings: list[ConfigWarning]) -> tuple[tuple[int, ConfigWarning], ...] | None:
        """The warnings worked out for `v`, each with the index in its settings of the directive it names (-1: the
        virtual line), for another virtual written alike to tell at its own lines; None if one names another."""
        index = {d.line: k for k, d in enumerate(v.settings)}
        index[v.line] = -1
        told = []
        for w in warnings:
            k = index.get(w.line) if w.path == self.path and w.line is not None else None
            if k is None or w.key != (v.settings[k].name if k >= 0 else "virtual"):
                return None
            told.append((k, w))
        return tuple(told)

    def settings(self, v: _Virtual, proto: str, vport: int, fwmark: int | None
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A virtual's fields from its settings, its checks given every default timing key they leave unset;
        and the negotiate check a per-real request/receive may override."""
        d: _Directive | None
        svc: dict[str, Any] = {}
        for d in v.settings:
            if d.name in NOT_IMPLEMENTED:
                self.warn(d, NOT_IMPLEMENTED[d.name])
        if (d := v.get("scheduler")) is not None:
            svc["scheduler"] = d.value
        else:
            svc["scheduler"] = "wrr"
        if (d := v.get("schedflags")) is not None:
            svc["sched_flags"] = d.value
        if (d := v.get("persistent")) is not None:
            if not is_count(d.value):
                raise self.err(d, f"invalid persistent timeout {d.value!r}")
            svc["persistence"] = {"timeout": int(d.value)}
            if (n := v.get("netmask")) is not None:
                svc["persistence"]["netmask"] = n.value
        elif (n := v.get("netmask")) is not None:
            self.warn(n, "netmask has no effect without persistent=; ignored")
        if (d := v.get("ops")) is not None:
            svc["ops"] = self.yesno(d)
        if (d := v.get("servicename")) is not None or (d := v.get("comment")) is not None:
            svc["name"] = self.unquote(d)
        q = self.setting(v, "quiescent")
        svc["on_failure"] = "quiesce" if q is not None and self.yesno(q) else "remove"
        if (d := v.get("cleanstop")) is not None:
            self.yesno(d)
            self.warn(d, "a per-virtual cleanstop is not supported; the global cleanstop applies to every service")
        if (d := self.setting(v, "fallbackcommand")) is not None:
            svc["fallback_command"] = self.unquote(d)
        fb = v.get("fallback6" if v.af6 else "fallback")
        wrong = v.get("fallback" if v.af6 else "fallback6")
        if wrong is not None:
            raise self.err(wrong, f'use "{"fallback6" if v.af6 else "fallback"}" in a '
                                  f'{"virtual6" if v.af6 else "virtual"} block')
        fb = fb or self.glob.get("fallback6" if v.af6 else "fallback")
        if fb is not None:
            svc["fallback"] = self.fallback(fb)

        checks, service_check = self.checks(v, proto, vport, fwmark)
        defaults = self.defaults
        svc["checks"] = [{**defaults, **c} for c in checks]
        return svc, service_check

    def count_reals(self, d: _Directive, count: int) -> None:
        """Count reals before a range is expanded, against the limit of the whole configuration."""
        self.n_reals += count
        if self.n_reals > _report.MAX_REALS:
            self.errors.add(self.err(d, f"more than {_report.MAX_REALS} real servers in all; ipvsd's limit is "
                                        f"{_report.MAX_REALS}"))
            raise _LimitReached

    def fallback(self, d: _Directive) -> dict[str, Any]:
        parts = self.unquote(d).split()
        if not parts or len(parts) > 2:
            raise self.err(d, f"expected host[:port] [gate|masq|ipip], got {d.value!r}")
        host, port = _split_hostport(parts[0])
        fb: dict[str, Any] = {"address": host, "forward": "route"}
        if port is not None:
            fb["port"] = self.port(d, port)
        if len(parts) == 2:
            if parts[1] not in ("gate", "masq", "ipip"):
                raise self.err(d, f"forward method must be gate, masq or ipip (got {parts[1]!r})")
            fb["forward"] = parts[1]
        return fb

    def real(self, d: _Directive, default_port: int, service_check: dict[str, Any] | None) -> list[dict[str, Any]]:
        m = _REAL.fullmatch(d.value)
        if m is None:
            raise self.err(d, f"invalid real server {d.value!r} (host[->host2][:port] gate|masq|ipip [weight])")
        first, last, port_text, flags = m.groups()
        port = default_port
        if port_text is not None:
            # ipvsadm gives a portless real the service's port; ldirectord passes ":0" and relies on that.
            port = self.port(d, port_text) or default_port
        # the flags are written alike on most reals: read once per spelling
        parsed = self.real_flags.get(flags) if self.fast else None
        if parsed is None:
            parsed = _real_flags(flags or "")
            if self.fast:
                self.real_flags[flags] = parsed
        if isinstance(parsed, str):
            raise self.err(d, parsed)
        forward, weight, thresholds, request, receive = parsed
        real: dict[str, Any] = {"forward": forward, "port": port, "weight": weight}
        if thresholds:
            real.update(thresholds)
        if request is not None and service_check is not None:
            try:
                real["checks"] = [{**self.defaults, **_with_request(service_check, request, receive or "")}]
            except ConfigError as e:
                raise self.err(d, e.message) from None
        elif request is not None:
            self.warn(d, "this virtual's check type does not use request/receive; ignored")
        if last is not None:
            if first.startswith("["):
                raise self.err(d, "address ranges are IPv4 only")
            try:
                count = count_range(f"{first}->{last}")
            except ValueError as e:
                raise self.err(d, str(e)) from None
            self.count_reals(d, count)
            return [{**real, "address": a} for a in expand_range(f"{first}->{last}")]
        self.count_reals(d, 1)
        real["address"] = first.strip("[]")
        return [real]

    def checks(self, v: _Virtual, proto: str, vport: int, fwmark: int | None
               ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The virtual's check list, and the negotiate check a per-real request/receive may override."""
        ct, nt = self._timeouts(v, *self.global_timeouts)
        timing: dict[str, Any] = {}
        if (d := v.get("checkinterval")) is not None:
            timing["interval"] = float(self.positive(d))
            if "fork" not in self.glob or self.glob["fork"].value != "yes":
                self.warn(d, "ldirectord ignores a per-virtual checkinterval unless fork=yes; ipvsd honours it",
                          "info")
        if (d := v.get("failurecount")) is not None:
            timing["fall"] = self.positive(d)
        port: dict[str, Any] = {}
        if (d := v.get("checkport")) is not None:
            if not is_count(d.value) or not 0 < int(d.value) < 65536:
                raise self.err(d, f"checkport must be in 1..65535 (got {d.value!r})")
            port["port"] = int(d.value)
        ctd = v.get("checktype")
        kind = ctd.value if ctd is not None else "negotiate"
        rounds = 0
        if _NUMBER.fullmatch(kind):
            rounds, kind = int(kind), "negotiate"
        elif kind not in CHECKTYPES:
            assert ctd is not None
            raise self.err(ctd, f"checktype must be connect, negotiate, ping, external, external-perl, on, off or "
                                f"a number (got {kind!r})")
        anchor = ctd or v.get("service") or _Directive("virtual", v.target, v.line)
        base = {**timing, **port}
        if kind in ("on", "off"):
            return [{"type": kind, **base, "timeout": float(ct)}], None
        if kind == "ping" or (kind == "connect" and proto == "udp"):
            count = self.setting(v, "checkcount")
            c: dict[str, Any] = {"type": "ping", **timing, "timeout": float(ct)}
            if count is not None:
                c["count"] = self.positive(count)
            return [c], None
        if kind == "connect":
            return [{"type": "tcp", **base, "timeout": float(ct)}], None
        if kind in ("external", "external-perl"):
            cmd = v.get("checkcommand")
            try:
                argv = shlex.split(self.unquote(cmd)) if cmd is not None else ["/bin/true"]
            except ValueError as e:
                raise self.err(cmd or anchor, f"cannot split the command: {e}") from None
            if not argv:
                raise self.err(cmd or anchor, "checkcommand is empty")
            if kind == "external-perl":
                self.warn(anchor, "external-perl runs as an external `perl SCRIPT` process in ipvsd", "info")
                argv = ["perl", *argv]
            return [{"type": "external", **base, "timeout": float(ct), "command": argv[0],
                     "args": argv[1:]}], None
        # negotiate (or combined)
        sd = v.get("service")
        if sd is not None:
            if sd.value not in SERVICES:
                raise self.err(sd, f"unknown service {sd.value!r} (one of {', '.join(sorted(SERVICES))})")
            service = sd.value
        else:
            service = "none" if fwmark is not None else PORT_SERVICE.get(vport, "none")
        common = {**base, "timeout": float(nt)}
        if rounds:
            common["connect_rounds"] = rounds
        check = self.negotiate(v, service, common, proto, anchor)
        return [check], (check if check["type"] not in ("on", "tcp") else None)

    def negotiate(self, v: _Virtual, service: str, common: dict[str, Any], proto: str,
                  anchor: _Directive) -> dict[str, Any]:
        req = v.get("request")
        rec = v.get("receive")
        request = self.unquote(req) if req is not None else "/"
        receive = self.unquote(rec) if rec is not None else ""
        if service == "none":
            self.warn(anchor, "NO HEALTH CHECK: ldirectord does no check here (no known service for this port, "
                              "so its 'none' check always reports up); ipvsd keeps every real up. Set service= "
                              "or checktype=connect to really check the reals.")
            return {"type": "on", **{k: val for k, val in common.items() if k != "connect_rounds"}}
        if service in UNSUPPORTED_SERVICES:
            self.warn(anchor, f"NOT CHECKED AS {service.upper()}: the {service} negotiate check is not "
                              "implemented in ipvsd; a TCP connect check is used instead")
            return {"type": "tcp", **common}
        login = v.get("login")
        passwd = v.get("passwd")
        if service in ("http", "https"):
            c: dict[str, Any] = {"type": service, **common}
            try:
                c.update(_http_request(request))
            except ConfigError as e:
                raise self.err(req or anchor, e.message) from None
            if receive:
                c["regex"] = receive
            if (d := v.get("httpmethod")) is not None:
                if d.value.upper() not in ("GET", "HEAD"):
                    raise self.err(d, f"httpmethod must be GET or HEAD (got {d.value!r})")
                c["method"] = d.value.upper()
            if (d := v.get("virtualhost")) is not None:
                c["host"] = self.unquote(d)
            return c
        if service == "dns":
            c = {"type": "dns", **common, "name": request.lstrip("/") or ".", "qtype": "A",
                 "transport": "tcp" if proto == "tcp" else "udp"}
            if receive:
                c["expect"] = receive
            return c
        if service == "simpletcp":
            send = request[1:] if request.startswith("/") else request
            c = {"type": "simpletcp", **common, "send": send.replace("\\n", "\n")}
            if receive:
                c["expect"] = receive
            return c
        if service == "ftp":
            c = {"type": "ftp", **common}
            if login is not None:
                c["login"] = self.unquote(login)
            if passwd is not None:
                c["password"] = self.unquote(passwd)
            if req is not None and request != "/":
                c["path"] = request
            if receive:
                c["receive"] = receive
            return c
        if service in ("smtp", "submission"):
            return {"type": "smtp", **common}
        if service in ("pop", "pops", "imap", "imaps"):
            c = {"type": service.rstrip("s") if service != "pops" else "pop", **common,
                 "tls": service.endswith("s")}
            if service == "imaps":
                c["type"] = "imap"
            if login is not None:
                c["login"] = self.unquote(login)
            if passwd is not None:
                c["password"] = self.unquote(passwd)
            return c
        return {"type": "nntp", **common}


_FIELD = {"servicename": "name", "comment": "name", "persistent": "persistence", "netmask": "persistence",
          "schedflags": "sched_flags", "quiescent": "on_failure", "checktype": "checks", "service": "checks",
          "request": "checks", "receive": "checks", "checkport": "checks", "checkcommand": "checks",
          "httpmethod": "checks", "virtualhost": "checks", "checktimeout": "checks", "negotiatetimeout": "checks",
          "checkinterval": "checks", "failurecount": "checks", "checkcount": "checks", "login": "checks",
          "passwd": "checks", "fallbackcommand": "fallback_command", "fallback6": "fallback"}


# Where a global directive lands in the model, so an error there points at its line.
_GLOBAL_FIELDS: dict[str, tuple[Loc, ...]] = {
    "autoreload": (("settings", "watch_config"),), "callback": (("settings", "config_callback"),),
    "readdquiescent": (("settings", "readd_quiescent"),), "cleanstop": (("settings", "clean_stop"),),
    "maintenancedir": (("settings", "maintenance_dir"),), "checkinterval": (("check_defaults", "interval"),),
    "checktimeout": (("check_defaults", "timeout"),), "negotiatetimeout": (("check_defaults", "timeout"),),
    "failurecount": (("check_defaults", "fall"),),
}


def _service_places(path: str, v: _Virtual, fb: _Directive | None, reals: list[_Directive]) -> dict[Loc, Where]:
    """The source places inside one service, by their location below `("services", i)`: its virtual block, the
    fallback directive it uses (perhaps the global one), and the directive of each of its reals."""
    def at(d: _Directive) -> Where:
        return Where(path, d.line, d.name)
    where: dict[Loc, Where] = {(): Where(path, v.line, "virtual6" if v.af6 else "virtual")}
    where[("fwmark",) if _NUMBER.fullmatch(v.target) else ("address",)] = where[()]
    if (pd := v.get("protocol")) is not None:
        where[("protocol",)] = at(pd)
    for d in (*v.settings, *v.reals):  # the first line of each field (no setting is a field named "real")
        where.setdefault((_FIELD.get(d.name, d.name),), at(d))
    if v.get("persistent") is not None and (n := v.get("netmask")) is not None:
        where[("persistence", "netmask")] = at(n)
    if fb is not None:
        where[("fallback",)] = at(fb)
    for j, d in enumerate(reals):
        where[("reals", j)] = at(d)
    return where


_LINE_OTHER, _LINE_VIRTUAL, _LINE_SETTING, _LINE_REAL = 0, 1, 2, 3  # what _head tells


def _head(head: str) -> tuple[str, int]:
    """What scan_line makes of a line whose text before its first "=" is `head` (the rest holding no "#"): a
    setting or a real of a virtual block, a new virtual, or _LINE_OTHER for scan_line to deal with."""
    body = head.replace("\t", "    ")
    name = body.strip()
    if not body or _NAME.fullmatch(name) is None:
        return name, _LINE_OTHER
    if body[0] == " ":
        if name not in _IN_VIRTUAL:
            return name, _LINE_OTHER
        return name, _LINE_REAL if name in ("real", "real6") else _LINE_SETTING
    return name, _LINE_VIRTUAL if name in ("virtual", "virtual6") else _LINE_OTHER


def _strip_comment(line: str) -> str:
    """Drop a `#` comment that is not inside double quotes."""
    if "#" not in line:
        return line.rstrip()
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i].rstrip()
    return line.rstrip()


def _split_hostport(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


_RealFlags = tuple[str, int, dict[str, int], str | None, str | None]


def _real_flags(flags: str) -> _RealFlags | str:
    """A real's trailing flags read: forward method, weight, thresholds, and its own request and receive; or
    what is wrong with them."""
    tokens = _real_tokens(flags)
    if not tokens or tokens[0] not in ("gate", "masq", "ipip"):
        return "forward method must be gate, masq or ipip"
    forward = tokens.pop(0)
    weight = 1
    if tokens and is_count(tokens[0]):
        weight = int(tokens.pop(0))
    request = receive = None
    if tokens and tokens[0].startswith('"'):
        if len(tokens) < 2 or not tokens[1].startswith('"'):
            return 'a per-real check needs both "request" and "receive"'
        for t in tokens[:2]:
            if len(t) < 2 or not t.endswith('"'):
                return f"unterminated quoted string {t!r}"
        request, receive = tokens.pop(0)[1:-1], tokens.pop(0)[1:-1]
    thresholds: dict[str, int] = {}
    while tokens and _THRESHOLD.fullmatch(tokens[0]):
        t = tokens.pop(0)
        thresholds["l_threshold" if t[0] == "l" else "u_threshold"] = int(t[2:])
    if tokens:
        return f"invalid real server line, around {' '.join(tokens)!r}"
    return forward, weight, thresholds, request, receive


def _real_tokens(flags: str) -> list[str]:
    """Split a real's trailing flags, keeping "quoted strings" (which may hold spaces) whole."""
    return _REAL_TOKEN.findall(flags.replace('",', '" '))


def _http_request(request: str) -> dict[str, Any]:
    """ldirectord's request is a path, or a whole http(s):// URL that names its own target."""
    if _URL.match(request):
        try:
            u = urlsplit(request)
            port = u.port
        except ValueError as e:
            raise ConfigError(f"invalid URL {request!r}: {e}") from None
        out: dict[str, Any] = {"path": (u.path or "/") + (f"?{u.query}" if u.query else "")}
        if u.hostname:
            out["address"] = u.hostname
            out["host"] = u.hostname
        if port:
            out["port"] = port
        return out
    return {"path": request}


def _with_request(check: dict[str, Any], request: str, receive: str) -> dict[str, Any]:
    """The service check with a real's own request/receive (the same fields each check type reads)."""
    c = dict(check)
    t = c["type"]
    if t in ("http", "https"):
        c.pop("regex", None)
        c.update(_http_request(request if request.startswith(("/", "http")) else "/" + request))
        if receive:
            c["regex"] = receive
    elif t == "dns":
        c["name"] = request.lstrip("/") or "."
        c.pop("expect", None)
        if receive:
            c["expect"] = receive
    elif t == "simpletcp":
        c["send"] = request.replace("\\n", "\n")
        c.pop("expect", None)
        if receive:
            c["expect"] = receive
    elif t == "ftp":
        c["path"] = request
        c.pop("receive", None)
        if receive:
            c["receive"] = receive
    return c


def read(path: str) -> tuple[Config, list[ConfigWarning]]:
    """Parse and validate an ldirectord.cf."""
    return parse(_source.read_text(path), path)


def parse(text: str, path: str = "<ldirectord.cf>", *, fast: bool = True) -> tuple[Config, list[ConfigWarning]]:
    """Parse ldirectord.cf text; `fast=False` takes the plain path that every shortcut must agree with."""
    r = _Reader(path, text, fast)
    r.scan()
    data = r.build()
    for name, d in r.glob.items():
        r.where.top[("settings", name)] = Where(path, d.line, name)
        for loc in _GLOBAL_FIELDS.get(name, ()):
            r.where.top[loc] = Where(path, d.line, name)
    config = _report.validate(data, r.where, Where(path), r.errors)
    return config, r.warnings + _report.lint(config, r.where, Where(path))
