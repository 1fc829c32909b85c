"""`ipvsd list`: ipvsadm -L, byte for byte, parsed the way ipvsadm 1.31 (popt) parses its list command.

The arguments are what follows `ipvsadm -L`. Errors carry ipvsadm's texts and exit codes: 2 for its own checks,
255 for popt's errors, 1 for a missing service or an unreadable connection table. `--json` is ours.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipvsd.kernel import Kernel
    from ipvsd.model import ServiceKey
    from ipvsd.render import ListFormat

INT_MAX = 0x7FFFFFFF
UINT_MAX = 0xFFFFFFFF
MAX_TIMEOUT = 86400 * 31
AF_INET, AF_INET6 = 2, 10
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP = 6, 17, 132

# ipvsadm's option bits, in the order of its commands_v_options table; the order decides which of two
# clashing options is named first.
OPTNAMES = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask", "real-server",
    "forwarding-method", "weight", "u-threshold", "l-threshold", "mcast-interface", "timeout", "daemon", "stats",
    "rate", "thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
    "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type", "tun-port", "tun-nocsum",
    "tun-csum", "tun-remcsum",
)
OPT = {name: i for i, name in enumerate(OPTNAMES)}
# The LIST row of commands_v_options: ' ' optional, 'x' illegal, '1' mutually exclusive.
LIST_RULES = " 11xxxxxxxxx11       xxxxxxx xxxxx"

NONE, STRING, OPTIONAL = 0, 1, 2
# popt table: long name -> (short letter, argument kind, tag). Command options keep their letters as tags.
LONG: dict[str, tuple[str, int, str]] = {
    "add-service": ("A", NONE, "A"), "edit-service": ("E", NONE, "E"), "delete-service": ("D", NONE, "D"),
    "clear": ("C", NONE, "C"), "list": ("L", NONE, "L"), "zero": ("Z", NONE, "Z"),
    "add-server": ("a", NONE, "a"), "edit-server": ("e", NONE, "e"), "delete-server": ("d", NONE, "d"),
    "set": ("", NONE, "set"), "help": ("h", NONE, "h"), "version": ("v", NONE, "v"),
    "restore": ("R", NONE, "R"), "save": ("S", NONE, "S"), "start-daemon": ("", STRING, "start-daemon"),
    "stop-daemon": ("", STRING, "stop-daemon"), "tcp-service": ("t", STRING, "t"),
    "udp-service": ("u", STRING, "u"), "sctp-service": ("", STRING, "sctp-service"),
    "fwmark-service": ("f", STRING, "f"), "scheduler": ("s", STRING, "s"), "persistent": ("p", OPTIONAL, "p"),
    "netmask": ("M", STRING, "M"), "real-server": ("r", STRING, "r"), "masquerading": ("m", NONE, "m"),
    "ipip": ("i", NONE, "i"), "gatewaying": ("g", NONE, "g"), "weight": ("w", STRING, "w"),
    "u-threshold": ("x", STRING, "x"), "l-threshold": ("y", STRING, "y"), "numeric": ("n", NONE, "n"),
    "connection": ("c", NONE, "c"), "mcast-interface": ("", STRING, "mcast-interface"),
    "syncid": ("", STRING, "syncid"), "timeout": ("", NONE, "timeout"), "daemon": ("", NONE, "daemon"),
    "stats": ("", NONE, "stats"), "rate": ("", NONE, "rate"), "thresholds": ("", NONE, "thresholds"),
    "persistent-conn": ("", NONE, "persistent-conn"), "nosort": ("", NONE, "nosort"),
    "sort": ("", NONE, "sort"), "exact": ("X", NONE, "X"), "ipv6": ("6", NONE, "6"), "ops": ("o", NONE, "o"),
    "pe": ("", STRING, "pe"), "sched-flags": ("b", STRING, "b"), "mcast-group": ("", STRING, "mcast-group"),
    "mcast-port": ("", STRING, "mcast-port"), "mcast-ttl": ("", STRING, "mcast-ttl"),
    "sync-maxlen": ("", STRING, "sync-maxlen"), "tun-info": ("", NONE, "tun-info"),
    "tun-type": ("", STRING, "tun-type"), "tun-port": ("", STRING, "tun-port"),
    "tun-nocsum": ("", NONE, "tun-nocsum"), "tun-csum": ("", NONE, "tun-csum"),
    "tun-remcsum": ("", NONE, "tun-remcsum"),
    "json": ("", NONE, "json"),  # ours
}
SHORT: dict[str, tuple[int, str]] = {short: (kind, tag) for short, kind, tag in LONG.values() if short}
SHORT["l"] = (NONE, "l")
COMMAND_TAGS = frozenset("AEDCLlZaedhvRS") | {"set", "start-daemon", "stop-daemon"}
POPT_ERRORS = {"badopt": "unknown option", "noarg": "missing argument",
               "unwanted": "option does not take an argument"}


class UsageError(Exception):
    """What ipvsadm prints to stderr before exiting with `status`."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def fail(msg: str) -> UsageError:
    return UsageError(msg + "\n", 2)


