"""keepalived.conf (the LVS and health-checker side) read verbatim into the canonical Config.

keepalived's defaults are kept (delay_loop 60, connect_timeout 5, retry 1 — 3 for DNS, 0 for MISC —,
delay_before_retry 1 — 3 for HTTP/SSL, delay_loop for DNS —, alpha off, wlc, NAT), so a migrated config
behaves as before. `retry N` becomes fall = N+1 with retry_delay = delay_before_retry. VRRP and the other
keepalived-only blocks are skipped with an info line: VRRP stays with keepalived. Of a vrrp_instance only
what `lvs_sync_daemon` needs is read: its name, virtual_router_id and `lvs_sync_daemon_interface`.
"""

from __future__ import annotations

import difflib
import functools
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from ipvsd.config import _lexer, _report
from ipvsd.config._lexer import Node
from ipvsd.config._ranges import count_group_address, expand_group_address
from ipvsd.config._report import ConfigWarning, Loc, Where
from ipvsd.config.schema import Config, is_count
from ipvsd.errors import ConfigError

VRRP_BLOCKS = ("vrrp_instance", "vrrp_sync_group", "vrrp_script", "vrrp_track_process", "vrrp_track_file",
               "static_ipaddress", "static_routes", "static_rules", "garp_group", "linkbeat_interfaces",
               "bfd_instance", "track_file", "track_process")
IGNORED_TOP = ("SSL", "net_namespace", "net_namespace_ipvs", "child_wait_time", "instance", "use_pid_dir",
               "namespace_with_ipsets", "linkbeat_use_polling")
