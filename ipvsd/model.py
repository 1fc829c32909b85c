"""The kernel-facing vocabulary: IPVS services, destinations, stats and operations as frozen values.

Shared by the kernel adapter, the fake kernel, the planner and the `ipvsadm -L` renderer. Keys are separate
from attributes so that diffs are dictionary operations; every type prints itself in ipvsadm notation.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from enum import IntEnum

AF_INET = socket.AF_INET  # 2
AF_INET6 = socket.AF_INET6  # 10


class Proto(IntEnum):
    """IP protocol numbers IPVS balances (0 stands for a fwmark service)."""

    NONE = 0
    TCP = 6
    UDP = 17
    SCTP = 132


class Fwd(IntEnum):
    """Forwarding method (`IP_VS_CONN_F_FWD_MASK` bits of the dest's conn_flags)."""

    MASQ = 0
    LOCAL = 1
    TUNNEL = 2
    ROUTE = 3
    BYPASS = 4


class TunType(IntEnum):
    """Encapsulation of a TUNNEL dest."""

    IPIP = 0
    GUE = 1
    GRE = 2


class TunFlags(IntEnum):
    """Checksum option of a GUE/GRE tunnel."""

    NOCSUM = 0
    CSUM = 1
    REMCSUM = 2


class SvcFlag(IntEnum):
    """Service flag bits (`IP_VS_SVC_F_*`). HASHED is kernel-managed and never part of a desired service."""

    PERSISTENT = 0x0001
    HASHED = 0x0002
    ONEPACKET = 0x0004
    SCHED1 = 0x0008  # sh-fallback / mh-fallback
    SCHED2 = 0x0010  # sh-port / mh-port
    SCHED3 = 0x0020


USER_FLAGS = SvcFlag.PERSISTENT | SvcFlag.ONEPACKET | SvcFlag.SCHED1 | SvcFlag.SCHED2 | SvcFlag.SCHED3

_PROTO_OPT: dict[int, str] = {Proto.TCP: "-t", Proto.UDP: "-u", Proto.SCTP: "--sctp-service"}
_FWD_OPT: dict[int, str] = {Fwd.MASQ: "-m", Fwd.TUNNEL: "-i", Fwd.ROUTE: "-g"}


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_V4 = re.compile(rf"({_OCTET}\.){{3}}{_OCTET}")
"""An IPv4 address in canonical text (fullmatch): no parse needed, ~15 x cheaper than `ipaddress`."""


def is_ip(text: str) -> bool:
    """True for an IP address literal (IPv4 or IPv6), False for anything else (a host name)."""
    if CANONICAL_V4.fullmatch(text):  # the common case, asked for every real
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Both cached and with the IPv4 fast path: every pass keys every real, and a start meets each address first
# (parsing them was a third of the CPU before a 10,000-real table's first op).
@functools.lru_cache(maxsize=1 << 16)
def family_of(addr: str) -> int:
    """Return AF_INET or AF_INET6 for an address literal."""
    if CANONICAL_V4.fullmatch(addr):
        return AF_INET
    return AF_INET6 if ipaddress.ip_address(addr).version == 6 else AF_INET


@functools.lru_cache(maxsize=1 << 16)
def canonical_addr(addr: str) -> str:
    """Return the canonical text of an IP address (compressed IPv6, no brackets)."""
    if CANONICAL_V4.fullmatch(addr):
        return addr
    return str(ipaddress.ip_address(addr.strip("[]")))


def _family_and_text(addr: str) -> tuple[int, str]:
    """The family and canonical text of an address literal, for a key. A canonical IPv4 address, the common
    case, is its own canonical text: one match, not two cache misses (a start keys each real once, every address
    new: 10,000 of them 26 -> 16 ms natively)."""
    if CANONICAL_V4.fullmatch(addr):
        return AF_INET, addr
    a = canonical_addr(addr)
    return family_of(a), a


def addrport(addr: str, port: int) -> str:
    """Return `a.b.c.d:port` or `[v6]:port`, the way ipvsadm writes endpoints."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def full_netmask(af: int) -> int:
    """Return the persistence netmask that means "one client address" for a family.

    IPv4 netmasks are the 32-bit mask as a host-order integer; IPv6 ones are a prefix length (as the kernel has it).
    """
    return 0xFFFFFFFF if af == AF_INET else 128


@dataclass(frozen=True, order=True)
class ServiceKey:
    """Identity of a virtual service: protocol + address + port, or fwmark + family."""

    af: int
    protocol: int = 0
    addr: str = ""
    port: int = 0
    fwmark: int = 0

    # Keys are hashed far more often than made (every table, plan and health lookup of a pass): the hash is
    # worked out once. An instance attribute, not a field: equality, ordering, replace() and asdict() ignore it.
    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.af, self.protocol, self.addr, self.port, self.fwmark)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def inet(cls, protocol: int, addr: str, port: int) -> ServiceKey:
        af, a = _family_and_text(addr)
        return cls(af=af, protocol=int(protocol), addr=a, port=port)

    @classmethod
    def mark(cls, fwmark: int, af: int = AF_INET) -> ServiceKey:
        return cls(af=af, fwmark=fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0

    def __str__(self) -> str:
        """ipvsadm's service selector, e.g. `-t 10.0.0.1:80` or `-f 7 -6`."""
        if self.is_fwmark:
            return f"-f {self.fwmark}" + (" -6" if self.af == AF_INET6 else "")
        # IntEnum members hash and compare as their numbers: looked up without making the enum (a call to it was
        # most of writing a table out), and a number that is no member falls back instead of raising
        return f"{_PROTO_OPT.get(self.protocol, '-t')} {addrport(self.addr, self.port)}"

    def label(self) -> str:
        """The service as `ipvsadm -L` names it: `TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`, `FWM 7` (`FWM 7 IPv6`)."""
        if self.is_fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.af == AF_INET6 else "")
        proto = Proto(self.protocol).name if self.protocol in Proto._value2member_map_ else str(self.protocol)
        return f"{proto} {addrport(self.addr, self.port)}"