class PoptError(Exception):
    def __init__(self, kind: str, bad: str) -> None:
        super().__init__(kind)
        self.kind, self.bad = kind, bad


@dataclass
class ListRequest:
    """A parsed list command."""

    options: int = 0
    fmt_bits: set[str] = field(default_factory=set)
    af: int = 0
    protocol: int = 0
    addr: str = ""
    port: int = 0
    fwmark: int = 0
    sched_name: str = ""
    sched_flags_arg: str = ""
    json: bool = False

    def has(self, name: str) -> bool:
        return bool(self.options & (1 << OPT[name]))

    def fmt(self) -> ListFormat:
        from ipvsd.render import ListFormat

        b = self.fmt_bits
        return ListFormat(numeric="numeric" in b, stats="stats" in b, rate="rate" in b,
                          thresholds="thresholds" in b, persistent_conn="persistent-conn" in b,
                          tun_info="tun-info" in b, nosort="nosort" in b, exact="exact" in b)

    def service_key(self) -> ServiceKey:
        from ipvsd.model import ServiceKey

        if self.fwmark:
            return ServiceKey.mark(self.fwmark, self.af)
        return ServiceKey.inet(self.protocol, self.addr, self.port)


# --- popt ---------------------------------------------------------------------------------------------------


def popt(argv: list[str], leftovers: list[str]) -> Iterator[tuple[str, str | None, str]]:
    """Yield (tag, argument, the argv element popt would name in an error) like poptGetNextOpt."""
    i = 0
    rest = False
    while i < len(argv):
        arg = argv[i]
        i += 1
        if rest or not arg.startswith("-") or arg == "-":
            leftovers.append(arg)
            continue
        if arg == "--":
            rest = True
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in LONG:
                raise PoptError("badopt", arg)
            _, kind, tag = LONG[name]
            if kind == NONE:
                if eq:
                    raise PoptError("unwanted", arg)
                yield tag, None, arg
                continue
            lval: str | None = value
            if not eq:
                lval, i = _next_arg(argv, i, kind, arg)
            yield tag, lval, argv[i - 1]
            continue
        j = 1
        while j < len(arg):
            if arg[j] not in SHORT:
                raise PoptError("badopt", arg)
            kind, tag = SHORT[arg[j]]
            j += 1
            if arg[j : j + 1] == "=":  # popt skips an `=` right after a short option
                j += 1
            if kind == NONE:
                yield tag, None, arg
                continue
            if j < len(arg):
                yield tag, arg[j:], arg
                break
            sval, i = _next_arg(argv, i, kind, arg)
            yield tag, sval, argv[i - 1]
            break


def _next_arg(argv: list[str], i: int, kind: int, opt: str) -> tuple[str | None, int]:
    if i >= len(argv):
        if kind == OPTIONAL:
            return None, i
        raise PoptError("noarg", opt)
    if kind == OPTIONAL and argv[i].startswith("-"):
        return None, i
    return argv[i], i + 1


# --- C conversions ------------------------------------------------------------------------------------------

_SPACE = " \t\n\v\f\r"


def strtol(s: str) -> tuple[int | None, str, bool]:
    """C strtol(s, &end, 10): (value or None when no digits, the rest, overflowed)."""
    t = s.lstrip(_SPACE)
    sign = 1
    if t[:1] in ("+", "-") and t:
        sign = -1 if t[0] == "-" else 1
        t = t[1:]
    n = 0
    k = 0
    while k < len(t) and t[k] in "0123456789":
        n = n * 10 + ord(t[k]) - 48
        k += 1
    if k == 0:
        return None, s, False
    v = sign * n
    over = not (-(1 << 63) <= v < (1 << 63))
    return v, t[k:], over


def string_to_number(s: str, lo: int, hi: int) -> int:
    v, end, over = strtol(s)
    if v is None or end or over or not lo <= v <= hi:
        return -1
    return v


def atoi(s: str) -> int:
    v, _, _ = strtol(s)
    return 0 if v is None else ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


def str_is_digit(s: str) -> bool:
    return all(c in "0123456789" for c in s)