TIMING = ("delay_loop", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry", "warmup", "alpha")
CHECKERS = ("HTTP_GET", "SSL_GET", "TCP_CHECK", "SMTP_CHECK", "DNS_CHECK", "MISC_CHECK", "UDP_CHECK", "PING_CHECK",
            "FILE_CHECK", "BFD_CHECK")
UNSUPPORTED_CHECKERS = {"FILE_CHECK": "FILE_CHECK is not supported by ipvsd; use `ipvsd drain` or maintenance_dir",
                        "BFD_CHECK": "BFD_CHECK is not supported by ipvsd"}
DEFAULT_TIMING: dict[str, Any] = {"delay_loop": 60.0, "connect_timeout": 5.0, "delay_before_retry": 1.0}

_FWD = {"NAT": "masq", "DR": "route", "TUN": "tunnel"}
_VS_FIELD = {"lvs_sched": "scheduler", "lb_algo": "scheduler", "protocol": "protocol",
             "persistence_timeout": "persistence", "persistence_granularity": "persistence",
             "persistence_engine": "persistence", "quorum": "quorum", "hysteresis": "hysteresis",
             "quorum_up": "quorum_up", "quorum_down": "quorum_down", "sorry_server": "fallback",
             "sorry_server_inhibit": "fallback", "sorry_server_lvs_method": "fallback",
             "inhibit_on_failure": "on_failure", "ops": "ops", "ip_family": "family"}
_RS_FIELD = {"weight": "weight", "uthreshold": "u_threshold", "lthreshold": "l_threshold",
             "inhibit_on_failure": "on_failure", "lvs_method": "forward", "lb_kind": "forward"}
_FLAGS = ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback")

_INTEGER = re.compile(r"-?\d{1,18}")
_TIMING = frozenset(TIMING)  # membership, asked of most lines of a block
_CHECKERS = frozenset(CHECKERS)
_FLAG_SET = frozenset(_FLAGS)

_CheckBlocks = list[tuple[Node, Node | None]]
"""What each check of a real was made from: its checker block, and its url block (None for other checkers)."""
_Made = list[tuple[int, list[tuple[int, int | None]]]]
"""_service_places' blocks of a virtual_server written plainly, each by its line's offset from the block's first."""


_Keyed = tuple[int, list[Node]]
"""A virtual_server's kind (blocks written alike are of one kind) and its real_server blocks."""


_Told = list[tuple[int, str, str | None, Literal["warning", "info"]]]
"""The warnings of a block written plainly: the offset of each one's line from the block's, message, key, level."""


class _Template(NamedTuple):
    """What a virtual_server written plainly made (it reported no error), for the next ones written alike."""

    service: dict[str, Any]
    made: _Made
    told: _Told


class _Checked(NamedTuple):
    """What a checker block written plainly made in its context (it reported no error), for the next ones written
    alike in the same context."""

    checks: list[tuple[dict[str, Any], int | None]]  # each check, and the index of its url block among the children
    told: _Told


class _Reader:
    def __init__(self, errors: _report.Collector, fast: bool = True) -> None:
        self.errors = errors
        self.failed = 0  # errors reported by this reader
        self.warnings: list[ConfigWarning] = []
        # False: every virtual_server read on its own (the plain path, for tests). True: a virtual_server written
        # like one read before (the same text but for its address and its reals') is made from what that one made.
        self.fast = fast
        self.kinds: dict[tuple[object, ...], int] = {}  # virtual_servers' keys, each hashed once, by number
        self.templates: dict[int, _Template] = {}
        # kinds seen once: a template is kept from the second block of a kind on (a file of blocks written each
        # differently keeps none)
        self.once: set[int] = set()
        self.checkers: dict[tuple[object, ...], _Checked] = {}
        self.where = _report.ServiceWhere()
        self.groups: dict[str, Node] = {}
        self.instances: dict[str, Node] = {}  # vrrp_instance blocks by name, for lvs_sync_daemon
        # lvs_sync_daemon lines, and vrrp_instance lvs_sync_daemon_interface ones with their instance's name
        self.sync_nodes: list[tuple[Node, str | None]] = []

    # --- helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def w(n: Node, key: str | None = None) -> Where:
        if key is not None:
            return Where(n.path, n.line, key)
        if n.where is None:  # one per node: a group repeats its reals' nodes once per address
            n.where = Where(n.path, n.line, n.keyword)
        return n.where

    def err(self, n: Node, message: str) -> ConfigError:
        return ConfigError(message, path=n.path, line=n.line, key=n.keyword)

    def error(self, e: ConfigError) -> None:
        self.failed += 1
        self.errors.add(e)

    def warn(self, n: Node, message: str, level: str = "warning") -> None:
        self.warnings.append(ConfigWarning(message, path=n.path, line=n.line, key=n.keyword,
                                           level="info" if level == "info" else "warning"))

    def first(self, key: int) -> bool:
        """Whether `key` is seen for the first time."""
        if key in self.once:
            return False
        self.once.add(key)
        return True

    def told(self, n: Node, since: int) -> _Told:
        """The warnings from the `since`th on, all about lines of block `n`, by their lines' offsets from n's."""
        return [(w.line - n.line, w.message, w.key, w.level) for w in self.warnings[since:] if w.line is not None]

    def retell(self, n: Node, told: _Told) -> None:
        """The warnings of a block written like `n`, told again at n's lines."""
        for offset, message, key, level in told:
            self.warnings.append(ConfigWarning(message, path=n.path, line=n.line + offset, key=key, level=level))

    def arg(self, n: Node, count: int = 1) -> str:
        if len(n.args) < count:
            raise self.err(n, "needs a value")
        if len(n.args) > count:
            raise self.err(n, f"takes {count} value{'s' if count > 1 else ''}, got {len(n.args)}")
        return n.args[count - 1]

    def int_(self, n: Node, lo: int = 0, hi: int = 2**31 - 1) -> int:
        v = self.arg(n)
        # the common case without the regular expression: digits only (\d is the same set as isdecimal), short
        # enough for the pattern's 18
        if self.fast and v.isdecimal() and len(v) <= 18 and lo <= (i := int(v)) <= hi:
            return i
        if not _INTEGER.fullmatch(v) or not lo <= int(v) <= hi:
            raise self.err(n, f"must be an integer in {lo}..{hi} (got {v!r})")
        return int(v)

    def seconds(self, n: Node) -> float:
        v = self.arg(n)
        try:
            f = float(v)
        except ValueError:
            raise self.err(n, f"must be a number of seconds (got {v!r})") from None
        if not 0 <= f <= 86400 * 7:
            raise self.err(n, f"must be between 0 and 604800 seconds (got {v!r})")
        return f

    def flag(self, n: Node) -> bool:
        """A keyword that is on when present, or takes an explicit boolean."""
        if not n.args:
            return True
        v = self.arg(n).lower()
        if v in ("true", "on", "yes", "1"):
            return True
        if v in ("false", "off", "no", "0"):
            return False
        raise self.err(n, f"must be empty or a boolean (got {v!r})")

    def children(self, n: Node) -> list[Node]:
        if n.children is None:
            raise self.err(n, "needs a { ... } block")
        return n.children

    def no_block(self, n: Node) -> None:
        if n.children is not None:
            raise self.err(n, "does not take a { ... } block")

    def method(self, n: Node) -> tuple[str, dict[str, Any] | None]:
        """lvs_method NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]."""
        if not n.args:
            raise self.err(n, "needs NAT, DR or TUN")
        kind = n.args[0].upper()
        if kind not in _FWD:
            raise self.err(n, f"must be NAT, DR or TUN (got {n.args[0]!r})")
        rest = [a.lower() for a in n.args[1:]]
        if kind != "TUN":
            if rest:
                raise self.err(n, f"unexpected {' '.join(rest)!r} after {kind}")
            return _FWD[kind], None
        tunnel: dict[str, Any] = {}
        while rest:
            word = rest.pop(0)
            if word == "type" and rest and rest[0] in ("ipip", "gue", "gre"):
                tunnel["type"] = rest.pop(0)
            elif word == "port" and rest and is_count(rest[0]):
                tunnel["port"] = int(rest.pop(0))
            elif word in ("nocsum", "csum", "remcsum"):
                tunnel["csum"] = word
            else:
                raise self.err(n, f"unexpected {word!r} in the TUN options (type ipip|gue port N|gre, "
                                  "nocsum|csum|remcsum)")
        return "tunnel", tunnel or None

    # --- top level ------------------------------------------------------------------------------------------

    def read(self, nodes: list[Node]) -> dict[str, Any]:
        # keepalived removes its services on stop unless run with --dont-release-ipvs; ipvsd keeps the table
        # (hitless restart), which is what that flag exists for.
        data: dict[str, Any] = {"settings": {"watch_config": False}}  # keepalived reloads on SIGHUP only
        vs_nodes: list[Node] = []
        for n in nodes:
            try:
                self.top(n, data, vs_nodes)
            except ConfigError as e:
                self.error(e)
        try:
            self.sync(data)
        except ConfigError as e:
            self.error(e)
        if self.instances and vs_nodes:
            self.vrrp_note(next(iter(self.instances.values())), data.get("sync"))
        keyed: list[_Keyed | None] = [self.key(n) for n in vs_nodes] if self.fast else [None] * len(vs_nodes)
        if not self.within_limits(vs_nodes, keyed):
            data["services"] = []
            return data
        services: list[dict[str, Any]] = []
        places = self.where.services
        templates = self.templates
        for n, found in zip(vs_nodes, keyed, strict=True):
            if found is not None:
                template = templates.get(found[0])
                if template is not None:
                    services.append(self.reuse(template, n, found[1]))
                    places.append(functools.partial(_reused_places, n, template.made))
                    continue
            failed, warned = self.failed, len(self.warnings)
            try:
                expanded = self.virtual_server(n)
            except ConfigError as e:
                self.error(e)
                continue
            for svc, reals_made in expanded:
                places.append(functools.partial(_service_places, n, reals_made))
                services.append(svc)
            if found is not None and self.failed == failed and not self.first(found[0]):  # errors never shared
                (svc, reals_made), = expanded  # an address and a port: one service
                made = [(rn.line - n.line, [(c.line - n.line, None if u is None else u.line - n.line)
                                            for c, u in checks]) for rn, checks in reals_made]
                templates[found[0]] = _Template(svc, made, self.told(n, warned))
        data["services"] = services
        data["check_defaults"] = {"interval": 60.0, "timeout": 5.0, "rise": 1, "fall": 2, "retry_delay": 1.0,
                                  "alpha": False}
        return data

    def top(self, n: Node, data: dict[str, Any], vs_nodes: list[Node]) -> None:
        if n.keyword == "virtual_server":  # the most frequent first
            vs_nodes.append(n)
        elif n.keyword.startswith("@") or n.keyword.startswith("$"):
            raise self.err(n, "conditional configuration and $parameters are not supported by ipvsd; "
                              "expand them first")
        elif n.keyword == "virtual_server_group":
            name = self.arg(n)
            self.children(n)
            if name in self.groups:
                raise self.err(n, f"virtual_server_group {name!r} is defined twice")
            self.groups[name] = n
        elif n.keyword == "global_defs":
            self.global_defs(n, data)
        elif n.keyword in VRRP_BLOCKS:
            label = f"{n.keyword} {' '.join(n.args)}".strip()
            self.warn(n, f"{label} skipped: VRRP and tracking stay with keepalived", "info")
            if n.keyword == "vrrp_instance" and n.args:
                self.instances.setdefault(n.args[0], n)
                self.sync_nodes += [(c, n.args[0]) for c in n.children or []
                                    if c.keyword == "lvs_sync_daemon_interface"]
        elif n.keyword in IGNORED_TOP:
            self.warn(n, "not used by ipvsd; ignored", "info")
        else:
            raise self.err(n, "unknown top-level keyword (check the spelling)")

    def within_limits(self, vs_nodes: list[Node], keyed: list[_Keyed | None]) -> bool:
        """Count what the virtual_servers expand to (groups times reals times checks) before building any of
        it: a small file of wide group ranges must not become gigabytes of services."""
        services = reals = checks = 0
        counted: dict[int, tuple[int, int]] = {}  # by kind: blocks written alike count alike
        for n, found in zip(vs_nodes, keyed, strict=True):
            idents = 1 if found is not None else self.count_identities(n)  # an address and a port: one
            known = None if found is None else counted.get(found[0])
            if known is not None:
                n_reals, n_checks = known
            else:
                n_reals = n_checks = 0
                for r in n.children or []:
                    if r.keyword != "real_server":
                        continue
                    n_reals += 1
                    for ch in r.children or []:
                        if ch.keyword in _CHECKERS:  # one check per url (or SMTP host), at least one
                            n_checks += max(1, sum(u.keyword in ("url", "host") for u in ch.children or []))
                if found is not None:
                    counted[found[0]] = n_reals, n_checks
            services += idents
            reals += idents * n_reals
            checks += idents * n_checks
            if services <= _report.MAX_SERVICES and reals <= _report.MAX_REALS and checks <= _report.MAX_CHECKS:
                continue
            for what, count, cap in (("services", services, _report.MAX_SERVICES),
                                     ("real servers", reals, _report.MAX_REALS),
                                     ("checks", checks, _report.MAX_CHECKS)):
                if count > cap:
                    self.error(self.err(n, f"the configuration expands to more than {cap} {what} here "
                                           f"(virtual_server_group ranges times real servers); ipvsd's "
                                           f"limit is {cap}"))
                    return False
        return True

    def count_identities(self, n: Node) -> int:
        """How many services a virtual_server line stands for, without expanding its group."""
        if len(n.args) != 2 or n.args[0] != "group" or n.args[1] not in self.groups:
            return 1
        total = 0
        for e in self.groups[n.args[1]].children or []:
            try:
                total += 1 if e.keyword == "fwmark" else count_group_address(e.keyword)
            except ValueError:
                total += 1  # reported when the group is expanded
        return total

    def global_defs(self, n: Node, data: dict[str, Any]) -> None:
        ignored: list[str] = []
        for c in self.children(n):
            if c.keyword == "lvs_timeouts":
                t: dict[str, int] = {}
                args = list(c.args)
                while args:
                    key = args.pop(0).lower()
                    if key not in ("tcp", "tcpfin", "udp") or not args or not is_count(args[0]):
                        raise self.err(c, "expected [tcp N] [tcpfin N] [udp N]")
                    t["tcp_fin" if key == "tcpfin" else key] = int(args.pop(0))
                data["lvs_timeouts"] = t
                self.where.top[("lvs_timeouts",)] = self.w(c)
            elif c.keyword == "lvs_sync_daemon":
                self.sync_nodes.append((c, None))
            elif c.keyword in ("lvs_flush", "lvs_flush_on_stop", "lvs_notify_fifo", "lvs_notify_fifo_script"):
                self.warn(c, "not implemented by ipvsd; ignored")
            else:
                ignored.append(c.keyword)
        if ignored:
            self.warn(n, f"ignored (not about IPVS): {', '.join(sorted(set(ignored)))}", "info")

    # --- connection sync ------------------------------------------------------------------------------------

    def sync(self, data: dict[str, Any]) -> None:
        """`lvs_sync_daemon IFACE [[inst] NAME] [id N] [maxlen L] [port P] [ttl T] [group G]` (or the deprecated
        `lvs_sync_daemon_interface IFACE` of a vrrp_instance) as the [sync] section."""
        if not self.sync_nodes:
            return
        (first, instance), *again = self.sync_nodes  # in the order keepalived reads them: it keeps the first
        for c, _ in again:
            self.error(self.err(c, f"the sync daemon is already configured on line {first.line} "
                                   f"({first.keyword}); keepalived ignores this one: remove it"))
        c = first
        sync: dict[str, Any] = {}
        if instance is not None:  # a vrrp_instance's own lvs_sync_daemon_interface
            self.warn(c, f"deprecated in keepalived: write `lvs_sync_daemon {' '.join(c.args)} inst {instance}` "
                         "in global_defs")
            sync["interface"] = self.arg(c)
        else:
            self.no_block(c)
            if not c.args:
                raise self.err(c, "needs an interface: lvs_sync_daemon IFACE [inst VRRP_INSTANCE] [id SYNCID] "
                                  "[maxlen LEN] [port PORT] [ttl TTL] [group ADDRESS]")
            sync["interface"] = c.args[0]
            instance = self.sync_options(c, sync)
        if instance is not None:
            node = self.instances.get(instance)
            if node is None:
                close = difflib.get_close_matches(instance, list(self.instances), n=1)
                known = f"did you mean {close[0]!r}?" if close else \
                    f"the instances are {', '.join(sorted(self.instances)) or 'none'}"
                raise self.err(c, f"no vrrp_instance named {instance!r} ({known}); keepalived would run no sync "
                                  "daemon")
            if "syncid" not in sync:  # keepalived's default: the instance's VRID
                sync["syncid"] = self.vrid(node, c)
            sync["owner"] = "external"
        self.where.top[("sync",)] = self.w(c)
        data["sync"] = sync

    def sync_options(self, c: Node, sync: dict[str, Any]) -> str | None:
        """The options after lvs_sync_daemon's interface into `sync`; the instance name, if any."""
        limits = {"id": ("syncid", 0, 255), "maxlen": ("maxlen", 1, 65507), "port": ("port", 1, 65535),
                  "ttl": ("ttl", 1, 255)}
        instance: str | None = None
        args = c.args
        i = 1
        while i < len(args):
            word = args[i]
            if word in ("inst", "group", *limits) and i + 1 >= len(args):
                raise self.err(c, f"needs a value after {word!r}")
            if word == "inst":
                if instance is not None:
                    raise self.err(c, f"names two vrrp instances ({instance!r} and {args[i + 1]!r})")
                instance = args[i + 1]
            elif word == "group":
                sync["group"] = args[i + 1]
            elif word in limits:
                field, lo, hi = limits[word]
                v = args[i + 1]
                if not is_count(v) or not lo <= int(v) <= hi:
                    raise self.err(c, f"{word} must be an integer in {lo}..{hi} (got {v!r})")
                sync[field] = int(v)
            elif i == 1:
                # keepalived's older form: the instance name right after the interface, `inst` omitted
                instance = word
                i += 1
                continue
            elif i == 2 and instance is not None and "syncid" not in sync and is_count(word):
                if int(word) > 255:
                    raise self.err(c, f"the sync id must be an integer in 0..255 (got {word!r})")
                self.warn(c, f"write `id {word}`: keepalived still reads a bare sync id but asks for the keyword")
                sync["syncid"] = int(word)
                i += 1
                continue
            else:
                raise self.err(c, f"unknown option {word!r} (inst NAME, id N, maxlen L, port P, ttl T, group "
                                  "ADDRESS)")
            i += 2
        return instance

    def vrid(self, instance: Node, at: Node) -> int:
        """The virtual_router_id of a vrrp_instance, which lvs_sync_daemon takes as its sync id by default."""
        for c in instance.children or []:
            if c.keyword == "virtual_router_id":
                v = c.args[0] if len(c.args) == 1 else ""
                if is_count(v) and 1 <= int(v) <= 255:
                    return int(v)
                raise self.err(c, f"must be an integer in 1..255 (got {' '.join(c.args)!r}); {at.keyword} on "
                                  f"line {at.line} takes it as its sync id")
        raise self.err(instance, f"vrrp_instance {instance.args[0]} has no virtual_router_id, which {at.keyword} "
                                 f"on line {at.line} takes as its sync id: give `id N` there")

    def vrrp_note(self, first: Node, sync: dict[str, Any] | None) -> None:
        """keepalived must not run its own checker beside ipvsd: say so where the VRRP part begins."""
        message = ("this file has vrrp_instance and virtual_server blocks: run keepalived with --vrrp (-P) so "
                   "that only its VRRP process runs, or keepalived's checker and ipvsd both program the IPVS "
                   "table")
        if sync is not None and sync.get("owner") == "external":
            message += ("; keepalived --vrrp then runs the sync daemons of `lvs_sync_daemon ... inst`, following "
                        "the instance's state")
        elif sync is not None:
            message += "; without `inst` ipvsd runs the sync daemons (master and backup), not keepalived --vrrp"
        self.warn(first, message)

    # --- virtual servers ------------------------------------------------------------------------------------

    def key(self, n: Node) -> _Keyed | None:
        """What a virtual_server `address port` written plainly makes depends on its text but for its address
        and its reals' (which are only copied): that text with those left out, and its real_server blocks. None
        for any other virtual_server."""
        span, args = n.span, n.args
        if span is None or len(args) != 2 or args[0] == "fwmark" or args[0] == "group":
            return None
        lines, end = span
        first = n.line + 1
        text: list[Any] = lines[n.line:end]  # one node a line: the content, and where each node is
        reals = [c for c in n.children or () if c.keyword == "real_server"]
        for c in reals:
            text[c.line - first] = (c.children is None, len(c.args), *c.args[1:])  # never a line's text
        text[-1] = args[1]  # in place of the closing line
        kinds = self.kinds
        return kinds.setdefault(tuple(text), len(kinds)), reals

    def reuse(self, template: _Template, n: Node, reals: list[Node]) -> dict[str, Any]:
        """The service of virtual_server `n` written like the template's: its service with n's addresses (the
        rest is shared: validation only reads it), its warnings told again at n's lines."""
        svc = template.service
        self.retell(n, template.told)
        return {**svc, "address": n.args[0],
                "reals": [{**real, "address": rn.args[0]} for real, rn in zip(svc["reals"], reals, strict=True)]}

    def identities(self, n: Node) -> list[dict[str, Any]]:
        """The (address, port) or fwmark identities a virtual_server line stands for."""
        args = n.args
        if len(args) == 2 and args[0] == "fwmark":
            if not is_count(args[1]) or not 0 < int(args[1]) <= 0xFFFFFFFF:
                raise self.err(n, f"invalid fwmark {args[1]!r}")
            return [{"fwmark": int(args[1])}]
        if len(args) == 2 and args[0] == "group":
            g = self.groups.get(args[1])
            if g is None:
                raise self.err(n, f"no virtual_server_group named {args[1]!r}")
            out: list[dict[str, Any]] = []
            bad = False
            for e in g.children or []:
                try:
                    out.extend(self.group_entry(e))
                except ConfigError as ex:
                    self.error(ex)
                    bad = True
            if not out and not bad:
                raise self.err(g, "the group has no entries")
            return out
        if len(args) == 2:
            if not is_count(args[1]) or not 0 < int(args[1]) <= 65535:
                raise self.err(n, f"invalid port {args[1]!r}")
            return [{"address": args[0], "port": int(args[1])}]
        if len(args) == 1:
            raise self.err(n, "needs a port after the address (ip port, fwmark N or group NAME)")
        raise self.err(n, "expected ip port, fwmark N or group NAME")

    def group_entry(self, e: Node) -> list[dict[str, Any]]:
        self.no_block(e)
        if e.keyword == "fwmark":
            if not e.args or not is_count(e.args[0]) or len(e.args) > 2:
                raise self.err(e, "expected fwmark N [inet|inet6]")
            fam = e.args[1] if len(e.args) == 2 else "inet"
            if fam not in ("inet", "inet6"):
                raise self.err(e, f"family must be inet or inet6 (got {fam!r})")
            return [{"fwmark": int(e.args[0]), "family": fam}]
        if len(e.args) != 1 or not is_count(e.args[0]):
            raise self.err(e, "expected an address (or a.b.c.d-e range, or CIDR) and a port")
        try:
            addrs = list(expand_group_address(e.keyword))
        except ValueError as ex:
            raise self.err(e, str(ex)) from None
        return [{"address": a, "port": int(e.args[0])} for a in addrs]

    def virtual_server(self, n: Node) -> list[tuple[dict[str, Any], list[tuple[Node, _CheckBlocks]]]]:
        """The services a virtual_server stands for, each with the real_server blocks its reals came from and the
        blocks of their checks (for `_service_places`)."""
        idents = self.identities(n)
        svc: dict[str, Any] = {}
        timing: dict[str, Any] = {}
        forward, tunnel = "masq", None
        vhost: str | None = None
        sorry: Node | None = None
        sorry_method: tuple[str, dict[str, Any] | None] | None = None
        sorry_inhibit = False
        flags: list[str] = []
        persistence: dict[str, Any] = {}
        real_nodes: list[Node] = []
        seen_sched = seen_method = False
        for c in self.children(n):
            try:
                if c.keyword not in _VS_KEYWORDS:
                    raise self.err(c, "unknown keyword in virtual_server (check the spelling)")
                if c.keyword != "real_server":
                    self.no_block(c)
                k = c.keyword
                if k == "real_server":  # the most frequent first: this chain runs for every line of the block
                    real_nodes.append(c)
                elif k in ("lvs_sched", "lb_algo"):
                    svc["scheduler"] = self.arg(c)
                    seen_sched = True
                elif k in ("lvs_method", "lb_kind"):
                    forward, tunnel = self.method(c)
                    seen_method = True
                elif k == "protocol":
                    p = self.arg(c).lower()
                    if p not in ("tcp", "udp", "sctp"):
                        raise self.err(c, f"must be TCP, UDP or SCTP (got {c.args[0]!r})")
                    svc["protocol"] = p
                elif k == "persistence_timeout":
                    persistence["timeout"] = self.int_(c, 1) if c.args else 360
                elif k == "persistence_granularity":
                    persistence["netmask"] = self.arg(c)
                    persistence.setdefault("timeout", 360)
                elif k == "persistence_engine":
                    persistence["pe"] = self.arg(c)
                elif k in _TIMING:
                    timing[k] = self.timing_value(c)
                elif k == "quorum":
                    svc["quorum"] = self.int_(c)
                elif k == "hysteresis":
                    svc["hysteresis"] = self.int_(c)
                elif k in ("quorum_up", "quorum_down"):
                    svc[k] = self.script(c)
                elif k == "sorry_server":
                    sorry = c
                elif k == "sorry_server_inhibit":
                    sorry_inhibit = self.flag(c)
                elif k == "sorry_server_lvs_method":
                    sorry_method = self.method(c)
                elif k == "inhibit_on_failure":
                    svc["on_failure"] = "quiesce" if self.flag(c) else "remove"
                elif k == "ops":
                    svc["ops"] = self.flag(c)
                elif k in _FLAG_SET:
                    if self.flag(c):
                        flags.append(k)
                elif k == "ip_family":
                    fam = self.arg(c)
                    if fam not in ("inet", "inet6"):
                        raise self.err(c, f"must be inet or inet6 (got {fam!r})")
                    svc["family"] = fam
                elif k == "virtualhost":
                    vhost = self.arg(c)
                elif k in ("hashed",):
                    self.warn(c, "legacy flag; the kernel manages it; ignored", "info")
                elif k in ("omega", "smtp_alert", "ha_suspend", "snmp_name", "lvs_flush"):
                    self.warn(c, "not implemented by ipvsd; ignored")
                else:
                    raise self.err(c, "unknown keyword in virtual_server (check the spelling)")
            except ConfigError as e:
                self.error(e)
        if not seen_sched:
            svc["scheduler"] = "wlc"
            self.warn(n, "no lvs_sched; keepalived's default wlc is used", "info")
        if not seen_method:
            self.warn(n, "no lvs_method; keepalived's default NAT is used", "info")
        if flags:
            svc["sched_flags"] = flags
        if persistence:
            svc["persistence"] = persistence
        if sorry is not None:
            if not 1 <= len(sorry.args) <= 2:
                raise self.err(sorry, "expected ip [port]")
            fb_fwd = (sorry_method or (forward, tunnel))[0]
            svc["fallback"] = {"address": sorry.args[0], "forward": fb_fwd, "inhibit": sorry_inhibit}
            if len(sorry.args) == 2:
                if not is_count(sorry.args[1]):
                    raise self.err(sorry, f"invalid port {sorry.args[1]!r}")
                svc["fallback"]["port"] = int(sorry.args[1])
        out: list[tuple[dict[str, Any], list[tuple[Node, _CheckBlocks]]]] = []
        # A group's addresses of one port have the same reals: read once per port (each service its own dicts,
        # the warnings told again for each, as the plain path does), unless they reported an error.
        by_port: dict[int, tuple[list[dict[str, Any]], list[tuple[Node, _CheckBlocks]], list[ConfigWarning]]] = {}
        for ident in idents:
            vport = ident.get("port", 0)
            known = by_port.get(vport)
            if known is not None:
                reals = [{**real} for real in known[0]]
                made = known[1]
                self.warnings += known[2]
            else:
                reals = []
                made = []
                failed, warned = self.failed, len(self.warnings)
                for rn in real_nodes:
                    try:
                        real, checks_made = self.real_server(rn, vport, forward, tunnel, timing, vhost)
                    except ConfigError as e:
                        self.error(e)
                        continue
                    reals.append(real)
                    made.append((rn, checks_made))
                if self.fast and self.failed == failed and len(idents) > 1:
                    by_port[vport] = [{**real} for real in reals], made, self.warnings[warned:]
            name = f"group {n.args[1]}" if n.args and n.args[0] == "group" else None
            entry = {**svc, **ident, "reals": reals}
            if name:
                entry["name"] = name
            if "fwmark" in ident and "family" in svc:
                entry["family"] = svc["family"]
            out.append((entry, made))
        return out

    def script(self, n: Node) -> str:
        if not n.args:
            raise self.err(n, "needs a script")
        return " ".join(shlex.quote(a) if " " in a and len(n.args) > 1 else a for a in n.args)

    def timing_value(self, c: Node) -> Any:
        if c.keyword == "alpha":
            return self.flag(c)
        if c.keyword in ("retry", "nb_get_retry"):
            return self.int_(c, 0, 999)
        return self.seconds(c)

    # --- real servers and checkers --------------------------------------------------------------------------

    def real_server(self, n: Node, vport: int, forward: str, tunnel: dict[str, Any] | None,
                    vs_timing: dict[str, Any], vhost: str | None) -> tuple[dict[str, Any], _CheckBlocks]:
        if not 1 <= len(n.args) <= 2:
            raise self.err(n, "expected ip [port]")
        real: dict[str, Any] = {"address": n.args[0], "port": vport, "forward": forward}
        if tunnel:
            real["tunnel"] = tunnel
        if len(n.args) == 2:
            if not is_count(n.args[1]) or int(n.args[1]) > 65535:
                raise self.err(n, f"invalid port {n.args[1]!r}")
            real["port"] = int(n.args[1])
        timing = dict(vs_timing)
        checker_nodes: list[Node] = []
        for c in n.children or []:
            try:
                if c.keyword not in _RS_KEYWORDS:
                    raise self.err(c, "unknown keyword in real_server (check the spelling)")
                if c.keyword not in _CHECKERS:
                    self.no_block(c)
                k = c.keyword
                if k in _CHECKERS:  # the most frequent first, with weight
                    checker_nodes.append(c)
                elif k == "weight":
                    real["weight"] = self.int_(c)
                elif k in ("lvs_method", "lb_kind"):
                    real["forward"], tun = self.method(c)
                    real.pop("tunnel", None)
                    if tun:
                        real["tunnel"] = tun
                elif k == "inhibit_on_failure":
                    real["on_failure"] = "quiesce" if self.flag(c) else "remove"
                elif k == "uthreshold":
                    real["u_threshold"] = self.int_(c)
                elif k == "lthreshold":
                    real["l_threshold"] = self.int_(c)
                elif k in _TIMING:
                    timing[k] = self.timing_value(c)
                elif k == "virtualhost":
                    vhost = self.arg(c)
                elif k in ("notify_up", "notify_down"):
                    self.warn(c, "notify scripts are not implemented; use `ipvsd events`")
                elif k in ("smtp_alert", "snmp_name"):
                    self.warn(c, "not implemented by ipvsd; ignored")
                else:
                    raise self.err(c, "unknown keyword in real_server (check the spelling)")
            except ConfigError as e:
                self.error(e)
        checks: list[dict[str, Any]] = []
        made: _CheckBlocks = []
        for c in checker_nodes:
            try:
                found = self.checks(c, timing, vhost)
            except ConfigError as e:
                self.error(e)
                continue
            for check, url in found:
                checks.append(check)
                made.append((c, url))
        # keepalived: a real with no checker is always up, which is what the service's empty check list means.
        if checks:
            real["checks"] = checks
        return real, made

    def checks(self, n: Node, timing: dict[str, Any], vhost: str | None) -> list[tuple[dict[str, Any], Node | None]]:
        """`checker`, or what a checker block written alike made with the same timing and virtualhost: its checks
        (shared: validation only reads them), its warnings told again at n's lines."""
        span = n.span
        if span is None or not self.fast:
            return self.checker(n, timing, vhost)
        lines, end = span
        key = (lines[n.line - 1], vhost, tuple(timing.items()), tuple(lines[n.line:end - 1]))
        known = self.checkers.get(key)
        if known is not None:
            self.retell(n, known.told)
            children = n.children or []
            return [(check, None if i is None else children[i]) for check, i in known.checks]
        failed, warned = self.failed, len(self.warnings)
        found = self.checker(n, timing, vhost)
        if self.failed == failed:  # an error is never shared
            index = {id(c): i for i, c in enumerate(n.children or ())}
            self.checkers[key] = _Checked([(check, None if u is None else index[id(u)]) for check, u in found],
                                          self.told(n, warned))
        return found

    def checker(self, n: Node, inherited: dict[str, Any],
                vhost: str | None) -> list[tuple[dict[str, Any], Node | None]]:
        """The checks of a checker block, each with the url block it came from (None for other checkers)."""
        if n.keyword in UNSUPPORTED_CHECKERS:
            raise self.err(n, UNSUPPORTED_CHECKERS[n.keyword])
        kind = n.keyword
        timing = dict(inherited)
        common: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        urls: list[Node] = []
        hosts: list[Node] = []
        sni_on = False
        sni_name: str | None = None
        for c in self.children(n):
            try:
                if c.keyword not in ("url", "host"):
                    self.no_block(c)
                k = c.keyword
                if k in _TIMING:
                    timing[k] = self.timing_value(c)
                elif k == "connect_ip" and kind != "MISC_CHECK":
                    common["address"] = self.arg(c)
                elif k == "connect_port" and kind != "MISC_CHECK":
                    common["port"] = self.int_(c, 1, 65535)
                elif k == "bindto" and kind != "MISC_CHECK":
                    common["bindto"] = self.arg(c)
                elif k == "fwmark" and kind != "MISC_CHECK":
                    common["mark"] = self.int_(c, 1, 0xFFFFFFFF)
                elif k in ("bind_port", "bind_if", "log_all_failures", "dont_track_primary") and kind != "MISC_CHECK":
                    self.warn(c, "not implemented by ipvsd; ignored", "info")
                elif kind in ("HTTP_GET", "SSL_GET") and k == "url":
                    urls.append(c)
                elif kind in ("HTTP_GET", "SSL_GET") and k in ("http_protocol", "fast_recovery", "tls_compliant"):
                    self.warn(c, "not needed by ipvsd's HTTP client; ignored", "info")
                elif kind in ("HTTP_GET", "SSL_GET") and k == "virtualhost":
                    vhost = self.arg(c)
                elif kind == "SSL_GET" and k == "enable_sni":
                    sni_on = self.flag(c)
                elif kind == "SSL_GET" and k == "sni_name":
                    sni_name = self.arg(c)
                    sni_on = True
                elif kind == "SMTP_CHECK" and k in ("helo_name",):
                    extra["helo"] = self.arg(c)
                elif kind == "SMTP_CHECK" and k == "host":
                    hosts.append(c)
                elif kind == "DNS_CHECK" and k == "type":
                    extra["qtype"] = self.arg(c).upper()
                elif kind == "DNS_CHECK" and k == "name":
                    extra["name"] = self.arg(c)
                elif kind == "MISC_CHECK" and k == "misc_path":
                    if not c.args:
                        raise self.err(c, "needs a command")
                    try:
                        argv = (_split if self.fast else shlex.split)(c.args[0]) if len(c.args) == 1 else c.args
                    except ValueError as e:
                        raise self.err(c, f"cannot split the command: {e}") from None
                    if not argv:
                        raise self.err(c, "needs a command")
                    extra["command"], extra["args"] = argv[0], list(argv[1:])
                elif kind == "MISC_CHECK" and k == "misc_timeout":
                    extra["timeout"] = self.seconds(c)
                elif kind == "MISC_CHECK" and k == "misc_dynamic":
                    extra["dynamic_weight"] = self.flag(c)
                elif kind == "MISC_CHECK" and k == "user":
                    extra["user"] = self.arg(c) if len(c.args) == 1 else c.args[0]
                elif kind == "UDP_CHECK" and k == "payload":
                    extra["payload"] = self.arg(c)
                elif kind == "UDP_CHECK" and k == "require_reply":
                    extra["expect"] = self.arg(c) if c.args else None
                elif kind == "UDP_CHECK" and k in ("min_reply_length", "max_reply_length"):
                    extra[k] = self.int_(c, 0, 65535)
                else:
                    raise self.err(c, f"unknown keyword in {kind} (check the spelling)")
            except ConfigError as e:
                self.error(e)
        base = {**self.resolve(kind, timing), **common}
        if kind in ("HTTP_GET", "SSL_GET"):
            t = "https" if kind == "SSL_GET" else "http"
            if not urls:
                self.warn(n, f"{kind} without a url block checks \"/\" for a 2xx status")
                return [({**base, "type": t, **({"host": vhost} if vhost else {})}, None)]
            out: list[tuple[dict[str, Any], Node | None]] = []
            for u in urls:
                check = {**base, "type": t, **self.url(u, vhost)}
                if sni_on and (sni_name or check.get("host")):
                    check["sni"] = sni_name or check["host"]
                out.append((check, u))
            return out
        if kind == "SMTP_CHECK":
            if hosts:
                out = []
                for h in hosts:
                    hc: dict[str, Any] = {}
                    for c in self.children(h):
                        if c.keyword == "connect_ip":
                            hc["address"] = self.arg(c)
                        elif c.keyword == "connect_port":
                            hc["port"] = self.int_(c, 1, 65535)
                        elif c.keyword == "bindto":
                            hc["bindto"] = self.arg(c)
                        elif c.keyword == "fwmark":
                            hc["mark"] = self.int_(c, 1, 0xFFFFFFFF)
                        elif c.keyword in ("bind_port", "bind_if"):
                            self.warn(c, "not implemented by ipvsd; ignored", "info")
                        else:
                            raise self.err(c, "unknown keyword in SMTP_CHECK host (check the spelling)")
                    out.append(({**base, "type": "smtp", **extra, **hc}, None))
                return out
            return [({**base, "type": "smtp", **extra}, None)]
        if kind == "MISC_CHECK":
            if "command" not in extra:
                raise self.err(n, "MISC_CHECK needs misc_path")
            if "timeout" not in extra:
                extra["timeout"] = base["interval"]
            return [({**base, "type": "external", "pass_target": False, **extra}, None)]
        t = {"TCP_CHECK": "tcp", "DNS_CHECK": "dns", "UDP_CHECK": "udp", "PING_CHECK": "ping"}[kind]
        return [({**base, "type": t, **extra}, None)]

    def resolve(self, kind: str, t: dict[str, Any]) -> dict[str, Any]:
        """keepalived timing (with its per-checker defaults) as ipvsd check timing."""
        interval = t.get("delay_loop", DEFAULT_TIMING["delay_loop"])
        retry_default = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
        retry = t.get("retry", t.get("nb_get_retry", retry_default))
        delay_default = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": interval}.get(kind, 1.0)
        out: dict[str, Any] = {
            "interval": interval if interval > 0 else 60.0,
            "timeout": t.get("connect_timeout", DEFAULT_TIMING["connect_timeout"]) or 5.0,
            "rise": 1,
            "fall": retry + 1,
            "retry_delay": t.get("delay_before_retry", delay_default),
            "alpha": bool(t.get("alpha", False)),
        }
        if "warmup" in t:
            out["warmup"] = t["warmup"]
        return out

    def url(self, u: Node, vhost: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        digest_line: int | None = None
        if vhost:
            out["host"] = vhost
        for c in self.children(u):
            try:
                self.no_block(c)
                k = c.keyword
                if k == "path":
                    out["path"] = self.arg(c)
                elif k == "status_code":
                    if not c.args:
                        raise self.err(c, "needs at least one code or range")
                    # keepalived accepts any code of any status_code line of the url
                    out.setdefault("expect_status", []).extend(c.args)
                elif k == "digest":
                    value = self.arg(c)
                    if digest_line is not None:
                        raise self.err(c, f"a second digest in this url (the first is on line {digest_line}); a "
                                          "url has one digest")
                    out["digest"], digest_line = value, c.line
                elif k == "virtualhost":
                    out["host"] = self.arg(c)
                elif k == "regex":
                    out["regex"] = self.arg(c)
                elif k == "regex_no_match":
                    if c.args:
                        out["regex_no_match"] = self.arg(c)
                    elif "regex" in out:
                        out["regex_no_match"] = out.pop("regex")
                elif k in ("regex_options", "regex_stack", "regex_min_offset", "regex_max_offset", "tls_compliant"):
                    self.warn(c, "not implemented by ipvsd; ignored")
                else:
                    raise self.err(c, "unknown keyword in url (check the spelling)")
            except ConfigError as e:
                self.error(e)
        return out


_VS_KEYWORDS = frozenset({
    "lvs_sched", "lb_algo", "lvs_method", "lb_kind", "protocol", "persistence_timeout", "persistence_granularity",
    "persistence_engine", *TIMING, "quorum", "hysteresis", "quorum_up", "quorum_down", "sorry_server",
    "sorry_server_inhibit", "sorry_server_lvs_method", "inhibit_on_failure", "ops", *_FLAGS, "ip_family",
    "virtualhost", "real_server", "hashed", "omega", "smtp_alert", "ha_suspend", "snmp_name", "lvs_flush"})
_RS_KEYWORDS = frozenset({"weight", "lvs_method", "lb_kind", "inhibit_on_failure", "uthreshold", "lthreshold", *TIMING,
                          "virtualhost", *CHECKERS, "notify_up", "notify_down", "smtp_alert", "snmp_name"})

_URL_FIELD = {"path": "path", "status_code": "expect_status", "digest": "digest", "virtualhost": "host",
              "regex": "regex", "regex_no_match": "regex_no_match"}
_TARGET_FIELD = {"connect_ip": "address", "bindto": "bindto"}  # of every checker but MISC_CHECK
_CHECK_FIELD = {("DNS_CHECK", "type"): "qtype", ("UDP_CHECK", "payload"): "payload",
                ("UDP_CHECK", "require_reply"): "expect"}


# ASCII text that shlex.split splits as str.split does: no quote, no escape, no whitespace that str.split alone
# splits on (\v, \f, \x1c-\x1f; and non-ASCII spaces)
_SHLEX_PLAIN = re.compile(r"[^'\"\\\x0b\x0c\x1c-\x1f]*")


def _split(command: str) -> list[str]:
    """shlex.split(command): str.split when they agree (most commands), some 30 times cheaper."""
    if command.isascii() and _SHLEX_PLAIN.fullmatch(command):
        return command.split()
    return shlex.split(command)


def _valid(read: Callable[[Node], object], n: Node) -> bool:
    try:
        read(n)
    except ConfigError:
        return False
    return True


# --- source places, worked out only when an error or a warning needs one ---------------------------------------
# Module functions, not reader methods: a service's places are kept as a function of its blocks, and a function
# bound to the reader would make a cycle (reader -> places -> reader) that holds every block of the file until
# the cyclic collector runs.

_w = _Reader.w


def _service_places(n: Node, reals: list[tuple[Node, _CheckBlocks]]) -> dict[Loc, Where]:
    """The places inside a service made from virtual_server `n`, by their location below `("services", i)`.
    Each key points at the last line that set it, as read: a line refused (an unknown keyword, a block where none
    belongs, a bad value) points nowhere."""
    where: dict[Loc, Where] = {(): _w(n)}
    for c in n.children or []:
        if c.keyword not in _VS_KEYWORDS or (c.keyword != "real_server" and c.children is not None):
            continue
        field = _VS_FIELD.get(c.keyword)
        if field:
            where[(field,)] = _w(c)
        elif c.keyword in _FLAGS and _valid(_Reader(_report.Collector()).flag, c):
            where[("sched_flags",)] = _w(c)
    for j, (rn, checks) in enumerate(reals):
        where[("reals", j)] = _w(rn)
        for loc, w in _real_places(rn, checks).items():
            where[("reals", j, *loc)] = w
    return where


def _reused_places(n: Node, made: _Made) -> dict[Loc, Where]:
    """_service_places of a virtual_server made from a template: its blocks found at the template's offsets."""
    at: dict[int, Node] = {}
    todo = [n]
    while todo:
        for c in todo.pop().children or ():
            at[c.line - n.line] = c
            todo.append(c)
    return _service_places(n, [(at[r], [(at[c], None if u is None else at[u]) for c, u in checks])
                               for r, checks in made])


def _real_places(n: Node, checks: _CheckBlocks) -> dict[Loc, Where]:
    where: dict[Loc, Where] = {("address",): _w(n), ("port",): _w(n)}
    for c in n.children or []:
        if c.keyword not in _RS_KEYWORDS or (c.keyword not in CHECKERS and c.children is not None):
            continue
        field = _RS_FIELD.get(c.keyword)
        if field:
            where[(field,)] = _w(c)
    for k, (checker, url) in enumerate(checks):
        where[("checks", k)] = _w(checker)
        for loc, w in _check_places(checker, url).items():
            where[("checks", k, *loc)] = w
    return where


def _check_places(n: Node, url: Node | None) -> dict[Loc, Where]:
    kind = n.keyword
    where: dict[Loc, Where] = {}
    for c in n.children or []:
        if c.keyword not in ("url", "host") and c.children is not None:
            continue
        field = _CHECK_FIELD.get((kind, c.keyword)) or (_TARGET_FIELD.get(c.keyword) if kind != "MISC_CHECK" else None)
        # require_reply may be empty; the others take one value
        if field and (len(c.args) == 1 or (c.keyword == "require_reply" and not c.args)):
            where[(field,)] = _w(c)
    if url is not None:
        at_url = _w(url)
        where.update({(field,): at_url for field in _URL_FIELD.values()})
        for c in url.children or []:
            # several status_code lines make one field: point at the first
            key = (_URL_FIELD.get(c.keyword, c.keyword),)
            if where.get(key) is at_url:
                where[key] = _w(c)
    return where


def read(path: str, *, fast: bool = True) -> tuple[Config, list[ConfigWarning]]:
    """Parse and validate a keepalived.conf (and its includes); `fast=False` takes the plain path that every
    shortcut must agree with."""
    errors = _report.Collector()
    sources: list[list[str]] = []  # the files' lines, freed once read
    return _build(_lexer.read(path, errors, fast, sources), path, errors, fast, sources)


def parse(text: str, path: str = "<keepalived.conf>", *, fast: bool = True) -> tuple[Config, list[ConfigWarning]]:
    """Parse keepalived.conf text (includes resolve relative to the current directory); `fast=False` as in
    `read`."""
    errors = _report.Collector()
    sources: list[list[str]] = []  # the files' lines, freed once read
    return _build(_lexer.read_text(text, path, errors, fast, sources), path, errors, fast, sources)


def places(path: str) -> Mapping[Loc, Where]:
    """Source places of the keys read from the file at `path` (the directives outside the services: sync,
    lvs_timeouts)."""
    errors = _report.Collector()
    r = _Reader(errors)
    r.read(_lexer.read(path, errors))
    return r.where


def _build(nodes: list[Node], path: str, errors: _report.Collector, fast: bool,
           sources: list[list[str]]) -> tuple[Config, list[ConfigWarning]]:
    r = _Reader(errors, fast)
    data = r.read(nodes)
    # The reader is done with the blocks' text: the file's lines (every line of it, kept by the spans) need not
    # stay through validation, the load's peak.
    for lines in sources:
        lines.clear()
    config = _report.validate(data, r.where, Where(path), errors)
    return config, r.warnings + _report.lint(config, r.where, Where(path))

