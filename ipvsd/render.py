"""Pure renderers of an IPVS table as ipvsadm 1.31 prints it (`-L` in every mode, `-Lc`), and as stable JSON.

Every quirk of the Debian binary is reproduced on purpose (see docs/list-json.md and the reference §1): signed
fwmarks, 33/28-column truncation of IPv4 names, trailing spaces, dest stats read as 32-bit, `(null)` forwarding
names, and the sort order that glibc's merge sort produces with ipvsadm's wrapping comparators.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ipvsd.model import (
    AF_INET,
    AF_INET6,
    Dest,
    Info,
    Proto,
    Service,
    Stats,
    SvcFlag,
    SyncDaemon,
    Timeouts,
)

T = TypeVar("T")

HostName = Callable[[int, str], "str | None"]  # (af, address text) -> host name, or None to print the address
PortName = Callable[[int, int], "str | None"]  # (port, IP protocol) -> service name, or None to print the number

_U32 = 0xFFFFFFFF
_SCHED_FLAGS = SvcFlag.SCHED1 | SvcFlag.SCHED2 | SvcFlag.SCHED3
_FWD_NAMES = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}
_TUN_NAMES = {0: "ipip", 1: "gue", 2: "gre"}
_TUN_FLAGS = {0: "-c", 1: "+c", 2: "r+c"}
_PROTO_NAMES: dict[int, str] = {Proto.TCP: "TCP", Proto.UDP: "UDP", Proto.SCTP: "SCTP"}
_PROTO_SERV: dict[int, str] = {Proto.TCP: "tcp", Proto.UDP: "udp", Proto.SCTP: "sctp"}


# --- options -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFormat:
    """ipvsadm's FMT_* bits that shape a listing. The display mode is the first set of
    stats > rate > thresholds > persistent_conn > tun_info, else plain."""

    numeric: bool = False
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    tun_info: bool = False
    nosort: bool = False
    exact: bool = False


@dataclass(frozen=True)
class Names:
    """How addresses and ports become names when `-n` is not given (injected so tests are deterministic)."""

    host: HostName
    port: PortName


def _system_host(af: int, addr: str) -> str | None:
    try:
        return socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return None


def _system_port(port: int, proto: int) -> str | None:
    serv = _PROTO_SERV.get(proto)
    if serv is None:
        return None
    try:
        return socket.getservbyport(port, serv)
    except (OSError, OverflowError):
        return None


def system_names() -> Names:
    """NSS lookups as ipvsadm does them (gethostbyaddr, getservbyport), memoised for large tables."""
    hosts: dict[tuple[int, str], str | None] = {}
    ports: dict[tuple[int, int], str | None] = {}

    def host(af: int, addr: str) -> str | None:
        if (af, addr) not in hosts:
            hosts[af, addr] = _system_host(af, addr)
        return hosts[af, addr]

    def port(p: int, proto: int) -> str | None:
        if (p, proto) not in ports:
            ports[p, proto] = _system_port(p, proto)
        return ports[p, proto]

    return Names(host, port)


NUMERIC_ONLY = Names(lambda af, addr: None, lambda port, proto: None)


# --- numbers and addresses ---------------------------------------------------------------------------------


def s32(x: int) -> int:
    """C's conversion of an unsigned difference to `int`: wrap to signed 32 bits."""
    x &= _U32
    return x - (1 << 32) if x & 0x80000000 else x


def print_largenum(i: int, exact: bool) -> str:
    """ipvsadm's print_largenum: 9-wide numbers, scaled to K/M/G/T (truncating) unless exact."""
    if exact:
        digits = str(i)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    if i < 100_000_000:
        return f"{i:9d}"
    if i < 1_000_000_000:
        return f"{i // 1000:8d}K"
    if i < 100_000_000_000:
        return f"{i // 1_000_000:8d}M"
    if i < 100_000_000_000_000:
        return f"{i // 1_000_000_000:8d}G"
    return f"{i // 1_000_000_000_000:8d}T"


def ntop(af: int, addr: str) -> str:
    """glibc's inet_ntop text of an address (IPv4-mapped IPv6 stays `::ffff:1.2.3.4`)."""
    return socket.inet_ntop(af, socket.inet_pton(af, addr))