def _inet_aton(s: str) -> str | None:
    import socket

    try:
        return socket.inet_ntoa(socket.inet_aton(s))
    except (OSError, ValueError):
        return None


def _host_to_addr(s: str) -> str | None:
    import socket

    try:
        return socket.gethostbyname(s)
    except (OSError, UnicodeError, ValueError):
        return None


def _service_to_port(name: str, proto: int) -> int:
    import socket

    serv = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(proto)
    if serv is None:
        return -1
    try:
        return socket.getservbyname(name, serv)
    except (OSError, ValueError):
        return -1


def parse_service(buf: str, proto: int) -> tuple[int, int, str, int | None]:
    """ipvsadm's parse_service: (SERVICE_ADDR|SERVICE_PORT bits, af, address, port or None)."""
    import socket

    if str_is_digit(buf):
        return 0, 0, "", None
    portp: str | None = None
    if buf.startswith("["):
        buf = buf[1:]
        end = buf.find("]")
        if end < 0:
            return 0, 0, "", None
        after = buf[end + 1 :]
        buf = buf[:end]
        if not after.startswith(":"):
            return 0, 0, "", None
        portp = after[1:]
    try:
        addr = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, buf))
        af = AF_INET6
    except (OSError, ValueError):
        colon = buf.rfind(":")
        portp = buf[colon + 1 :] if colon >= 0 else None
        host = buf[:colon] if colon >= 0 else buf
        found = _inet_aton(host) or _host_to_addr(host)
        if found is None:
            return 0, 0, "", None
        addr, af = found, AF_INET
    if portp is None:
        return 1, af, addr, None
    port = string_to_number(portp, 0, 65535)
    if port == -1:
        port = _service_to_port(portp, proto)
    if port == -1:
        return 0, 0, "", None
    return 3, af, addr, port


def parse_sched_flags(sched: str, arg: str) -> None:
    """Validate -b like ipvsadm (the value itself is irrelevant to a listing)."""
    sched = sched or "wlc"
    for flag in [f for f in arg.split(",") if f]:
        if flag in ("flag-1", "flag-2", "flag-3"):
            continue
        if flag in ("sh-fallback", "sh-port", "mh-fallback", "mh-port"):
            if sched != flag[:2]:
                raise fail(f"incompatible scheduler flag `{flag}'")
            continue
        raise fail(f"invalid scheduler flag `{flag}'")


# --- the list command -------------------------------------------------------------------------------------


def _set_option(req: ListRequest, name: str) -> None:
    bit = 1 << OPT[name]
    if req.options & bit:
        raise fail(f"multiple '{name}' options specified")
    req.options |= bit