@dataclass(frozen=True)
class ServiceAttrs:
    """What can be set on a service: scheduler, flags, persistence."""

    scheduler: str = "wlc"
    flags: int = 0  # bits of USER_FLAGS only
    timeout: int = 0  # persistence timeout in seconds; meaningful with PERSISTENT
    netmask: int = 0xFFFFFFFF  # see full_netmask(): v4 mask as int, v6 prefix length
    pe_name: str = ""

    def notation(self, af: int) -> str:
        """ipvsadm options that create these attributes, e.g. `-s rr -p 300 -M 255.255.255.0`."""
        parts = [f"-s {self.scheduler}"]
        sched_flags = [n for b, n in ((SvcFlag.SCHED1, "flag-1"), (SvcFlag.SCHED2, "flag-2"),
                                      (SvcFlag.SCHED3, "flag-3")) if self.flags & b]
        if sched_flags:
            parts.append("-b " + ",".join(sched_flags))
        if self.flags & SvcFlag.PERSISTENT:
            parts.append(f"-p {self.timeout}")
            if self.netmask != full_netmask(af):
                mask = (str(ipaddress.IPv4Address(self.netmask)) if af == AF_INET else str(self.netmask))
                parts.append(f"-M {mask}")
            if self.pe_name:
                parts.append(f"--pe {self.pe_name}")
        if self.flags & SvcFlag.ONEPACKET:
            parts.append("-o")
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class DestKey:
    """Identity of a destination (real server) within a service."""

    af: int
    addr: str
    port: int

    def __post_init__(self) -> None:  # as ServiceKey's
        object.__setattr__(self, "_hash", hash((self.af, self.addr, self.port)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def of(cls, addr: str, port: int) -> DestKey:
        af, a = _family_and_text(addr)
        return cls(af=af, addr=a, port=port)

    def __str__(self) -> str:
        return addrport(self.addr, self.port)


@dataclass(frozen=True)
class DestAttrs:
    """What can be set on a destination."""

    fwd: int = Fwd.MASQ
    weight: int = 1
    u_thresh: int = 0
    l_thresh: int = 0
    tun_type: int = TunType.IPIP
    tun_port: int = 0  # host order
    tun_flags: int = TunFlags.NOCSUM

    def notation(self) -> str:
        """ipvsadm options for these attributes, e.g. `-m -w 1`."""
        parts = [_FWD_OPT.get(self.fwd) or f"--fwd {self.fwd}", f"-w {self.weight}"]  # as in ServiceKey.__str__
        if self.u_thresh:
            parts.append(f"-x {self.u_thresh}")
        if self.l_thresh:
            parts.append(f"-y {self.l_thresh}")
        if self.fwd == Fwd.TUNNEL and self.tun_type != TunType.IPIP:
            parts.append(f"--tun-type {TunType(self.tun_type).name.lower()}")
            if self.tun_type == TunType.GUE:
                parts.append(f"--tun-port {self.tun_port}")
            if self.tun_flags:
                parts.append(f"--tun-{TunFlags(self.tun_flags).name.lower()}")
        return " ".join(parts)


@dataclass(frozen=True)
class Stats:
    """Traffic counters and rates (all 64-bit, as in the STATS64 nest)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True)
class Dest:
    """A destination as the kernel reports it: key, attributes, connection counts, stats."""

    key: DestKey
    attrs: DestAttrs
    active_conns: int = 0
    inact_conns: int = 0
    persist_conns: int = 0
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True)
class Service:
    """A virtual service as the kernel reports it, with its dests in the kernel's dump order."""

    key: ServiceKey
    attrs: ServiceAttrs
    dests: tuple[Dest, ...] = ()
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True)
class Info:
    """GET_INFO: IPVS version (0x010201 prints as 1.2.1) and connection hash table size."""

    version: int
    conn_tab_size: int


@dataclass(frozen=True)
class Timeouts:
    """GET/SET_CONFIG connection timeouts in seconds (0 on SET means leave unchanged)."""

    tcp: int = 0
    tcp_fin: int = 0
    udp: int = 0


@dataclass(frozen=True)
class SyncDaemon:
    """A connection-sync daemon (state 1 master, 2 backup)."""

    state: int
    mcast_ifn: str
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: str = ""
    mcast_port: int = 0
    mcast_ttl: int = 0


# --- operations: what a plan asks of the kernel -----------------------------------------------------


@dataclass(frozen=True)
class AddService:
    key: ServiceKey
    attrs: ServiceAttrs

    def __str__(self) -> str:
        return f"-A {self.key} {self.attrs.notation(self.key.af)}"


@dataclass(frozen=True)
class EditService:
    key: ServiceKey
    attrs: ServiceAttrs

    def __str__(self) -> str:
        return f"-E {self.key} {self.attrs.notation(self.key.af)}"


@dataclass(frozen=True)
class DelService:
    key: ServiceKey

    def __str__(self) -> str:
        return f"-D {self.key}"


@dataclass(frozen=True)
class AddDest:
    service: ServiceKey
    key: DestKey
    attrs: DestAttrs

    def __str__(self) -> str:
        return f"-a {self.service} -r {self.key} {self.attrs.notation()}"


@dataclass(frozen=True)
class EditDest:
    service: ServiceKey
    key: DestKey
    attrs: DestAttrs

    def __str__(self) -> str:
        return f"-e {self.service} -r {self.key} {self.attrs.notation()}"


@dataclass(frozen=True)
class DelDest:
    service: ServiceKey
    key: DestKey

    def __str__(self) -> str:
        return f"-d {self.service} -r {self.key}"


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest


_DAEMON_ROLES = {1: "master", 2: "backup"}


@dataclass(frozen=True)
class StartDaemon:
    daemon: SyncDaemon

    def __str__(self) -> str:
        """ipvsadm's options for this daemon; the kernel's defaults (zeros, no group) are left out."""
        d = self.daemon
        parts = [f"--start-daemon {_DAEMON_ROLES.get(d.state, d.state)} --mcast-interface {d.mcast_ifn}",
                 f"--syncid {d.syncid}"]
        if d.sync_maxlen:
            parts.append(f"--sync-maxlen {d.sync_maxlen}")
        if d.mcast_group:
            parts.append(f"--mcast-group {d.mcast_group}")
        if d.mcast_port:
            parts.append(f"--mcast-port {d.mcast_port}")
        if d.mcast_ttl:
            parts.append(f"--mcast-ttl {d.mcast_ttl}")
        return " ".join(parts)


@dataclass(frozen=True)
class StopDaemon:
    state: int

    def __str__(self) -> str:
        return f"--stop-daemon {_DAEMON_ROLES.get(self.state, self.state)}"


SyncOp = StartDaemon | StopDaemon
"""What a pass asks of the kernel's connection-sync daemons (planned by `ipvsd.core.syncd`, apart from `Op`:
a failed one never stops the table from being managed)."""


@dataclass(frozen=True)
class SetTimeouts:
    timeouts: Timeouts  # 0 leaves that timeout as it is

    def __str__(self) -> str:
        t = self.timeouts
        return f"--set {t.tcp} {t.tcp_fin} {t.udp}"