def addr_words(af: int, addr: str) -> tuple[int, int, int, int]:
    """The address as four host-order 32-bit words, as ipvsadm's union sees it (IPv4 in the first word)."""
    n = int.from_bytes((socket.inet_pton(af, addr) if addr else b"").ljust(16, b"\0"), "big")
    return (n >> 96, (n >> 64) & _U32, (n >> 32) & _U32, n & _U32)


def addrport_name(af: int, addr: str, port: int, proto: int, names: Names | None) -> str:
    """addrport_to_anyname: `a.b.c.d:port` / `[v6]:port`, with names unless numeric; at most 59 chars."""
    host = None if names is None else names.host(af, addr)
    pname = None if names is None else names.port(port, proto)
    text = host if host is not None else ntop(af, addr)
    ptext = pname if pname is not None else str(port)
    out = f"{text}:{ptext}" if af == AF_INET else f"[{text}]:{ptext}"
    return out[:59]


# --- sorting -----------------------------------------------------------------------------------------------


def msort(items: Sequence[T], cmp: Callable[[T, T], int]) -> list[T]:
    """glibc 2.36 qsort (msort): top-down merge sort splitting at n//2, taking the left element on ties."""
    n = len(items)
    if n <= 1:
        return list(items)
    left = msort(items[: n // 2], cmp)
    right = msort(items[n // 2 :], cmp)
    out: list[T] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


# A service as ipvs_cmp_services sees it: (fwmark, af, protocol, w0, w1, w2, w3, port).
SvcSortKey = tuple[int, int, int, int, int, int, int, int]
# A dest as ipvs_cmp_dests sees it: (af, w0, w1, w2, w3, port).
DestSortKey = tuple[int, int, int, int, int, int]


def service_sort_key(svc: Service) -> SvcSortKey:
    k = svc.key
    if k.fwmark:  # ipvsadm leaves protocol and address zero for fwmark services
        return (k.fwmark & _U32, k.af, 0, 0, 0, 0, 0, 0)
    return (0, k.af, k.protocol, *addr_words(k.af, k.addr), k.port)


def dest_sort_key(d: Dest) -> DestSortKey:
    return (d.key.af, *addr_words(d.key.af, d.key.addr), d.key.port)


def cmp_services(a: SvcSortKey, b: SvcSortKey) -> int:
    """ipvs_cmp_services: every address/fwmark subtraction wraps to int; af/protocol/port do not."""
    r = s32(a[0] - b[0])
    if r:
        return r
    r = a[1] - b[1]
    if r:
        return r
    r = a[2] - b[2]
    if r:
        return r
    if a[1] == AF_INET6:
        for i in range(3, 7):
            r = s32(a[i] - b[i])
            if r:
                return r
    else:
        r = s32(a[3] - b[3])
        if r:
            return r
    return a[7] - b[7]


def cmp_dests(a: DestSortKey, b: DestSortKey) -> int:
    """ipvs_cmp_dests: the address rule of the *first* dest's family, then the port."""
    if a[0] == AF_INET6:
        for i in range(1, 5):
            r = s32(a[i] - b[i])
            if r:
                return r
    else:
        r = s32(a[1] - b[1])
        if r:
            return r
    return a[5] - b[5]


def _spread_ok(keys: Sequence[tuple[int, ...]], columns: Iterable[int]) -> bool:
    return all(max(k[c] for k in keys) - min(k[c] for k in keys) < 0x80000000 for c in columns)


def _ipvs_sorted(items: Sequence[T], keys: Sequence[Any], cmp: Callable[[Any, Any], int],
                 wrapping: Iterable[int], one_af: bool) -> list[T]:
    # When no wrapping column spans 2^31 or more, the comparator is a consistent total order and any stable
    # sort gives msort's result; Python's sort is then ~50x faster than the emulation on large tables.
    pairs = list(zip(keys, range(len(items)), strict=True))
    if one_af and _spread_ok(keys, wrapping):
        pairs.sort(key=lambda p: p[0])
    else:
        pairs = msort(pairs, lambda x, y: cmp(x[0], y[0]))
    return [items[i] for _, i in pairs]


def sort_services(services: Sequence[Service]) -> list[Service]:
    """Services in ipvsadm's order (exact, including its wrap-around and merge-sort artefacts)."""
    if len(services) <= 1:
        return list(services)
    keys = [service_sort_key(s) for s in services]
    return _ipvs_sorted(services, keys, cmp_services, (0, 3, 4, 5, 6), True)


def sort_dests(dests: Sequence[Dest]) -> list[Dest]:
    """Dests in ipvsadm's order; mixed families always take the emulated merge sort."""
    if len(dests) <= 1:
        return list(dests)
    keys = [dest_sort_key(d) for d in dests]
    one_af = len({k[0] for k in keys}) == 1
    return _ipvs_sorted(dests, keys, cmp_dests, (1, 2, 3, 4), one_af)


# --- the table ---------------------------------------------------------------------------------------------


def title(fmt: ListFormat) -> str:
    """print_title."""
    if fmt.stats or fmt.rate:
        cols = ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes") if fmt.stats else \
            ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
        return f"{'Prot LocalAddress:Port':<33} " + " ".join(f"{c:>8}" for c in cols) + \
            "\n  -> RemoteAddress:Port\n"
    if fmt.thresholds:
        return (f"{'Prot LocalAddress:Port':<33} {'Uthreshold':<10} {'Lthreshold':<10} {'ActiveConn':<10} "
                f"{'InActConn':<10}\n  -> RemoteAddress:Port\n")
    if fmt.persistent_conn:
        return (f"{'Prot LocalAddress:Port':<33} {'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} "
                f"{'InActConn':<10}\n  -> RemoteAddress:Port\n")
    if fmt.tun_info:
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
    return ("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def svc_proto(svc: Service) -> int:
    """The protocol ipvsadm holds for a service: 0 for fwmark services (so their ports stay numeric)."""
    return 0 if svc.key.fwmark else svc.key.protocol


def svc_name(svc: Service, names: Names | None) -> str:
    """`FWM  %d[ IPv6]` (signed!) or `%-4s %s` of protocol and address, cut to 33 chars unless IPv6."""
    k = svc.key
    if k.fwmark:
        return f"FWM  {s32(k.fwmark)}" + (" IPv6" if k.af == AF_INET6 else "")
    proto = _PROTO_NAMES.get(k.protocol, "?")
    name = f"{proto:<4} {addrport_name(k.af, k.addr, k.port, k.protocol, names)}"
    return name if k.af == AF_INET6 else name[:33]


def sched_flags_text(sched: str, flags: int) -> str:
    """print_sched_flags: sh/mh get their own names (and ignore SCHED3), others flag-1..3."""
    if sched in ("sh", "mh"):
        parts = [f"{sched}-fallback" if flags & SvcFlag.SCHED1 else "",
                 f"{sched}-port" if flags & SvcFlag.SCHED2 else ""]
    else:
        parts = [f"flag-{n}" if flags & bit else "" for n, bit in
                 ((1, SvcFlag.SCHED1), (2, SvcFlag.SCHED2), (3, SvcFlag.SCHED3))]
    return ",".join(p for p in parts if p)


def _netmask_text(svc: Service) -> str:
    a = svc.attrs
    if svc.key.af == AF_INET and a.netmask & _U32 != _U32:
        return " mask " + socket.inet_ntoa((a.netmask & _U32).to_bytes(4, "big"))
    if svc.key.af == AF_INET6 and a.netmask != 128:
        return f" mask {s32(a.netmask)}"
    return ""


def service_line(svc: Service, fmt: ListFormat, names: Names | None) -> str:
    name = svc_name(svc, names)
    if fmt.stats or fmt.rate:
        s = svc.stats
        vals = (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes) if fmt.stats else \
            (s.cps, s.inpps, s.outpps, s.inbps, s.outbps)
        return f"{name:<33}" + "".join(print_largenum(v, fmt.exact) for v in vals) + "\n"
    a = svc.attrs
    out = f"{name} {a.scheduler}"
    if a.flags & _SCHED_FLAGS:
        out += f" ({sched_flags_text(a.scheduler, a.flags)})"
    if a.flags & SvcFlag.PERSISTENT:
        out += f" persistent {a.timeout & _U32}" + _netmask_text(svc)
        if a.pe_name:
            out += f" pe {a.pe_name}"
    if a.flags & SvcFlag.ONEPACKET:
        out += " ops"
    return out + "\n"


def dest_stats32(s: Stats) -> Stats:
    """What ipvsadm 1.31 shows for a dest: STATS64 parsed as 32-bit, so all but the byte counters wrap."""
    return Stats(conns=s.conns & _U32, inpkts=s.inpkts & _U32, outpkts=s.outpkts & _U32, inbytes=s.inbytes,
                 outbytes=s.outbytes, cps=s.cps & _U32, inpps=s.inpps & _U32, outpps=s.outpps & _U32,
                 inbps=s.inbps & _U32, outbps=s.outbps & _U32)


def tun_info(d: Dest) -> str:
    """fwd_tun_info: `ipip`, `gue:PORT:FLAGS`, `gre:FLAGS`, or `n/a` for non-tunnel dests."""
    a = d.attrs
    if a.fwd & 7 != 2 or a.tun_type not in _TUN_NAMES:
        return "n/a"
    if a.tun_type == 0:
        return "ipip"
    flags = _TUN_FLAGS.get(a.tun_flags, "")
    text = f"gue:{a.tun_port & 0xFFFF}:{flags}" if a.tun_type == 1 else f"gre:{flags}"
    return text[:15]


def dest_line(d: Dest, proto: int, fmt: ListFormat, names: Names | None) -> str:
    k, a = d.key, d.attrs
    dname = addrport_name(k.af, k.addr, k.port, proto, names)
    if k.af != AF_INET6:
        dname = dname[:28]
    if fmt.stats:
        s = dest_stats32(d.stats)
        return f"  -> {dname:<28}" + "".join(print_largenum(v, fmt.exact) for v in
                                              (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)) + "\n"
    if fmt.rate:
        s = dest_stats32(d.stats)
        return (f"  -> {dname:<28} {s.cps:8d} {s.inpps:8d} {s.outpps:8d}" + print_largenum(s.inbps, fmt.exact)
                + print_largenum(s.outbps, fmt.exact) + "\n")
    active, inact = d.active_conns & _U32, d.inact_conns & _U32
    if fmt.thresholds:
        return f"  -> {dname:<28} {a.u_thresh & _U32:<10} {a.l_thresh & _U32:<10} {active:<10} {inact:<10}\n"
    if fmt.persistent_conn:
        return f"  -> {dname:<28} {a.weight & _U32:<9} {d.persist_conns & _U32:<11} {active:<10} {inact:<10}\n"
    fwd = _FWD_NAMES.get(a.fwd & 7, "(null)")
    if fmt.tun_info:
        return f"  -> {dname:<28} {fwd:<7} {tun_info(d):<13} {s32(a.weight):<6} {active:<10} {inact:<10}\n"
    return f"  -> {dname:<28} {fwd:<7} {s32(a.weight):<6} {active:<10} {inact:<10}\n"


def service_entry(svc: Service, fmt: ListFormat, names: Names | None) -> str:
    """print_service_entry: the service line and its dests (sorted unless --nosort)."""
    dests = svc.dests if fmt.nosort else sort_dests(svc.dests)
    proto = svc_proto(svc)
    return service_line(svc, fmt, names) + "".join(dest_line(d, proto, fmt, names) for d in dests)


def _names(fmt: ListFormat, names: Names | None) -> Names | None:
    return None if fmt.numeric else (names if names is not None else system_names())


def version_text(v: int) -> str:
    """NVERSION: 0x010201 -> `1.2.1`."""
    return f"{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}.{v & 0xFF}"


def render_all(info: Info, services: Sequence[Service], fmt: ListFormat, names: Names | None = None) -> str:
    """`ipvsadm -L [opts]`: version line, title, every service."""
    nm = _names(fmt, names)
    head = f"IP Virtual Server version {version_text(info.version)} (size={s32(info.conn_tab_size)})\n"
    ordered = services if fmt.nosort else sort_services(services)
    return head + title(fmt) + "".join(service_entry(s, fmt, nm) for s in ordered)


def render_service(svc: Service, fmt: ListFormat, names: Names | None = None) -> str:
    """`ipvsadm -L -t|-u|--sctp-service|-f ...`: title and one service, no version line."""
    return title(fmt) + service_entry(svc, fmt, _names(fmt, names))


def render_timeouts(t: Timeouts) -> str:
    """`ipvsadm -L --timeout`."""
    return f"Timeout (tcp tcpfin udp): {s32(t.tcp)} {s32(t.tcp_fin)} {s32(t.udp)}\n"


def render_daemons(daemons: Sequence[SyncDaemon]) -> str:
    """`ipvsadm -L --daemon`: master then backup; nothing at all when no daemon runs."""
    out = []
    for kind, bit in (("master", 1), ("backup", 2)):
        for d in daemons:
            if d.state != bit:
                continue
            line = f"{kind} sync daemon (mcast={d.mcast_ifn}, syncid={s32(d.syncid)}"
            if d.sync_maxlen:
                line += f", maxlen={d.sync_maxlen}"
            if d.mcast_group:
                af = AF_INET6 if ":" in d.mcast_group else AF_INET
                line += f", group={ntop(af, d.mcast_group)}"
            if d.mcast_port:
                line += f", port={d.mcast_port}"
            if d.mcast_ttl:
                line += f", ttl={d.mcast_ttl}"
            out.append(line + ")\n")
            break
    return "".join(out)


# --- connections (/proc/net/ip_vs_conn) -------------------------------------------------------------------


CONN_PROC_FILE = "/proc/net/ip_vs_conn"
_CONN_PROTOS: dict[str, int] = {"TCP": Proto.TCP, "UDP": Proto.UDP, "SCTP": Proto.SCTP}


@dataclass(frozen=True)
class ConnEntry:
    """One /proc/net/ip_vs_conn line as ipvsadm's sscanf reads it."""

    protocol: str
    af: int
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daf: int
    daddr: str
    dport: int
    state: str
    expires: int
    pe_name: str | None = None
    pe_data: str | None = None


def _hex_u16(tok: str) -> int | None:
    # sscanf %hX: optional sign and 0x prefix, as many hex digits as present, truncated to 16 bits.
    t = tok
    neg = t[:1] == "-"
    if t[:1] in "+-" and t:
        t = t[1:]
    if t[:2].lower() == "0x" and len(t) > 2 and t[2] in "0123456789abcdefABCDEF":
        t = t[2:]
    n = 0
    digits = 0
    for ch in t:
        v = int(ch, 16) if ch in "0123456789abcdefABCDEF" else -1
        if v < 0:
            break
        n = n * 16 + v
        digits += 1
    if not digits:
        return None
    return (-n if neg else n) & 0xFFFF


def _strtoul16(tok: str) -> int:
    n = 0
    t = tok.lstrip()
    if t[:2].lower() == "0x":
        t = t[2:]
    for ch in t:
        if ch not in "0123456789abcdefABCDEF":
            break
        n = n * 16 + int(ch, 16)
    return min(n, 0xFFFFFFFFFFFFFFFF) & _U32


def _conn_addr(tok: str) -> tuple[int, str] | None:
    for af in (AF_INET6, AF_INET):
        try:
            return af, socket.inet_ntop(af, socket.inet_pton(af, tok))
        except OSError:
            pass
    return None


def parse_conn(line: str) -> ConnEntry | None:
    """One line as `sscanf("%s %s %hX %s %hX %s %hX %s %d %s %s")`; None when it has no fields at all."""
    toks = line.split()
    if not toks:
        return None

    def get(i: int) -> str:
        return toks[i] if i < len(toks) else ""

    cport = _hex_u16(get(2)) or 0
    vport = _hex_u16(get(4)) or 0
    dport = _hex_u16(get(6)) or 0
    c = _conn_addr(get(1))
    if c is not None and c[0] == AF_INET6:
        af, caddr = c
        v = _conn_addr(get(3))
        vaddr = v[1] if v is not None and v[0] == AF_INET6 else "::"
    elif c is not None:
        af, caddr = c
        v = _conn_addr(get(3))
        vaddr = v[1] if v is not None and v[0] == AF_INET else "0.0.0.0"
    else:
        af = AF_INET
        caddr = socket.inet_ntoa(_strtoul16(get(1)).to_bytes(4, "big"))
        vaddr = socket.inet_ntoa(_strtoul16(get(3)).to_bytes(4, "big"))
    d = _conn_addr(get(5))
    if d is not None:
        daf, daddr = d
    else:
        daf, daddr = AF_INET, socket.inet_ntoa(_strtoul16(get(5)).to_bytes(4, "big"))
    try:
        expires = int(get(8))
    except ValueError:
        expires = 0
    pe = (toks[9], toks[10]) if len(toks) >= 11 else (None, None)
    return ConnEntry(get(0), af, caddr, cport, vaddr, vport, daf, daddr, dport, get(7), expires & _U32, *pe)


def fgets_lines(text: str, size: int = 256) -> list[str]:
    """The chunks `fgets(buf, 256, f)` returns: lines, with over-long ones split every 255 chars."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        while len(line) > size - 1:
            out.append(line[: size - 1])
            line = line[size - 1 :]
        if line:
            out.append(line)
    return out


def conn_line(c: ConnEntry, fmt: ListFormat, names: Names | None) -> str:
    proto = _CONN_PROTOS.get(c.protocol, 0)
    cname = addrport_name(c.af, c.caddr, c.cport, proto, names)
    vname = addrport_name(c.af, c.vaddr, c.vport, proto, names)
    dname = addrport_name(c.daf, c.daddr, c.dport, proto, names)
    expire = f"{c.expires // 60:02d}:{c.expires % 60:02d}"
    if fmt.persistent_conn and c.pe_name is not None:
        return (f"{c.protocol:<3} {expire:<6} {c.state:<11} {cname:<18} {vname:<18} {dname:<16} "
                f"{c.pe_name:<18} {c.pe_data}\n")
    return f"{c.protocol:<3} {expire:<6} {c.state:<11} {cname:<18} {vname:<18} {dname}\n"


def conn_title(fmt: ListFormat) -> str:
    if fmt.persistent_conn:
        return (f"IPVS connection entries\npro expire {'state':<11} {'source':<18} {'virtual':<18} "
                f"{'destination':<18} {'pe name':<16} pe_data\n")
    return f"IPVS connection entries\npro expire {'state':<11} {'source':<18} {'virtual':<18} destination\n"


def render_conns(proc_text: str, fmt: ListFormat, names: Names | None = None) -> tuple[str, int]:
    """`ipvsadm -Lc`: reformat /proc/net/ip_vs_conn (header skipped). Returns (stdout, exit status): like
    ipvsadm, a chunk with no field at all stops the listing with status 1."""
    chunks = fgets_lines(proc_text)
    nm = _names(fmt, names)
    out = [conn_title(fmt)]
    for chunk in chunks[1:]:
        c = parse_conn(chunk)
        if c is None:
            return "".join(out), 1
        out.append(conn_line(c, fmt, nm))
    return "".join(out), 0


# --- JSON (schema: docs/list-json.md) ----------------------------------------------------------------------

JSON_SCHEMA_VERSION = 1
_FWD_JSON = {0: "masq", 1: "local", 2: "tunnel", 3: "route", 4: "bypass"}
_PROTO_JSON: dict[int, str] = {Proto.TCP: "tcp", Proto.UDP: "udp", Proto.SCTP: "sctp"}


def _stats_json(s: Stats) -> dict[str, int]:
    return {"conns": s.conns, "inpkts": s.inpkts, "outpkts": s.outpkts, "inbytes": s.inbytes,
            "outbytes": s.outbytes, "cps": s.cps, "inpps": s.inpps, "outpps": s.outpps, "inbps": s.inbps,
            "outbps": s.outbps}


def _af_json(af: int) -> str:
    return "inet6" if af == AF_INET6 else "inet"


def dest_json(d: Dest) -> dict[str, Any]:
    a = d.attrs
    tunnel: dict[str, Any] | None = None
    if a.fwd & 7 == 2:
        tunnel = {"type": _TUN_NAMES.get(a.tun_type, str(a.tun_type)),
                  "port": a.tun_port if a.tun_type == 1 else None,
                  "csum": {0: "nocsum", 1: "csum", 2: "remcsum"}.get(a.tun_flags, str(a.tun_flags))}
    return {"family": _af_json(d.key.af), "address": ntop(d.key.af, d.key.addr), "port": d.key.port,
            "forward": _FWD_JSON.get(a.fwd & 7, str(a.fwd & 7)), "weight": a.weight,
            "u_threshold": a.u_thresh, "l_threshold": a.l_thresh, "active_conns": d.active_conns,
            "inact_conns": d.inact_conns, "persist_conns": d.persist_conns, "tunnel": tunnel,
            "stats": _stats_json(d.stats)}


def service_json(svc: Service, nosort: bool = False) -> dict[str, Any]:
    k, a = svc.key, svc.attrs
    persistence: dict[str, Any] | None = None
    if a.flags & SvcFlag.PERSISTENT:
        mask: str | int = (socket.inet_ntoa((a.netmask & _U32).to_bytes(4, "big")) if k.af == AF_INET
                           else a.netmask)
        persistence = {"timeout": a.timeout, "netmask": mask, "pe": a.pe_name or None}
    dests = svc.dests if nosort else sort_dests(svc.dests)
    return {
        "family": _af_json(k.af),
        "protocol": None if k.fwmark else _PROTO_JSON.get(k.protocol, str(k.protocol)),
        "address": None if k.fwmark else ntop(k.af, k.addr),
        "port": None if k.fwmark else k.port,
        "fwmark": k.fwmark or None,
        "scheduler": a.scheduler,
        "sched_flags": [f for f in sched_flags_text(a.scheduler, a.flags).split(",") if f],
        "persistence": persistence,
        "one_packet": bool(a.flags & SvcFlag.ONEPACKET),
        "stats": _stats_json(svc.stats),
        "dests": [dest_json(d) for d in dests],
    }


def table_json(info: Info | None, services: Sequence[Service], nosort: bool = False) -> dict[str, Any]:
    """The table (or one service when info is None) as a JSON-ready dict, in ipvsadm's order."""
    ordered = services if nosort else sort_services(services)
    doc: dict[str, Any] = {"schema": JSON_SCHEMA_VERSION}
    if info is not None:
        doc["version"] = version_text(info.version)
        doc["conn_tab_size"] = info.conn_tab_size
    doc["services"] = [service_json(s, nosort) for s in ordered]
    return doc


def conns_json(proc_text: str) -> dict[str, Any]:
    """/proc/net/ip_vs_conn as JSON (numeric addresses, expiry in seconds)."""
    conns = []
    for chunk in fgets_lines(proc_text)[1:]:
        c = parse_conn(chunk)
        if c is None:
            break
        conns.append({"protocol": c.protocol, "family": _af_json(c.af),
                      "client": {"address": c.caddr, "port": c.cport},
                      "virtual": {"address": c.vaddr, "port": c.vport},
                      "destination": {"family": _af_json(c.daf), "address": c.daddr, "port": c.dport},
                      "state": c.state, "expires": c.expires, "pe_name": c.pe_name, "pe_data": c.pe_data})
    return {"schema": JSON_SCHEMA_VERSION, "connections": conns}


def timeouts_json(t: Timeouts) -> dict[str, Any]:
    return {"schema": JSON_SCHEMA_VERSION, "timeouts": {"tcp": t.tcp, "tcp_fin": t.tcp_fin, "udp": t.udp}}


def daemons_json(daemons: Sequence[SyncDaemon]) -> dict[str, Any]:
    return {"schema": JSON_SCHEMA_VERSION, "daemons": [
        {"state": {1: "master", 2: "backup"}.get(d.state, str(d.state)), "mcast_ifn": d.mcast_ifn,
         "syncid": d.syncid, "sync_maxlen": d.sync_maxlen or None, "mcast_group": d.mcast_group or None,
         "mcast_port": d.mcast_port or None, "mcast_ttl": d.mcast_ttl or None}
        for d in sorted(daemons, key=lambda d: d.state)]}