def _apply(req: ListRequest, tag: str, val: str | None, bad: str) -> None:
    v = val or ""
    if tag in COMMAND_TAGS:
        raise fail(f"invalid option `{bad}'")
    if tag in ("t", "u", "sctp-service"):
        _set_option(req, "service-address")
        req.protocol = {"t": IPPROTO_TCP, "u": IPPROTO_UDP}.get(tag, IPPROTO_SCTP)
        bits, af, addr, port = parse_service(v, req.protocol)
        if not bits & 1:
            raise fail("illegal virtual server address[:port] specified")
        req.af, req.addr = af, addr
        if port is not None:
            req.port = port
    elif tag == "f":
        _set_option(req, "service-address")
        req.af, req.protocol = AF_INET, IPPROTO_TCP
        n, end, over = strtol(v)
        if n is None or end or over or n <= 0 or n > UINT_MAX:
            raise fail(f"invalid fwmark value `{v}' specified")
        req.fwmark = n
    elif tag == "s":
        _set_option(req, "scheduler")
        req.sched_name = v[:15]
    elif tag == "p":
        _set_option(req, "persistent")
        if val is not None and string_to_number(val, 1, MAX_TIMEOUT) == -1:
            raise fail(f"invalid timeout value `{val}' specified")
    elif tag == "M":
        _set_option(req, "netmask")
        if req.af != AF_INET6:
            if _inet_aton(v) is None and _host_to_addr(v) is None:
                raise fail("illegal virtual server persistent mask specified")
        elif not 1 <= atoi(v) <= 128:
            raise fail("illegal ipv6 netmask specified")
    elif tag == "r":
        _set_option(req, "real-server")
        if not parse_service(v, req.protocol)[0] & 1:
            raise fail("illegal real server address[:port] specified")
    elif tag in ("i", "g", "m"):
        _set_option(req, "forwarding-method")
    elif tag in ("w", "x", "y", "syncid", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-port"):
        name, hi, what = {
            "w": ("weight", INT_MAX, "weight"), "x": ("u-threshold", INT_MAX, "u_threshold"),
            "y": ("l-threshold", INT_MAX, "l_threshold"), "syncid": ("syncid", 255, "syncid"),
            "mcast-port": ("mcast-port", 65535, "mcast-port"), "mcast-ttl": ("mcast-ttl", 255, "mcast-ttl"),
            "sync-maxlen": ("sync-maxlen", 65535 - 28, "sync-maxlen"), "tun-port": ("tun-port", 65535, "tunnel port"),
        }[tag]
        _set_option(req, name)
        lo = 0 if tag in ("w", "x", "y", "syncid") else 1
        if string_to_number(v, lo, hi) == -1:
            raise fail(f"illegal {what} specified")
    elif tag == "c":
        _set_option(req, "connection")
    elif tag == "n":
        _set_option(req, "numeric")
        req.fmt_bits.add("numeric")
    elif tag == "mcast-interface":
        _set_option(req, "mcast-interface")
    elif tag in ("timeout", "daemon", "tun-nocsum", "tun-csum", "tun-remcsum"):
        _set_option(req, tag)
    elif tag in ("stats", "rate", "thresholds", "persistent-conn", "nosort", "tun-info"):
        _set_option(req, tag)
        req.fmt_bits.add(tag)
    elif tag == "X":
        _set_option(req, "exact")
        req.fmt_bits.add("exact")
    elif tag == "6":
        if not req.fwmark:
            raise fail("-6 used before -f\n")
        req.af = AF_INET6
    elif tag == "o":
        _set_option(req, "ops")
    elif tag == "pe":
        _set_option(req, "pe")
    elif tag == "b":
        _set_option(req, "sched-flags")
        req.sched_flags_arg = v[:127]
    elif tag == "mcast-group":
        _set_option(req, "mcast-group")
        _check_mcast_group(v)
    elif tag == "tun-type":
        _set_option(req, "tun-type")
        if v not in ("ipip", "gue", "gre"):
            raise fail("illegal tunnel type specified")
    elif tag == "json":
        if req.json:
            raise fail("multiple 'json' options specified")
        req.json = True
    # "sort" is a no-op in ipvsadm too


def _check_mcast_group(v: str) -> None:
    import ipaddress
    import socket

    af = socket.AF_INET6 if ":" in v else socket.AF_INET
    try:
        ok = ipaddress.ip_address(socket.inet_ntop(af, socket.inet_pton(af, v))).is_multicast
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise fail(f"invalid {'IPv6' if af == socket.AF_INET6 else 'IPv4'} mcast-group `{v}'")


def parse(argv: list[str]) -> ListRequest:
    """Parse the arguments that follow `ipvsadm -L`, raising UsageError exactly where ipvsadm fails."""
    req = ListRequest()
    leftovers: list[str] = []
    try:
        for tag, val, bad in popt(argv, leftovers):
            _apply(req, tag, val, bad)
    except PoptError as e:
        raise UsageError(f"{e.bad}: {POPT_ERRORS[e.kind]}\n", 255) from None
    if leftovers:
        raise fail(f"unexpected argument {leftovers[0]}")
    if req.sched_flags_arg:
        parse_sched_flags(req.sched_name, req.sched_flags_arg)
    last = -1
    for j, rule in enumerate(LIST_RULES):
        if not req.options & (1 << j):
            continue
        if rule == "x":
            raise fail(f"Illegal '{OPTNAMES[j]}' option with the 'list' command")
        if rule == "1":
            if last >= 0:
                raise fail(f"The option '{OPTNAMES[j]}' conflicts with the '{OPTNAMES[last]}' option in the "
                           "'list' command")
            last = j
    if ((req.has("connection") or req.has("timeout") or req.has("daemon"))
            and (req.has("stats") or req.has("rate") or req.has("thresholds"))) or \
            ((req.has("timeout") or req.has("daemon")) and req.has("persistent-conn")):
        raise fail("options conflicts in the list command")
    return req


# --- running it -------------------------------------------------------------------------------------------


def _kernel() -> Kernel:
    from ipvsd.kernel.netlink import NetlinkKernel

    return NetlinkKernel()


def _strerror(e: BaseException) -> str:
    import os

    err = getattr(e, "errno", None)
    return os.strerror(err) if isinstance(err, int) else str(e)


async def _listing(req: ListRequest, kernel: Kernel) -> tuple[str, str, int]:
    import json

    from ipvsd import render

    fmt = req.fmt()
    if req.has("service-address"):
        svc = await kernel.service(req.service_key())
        if svc is None:
            return "", "No such service\n", 1
        if req.json:
            return json.dumps(render.table_json(None, [svc], fmt.nosort), indent=2) + "\n", "", 0
        return render.render_service(svc, fmt), "", 0
    if req.has("timeout"):
        t = await kernel.timeouts()
        return (json.dumps(render.timeouts_json(t), indent=2) + "\n" if req.json else render.render_timeouts(t)), "", 0
    if req.has("daemon"):
        ds = await kernel.daemons()
        return (json.dumps(render.daemons_json(ds), indent=2) + "\n" if req.json else render.render_daemons(ds)), "", 0
    info = await kernel.info()
    services = await kernel.services()
    if req.json:
        return json.dumps(render.table_json(info, services, fmt.nosort), indent=2) + "\n", "", 0
    return render.render_all(info, services, fmt), "", 0


def _connections(req: ListRequest, path: str) -> tuple[str, str, int]:
    import json

    from ipvsd import render

    try:
        with open(path, encoding="ascii", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return "", f"cannot open file {path}\n", 1
    if not text:
        return "", f"unexpected input from {path}\n", 1
    if req.json:
        return json.dumps(render.conns_json(text), indent=2) + "\n", "", 0
    out, status = render.render_conns(text, req.fmt())
    return out, "", status


def execute(req: ListRequest, kernel_factory: Callable[[], Kernel] | None = None,
            conn_file: str | None = None) -> tuple[str, str, int]:
    """Produce (stdout, stderr, exit status) for a parsed request; the kernel factory is injectable for tests."""
    import asyncio

    from ipvsd import render

    if req.has("connection"):
        return _connections(req, conn_file or render.CONN_PROC_FILE)
    factory = kernel_factory or _kernel

    async def go() -> tuple[str, str, int]:
        try:
            kernel: Kernel = factory()
            await kernel.info()
        except Exception as e:
            return ("", f"Can't initialize ipvs: {_strerror(e)}\nAre you sure that IP Virtual Server is built in "
                    "the kernel or as module?\n", 2)
        try:
            return await _listing(req, kernel)
        except Exception as e:
            return "", f"{_strerror(e)}\n", 1
        finally:
            await kernel.close()

    return asyncio.run(go())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options for `--help` and the manual page only: `list` parses its raw argv itself (see ipvsd.cli)."""
    parser.description = ("List the IPVS table exactly as `ipvsadm -L` does, with its options, output and exit "
                          "codes (ipvsadm 1.31). Errors are ipvsadm's own texts, for scripts that parse them.")
    add = parser.add_argument
    add("-n", "--numeric", action="store_true", help="numeric addresses and ports")
    add("-c", "--connection", action="store_true", help="the connection table (/proc/net/ip_vs_conn)")
    add("-t", "--tcp-service", metavar="VIP:PORT", help="only this TCP service")
    add("-u", "--udp-service", metavar="VIP:PORT", help="only this UDP service")
    add("--sctp-service", metavar="VIP:PORT", help="only this SCTP service")
    add("-f", "--fwmark-service", metavar="MARK", help="only this firewall-mark service")
    add("-6", "--ipv6", action="store_true", help="with -f: the IPv6 firewall-mark service")
    add("--stats", action="store_true", help="packet and byte counters")
    add("--rate", action="store_true", help="rates (connections, packets, bytes per second)")
    add("--thresholds", action="store_true", help="upper and lower connection thresholds")
    add("--persistent-conn", action="store_true", help="persistent connection counts")
    add("--tun-info", action="store_true", help="tunnel type, port and checksum options")
    add("--nosort", action="store_true", help="kernel order instead of sorted services and reals")
    add("--sort", action="store_true", help="sorted (the default; accepted for ipvsadm compatibility)")
    add("-X", "--exact", action="store_true", help="exact counters (no K/M/G units)")
    add("--timeout", action="store_true", help="the TCP, TCP FIN and UDP timeouts")
    add("--daemon", action="store_true", help="the connection-sync daemons")
    add("--json", action="store_true", help="the table as JSON (ipvsd's own; see docs/list-json.md)")


def run(args: argparse.Namespace) -> int:
    try:
        req = parse(list(args.argv))
    except UsageError as e:
        sys.stderr.write(e.message)
        return e.status
    out, err, status = execute(req)
    try:
        if out:
            sys.stdout.write(out)
            sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`| head`); keep Python from reporting it again when it flushes at exit
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if err:
        sys.stderr.write(err)
    return status
