"""IPVS generic-netlink messages: our own pyroute2 message classes and the model <-> attribute codecs.

pyroute2 0.9.7's `ipvsmsg` types NETMASK as an IPv4 address, TUN_PORT as host order, the DAEMON nest and the
TIMEOUT_* attributes as "hex" (which encodes ASCII text), and has no class for the GET_INFO reply. The classes
here are declared from the uapi header (`linux/ip_vs.h`) on pyroute2's base classes rather than subclassing
`ipvsmsg`: pyroute2 caches a compiled attribute table on the class and a subclass inherits the parent's cache
once the parent has been used, silently decoding with the parent's (wrong) types.

Requests are built from the model with every attribute the kernel reads given explicitly; replies are read
attribute by attribute from the raw message (never through pyroute2's `from_message()`).
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink import genlmsg, nla

from ipvsd.model import (
    AF_INET,
    USER_FLAGS,
    Dest,
    DestAttrs,
    DestKey,
    Info,
    Service,
    ServiceAttrs,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
)

GENL_NAME = "IPVS"
GENL_VERSION = 1

CMD_NEW_SERVICE = 1
CMD_SET_SERVICE = 2
CMD_DEL_SERVICE = 3
CMD_GET_SERVICE = 4
CMD_NEW_DEST = 5
CMD_SET_DEST = 6
CMD_DEL_DEST = 7
CMD_GET_DEST = 8
CMD_NEW_DAEMON = 9
CMD_DEL_DAEMON = 10
CMD_GET_DAEMON = 11
CMD_SET_CONFIG = 12
CMD_GET_CONFIG = 13
CMD_SET_INFO = 14
CMD_GET_INFO = 15
CMD_ZERO = 16
CMD_FLUSH = 17

_ALL_FLAGS_MASK = 0xFFFFFFFF  # as ipvsadm: the flags we send replace every bit the kernel lets us set

_STATS_MAP = (
    ("IPVS_STATS_ATTR_UNSPEC", "none"),
    ("IPVS_STATS_ATTR_CONNS", "uint32"),
    ("IPVS_STATS_ATTR_INPKTS", "uint32"),
    ("IPVS_STATS_ATTR_OUTPKTS", "uint32"),
    ("IPVS_STATS_ATTR_INBYTES", "uint64"),
    ("IPVS_STATS_ATTR_OUTBYTES", "uint64"),
    ("IPVS_STATS_ATTR_CPS", "uint32"),
    ("IPVS_STATS_ATTR_INPPS", "uint32"),
    ("IPVS_STATS_ATTR_OUTPPS", "uint32"),
    ("IPVS_STATS_ATTR_INBPS", "uint32"),
    ("IPVS_STATS_ATTR_OUTBPS", "uint32"),
    ("IPVS_STATS_ATTR_PAD", "none"),
)
_STATS_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps", "outpps", "inbps", "outbps")


class _StatsNests:
    """The STATS (mixed u32/u64) and STATS64 (all u64) nests shared by services and dests."""

    class stats(nla):  # type: ignore[misc]  # lower-case: pyroute2 resolves nla_map types by attribute name
        nla_map = _STATS_MAP

    class stats64(nla):  # type: ignore[misc]
        nla_map = tuple((n, "none" if t == "none" else "uint64") for n, t in _STATS_MAP)


class IpvsMessage(genlmsg):  # type: ignore[misc]
    """Every IPVS request and reply except the GET_INFO reply (see IpvsInfoMessage)."""

    prefix = "IPVS_CMD_ATTR_"
    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "service"),
        ("IPVS_CMD_ATTR_DEST", "dest"),
        ("IPVS_CMD_ATTR_DAEMON", "daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    class service(nla, _StatsNests):  # type: ignore[misc]
        prefix = "IPVS_SVC_ATTR_"
        nla_map = (
            ("IPVS_SVC_ATTR_UNSPEC", "none"),
            ("IPVS_SVC_ATTR_AF", "uint16"),
            ("IPVS_SVC_ATTR_PROTOCOL", "uint16"),
            ("IPVS_SVC_ATTR_ADDR", "target(nla,IPVS_SVC_ATTR_AF)"),
            ("IPVS_SVC_ATTR_PORT", "be16"),
            ("IPVS_SVC_ATTR_FWMARK", "uint32"),
            ("IPVS_SVC_ATTR_SCHED_NAME", "asciiz"),
            ("IPVS_SVC_ATTR_FLAGS", "flags"),
            ("IPVS_SVC_ATTR_TIMEOUT", "uint32"),
            ("IPVS_SVC_ATTR_NETMASK", "netmask"),
            ("IPVS_SVC_ATTR_STATS", "stats"),
            ("IPVS_SVC_ATTR_PE_NAME", "asciiz"),
            ("IPVS_SVC_ATTR_STATS64", "stats64"),
        )

        class flags(nla):  # type: ignore[misc]
            fields = (("flags", "I"), ("mask", "I"))

        @staticmethod
        def netmask(self: Any, *argv: Any, **kwarg: Any) -> Any:
            """NETMASK is read with nla_get_be32: an IPv4 mask in network order, an IPv6 prefix length as is.

            Decoding as be32 for IPv4 yields the mask as a host-order integer (0xFFFFFF00), which is the model's
            form; the kernel writes AF before NETMASK, and requests are built the same way.
            """
            return self.be32 if self.get_attr("IPVS_SVC_ATTR_AF") == AF_INET else self.uint32

    class dest(nla, _StatsNests):  # type: ignore[misc]
        prefix = "IPVS_DEST_ATTR_"
        nla_map = (
            ("IPVS_DEST_ATTR_UNSPEC", "none"),
            ("IPVS_DEST_ATTR_ADDR", "target(nla,IPVS_DEST_ATTR_ADDR_FAMILY)"),
            ("IPVS_DEST_ATTR_PORT", "be16"),
            ("IPVS_DEST_ATTR_FWD_METHOD", "uint32"),
            ("IPVS_DEST_ATTR_WEIGHT", "uint32"),
            ("IPVS_DEST_ATTR_U_THRESH", "uint32"),
            ("IPVS_DEST_ATTR_L_THRESH", "uint32"),
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", "uint32"),
            ("IPVS_DEST_ATTR_INACT_CONNS", "uint32"),
            ("IPVS_DEST_ATTR_PERSIST_CONNS", "uint32"),
            ("IPVS_DEST_ATTR_STATS", "stats"),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", "uint16"),
            ("IPVS_DEST_ATTR_STATS64", "stats64"),
            ("IPVS_DEST_ATTR_TUN_TYPE", "uint8"),
            ("IPVS_DEST_ATTR_TUN_PORT", "be16"),
            ("IPVS_DEST_ATTR_TUN_FLAGS", "uint16"),
        )

    class daemon(nla):  # type: ignore[misc]
        prefix = "IPVS_DAEMON_ATTR_"
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "ip4addr"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ip6addr"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


class IpvsInfoMessage(genlmsg):  # type: ignore[misc]
    """The GET_INFO reply: top-level attributes whose numbers collide with SERVICE (1) and DEST (2)."""

    prefix = "IPVS_INFO_ATTR_"
    nla_map = (
        ("IPVS_INFO_ATTR_UNSPEC", "none"),
        ("IPVS_INFO_ATTR_VERSION", "uint32"),
        ("IPVS_INFO_ATTR_CONN_TAB_SIZE", "uint32"),
    )


Attrs = list[tuple[str, Any]]


# --- requests ------------------------------------------------------------------------------------


def request(cmd: int, attrs: Attrs | None = None) -> IpvsMessage:
    """A request message for one IPVS command."""
    msg = IpvsMessage()
    msg["cmd"] = cmd
    msg["version"] = GENL_VERSION
    msg["attrs"] = list(attrs or [])
    return msg


def service_key_nest(key: ServiceKey) -> dict[str, Attrs]:
    """The SERVICE nest that names a service: AF plus FWMARK, or AF plus PROTOCOL, ADDR and PORT.

    FWMARK is left out for an address service because the kernel takes its mere presence as "fwmark service".
    """
    attrs: Attrs = [("IPVS_SVC_ATTR_AF", key.af)]
    if key.is_fwmark:
        attrs.append(("IPVS_SVC_ATTR_FWMARK", key.fwmark))
    else:
        attrs += [
            ("IPVS_SVC_ATTR_PROTOCOL", key.protocol),
            ("IPVS_SVC_ATTR_ADDR", key.addr),
            ("IPVS_SVC_ATTR_PORT", key.port),
        ]
    return {"attrs": attrs}


def service_nest(key: ServiceKey, attrs: ServiceAttrs) -> dict[str, Attrs]:
    """The full SERVICE nest for NEW/SET_SERVICE: the key and every settable field."""
    nest = service_key_nest(key)
    nest["attrs"] += [
        ("IPVS_SVC_ATTR_SCHED_NAME", attrs.scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": attrs.flags & USER_FLAGS, "mask": _ALL_FLAGS_MASK}),
        ("IPVS_SVC_ATTR_TIMEOUT", attrs.timeout),
        ("IPVS_SVC_ATTR_NETMASK", attrs.netmask),
        ("IPVS_SVC_ATTR_PE_NAME", attrs.pe_name),
    ]
    return nest


def dest_key_nest(key: DestKey) -> dict[str, Attrs]:
    """The DEST nest that names a destination (for DEL_DEST)."""
    return {"attrs": [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", key.af),
        ("IPVS_DEST_ATTR_ADDR", key.addr),
        ("IPVS_DEST_ATTR_PORT", key.port),
    ]}


def dest_nest(key: DestKey, attrs: DestAttrs) -> dict[str, Attrs]:
    """The full DEST nest for NEW/SET_DEST."""
    nest = dest_key_nest(key)
    nest["attrs"] += [
        ("IPVS_DEST_ATTR_FWD_METHOD", int(attrs.fwd)),
        ("IPVS_DEST_ATTR_WEIGHT", attrs.weight),
        ("IPVS_DEST_ATTR_U_THRESH", attrs.u_thresh),
        ("IPVS_DEST_ATTR_L_THRESH", attrs.l_thresh),
        ("IPVS_DEST_ATTR_TUN_TYPE", int(attrs.tun_type)),
        ("IPVS_DEST_ATTR_TUN_PORT", attrs.tun_port),
        ("IPVS_DEST_ATTR_TUN_FLAGS", int(attrs.tun_flags)),
    ]
    return nest


def daemon_nest(d: SyncDaemon) -> dict[str, Attrs]:
    """The DAEMON nest for NEW_DAEMON. Zero maxlen/port/ttl ask the kernel for its defaults; a group is
    sent only when given, since the kernel rejects a non-multicast one."""
    attrs: Attrs = [
        ("IPVS_DAEMON_ATTR_STATE", d.state),
        ("IPVS_DAEMON_ATTR_MCAST_IFN", d.mcast_ifn),
        ("IPVS_DAEMON_ATTR_SYNC_ID", d.syncid),
        ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", d.sync_maxlen),
        ("IPVS_DAEMON_ATTR_MCAST_PORT", d.mcast_port),
        ("IPVS_DAEMON_ATTR_MCAST_TTL", d.mcast_ttl),
    ]
    if d.mcast_group:
        v6 = ":" in d.mcast_group
        attrs.append(("IPVS_DAEMON_ATTR_MCAST_GROUP6" if v6 else "IPVS_DAEMON_ATTR_MCAST_GROUP", d.mcast_group))
    return {"attrs": attrs}


def timeout_attrs(t: Timeouts) -> Attrs:
    """The three TIMEOUT_* attributes of SET_CONFIG (0 leaves a timeout unchanged)."""
    return [
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", t.tcp),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", t.tcp_fin),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", t.udp),
    ]


# --- replies -------------------------------------------------------------------------------------


def _int(nest: Any, name: str) -> int:
    value = nest.get_attr(name)
    return int(value) if value is not None else 0


def decode_stats(nest: Any) -> Stats:
    """Stats from a STATS64 nest (absent -> zeros)."""
    if nest is None:
        return Stats()
    return Stats(**{f: _int(nest, f"IPVS_STATS_ATTR_{f.upper()}") for f in _STATS_FIELDS})


def decode_service_key(svc: Any) -> ServiceKey:
    af = _int(svc, "IPVS_SVC_ATTR_AF")
    fwmark = svc.get_attr("IPVS_SVC_ATTR_FWMARK")
    if fwmark is not None:
        return ServiceKey.mark(int(fwmark), af)
    return ServiceKey(af=af, protocol=_int(svc, "IPVS_SVC_ATTR_PROTOCOL"), addr=svc.get_attr("IPVS_SVC_ATTR_ADDR"),
                      port=_int(svc, "IPVS_SVC_ATTR_PORT"))


def decode_service(msg: Any) -> Service:
    """A service (without its dests) from a NEW_SERVICE reply. HASHED and any kernel-only bit are dropped."""
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    flags = svc.get_attr("IPVS_SVC_ATTR_FLAGS")
    attrs = ServiceAttrs(
        scheduler=svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or "",
        flags=(int(flags["flags"]) if flags is not None else 0) & USER_FLAGS,
        timeout=_int(svc, "IPVS_SVC_ATTR_TIMEOUT"),
        netmask=_int(svc, "IPVS_SVC_ATTR_NETMASK"),
        pe_name=svc.get_attr("IPVS_SVC_ATTR_PE_NAME") or "",
    )
    return Service(key=decode_service_key(svc), attrs=attrs,
                   stats=decode_stats(svc.get_attr("IPVS_SVC_ATTR_STATS64")))


def decode_dest(msg: Any, service_af: int) -> Dest:
    """A dest from a NEW_DEST reply (ADDR_FAMILY absent means the service's family)."""
    d = msg.get_attr("IPVS_CMD_ATTR_DEST")
    af = d.get_attr("IPVS_DEST_ATTR_ADDR_FAMILY") or service_af
    attrs = DestAttrs(
        fwd=_int(d, "IPVS_DEST_ATTR_FWD_METHOD"),
        weight=_int(d, "IPVS_DEST_ATTR_WEIGHT"),
        u_thresh=_int(d, "IPVS_DEST_ATTR_U_THRESH"),
        l_thresh=_int(d, "IPVS_DEST_ATTR_L_THRESH"),
        tun_type=_int(d, "IPVS_DEST_ATTR_TUN_TYPE"),
        tun_port=_int(d, "IPVS_DEST_ATTR_TUN_PORT"),
        tun_flags=_int(d, "IPVS_DEST_ATTR_TUN_FLAGS"),
    )
    return Dest(
        key=DestKey(af=int(af), addr=d.get_attr("IPVS_DEST_ATTR_ADDR"), port=_int(d, "IPVS_DEST_ATTR_PORT")),
        attrs=attrs,
        active_conns=_int(d, "IPVS_DEST_ATTR_ACTIVE_CONNS"),
        inact_conns=_int(d, "IPVS_DEST_ATTR_INACT_CONNS"),
        persist_conns=_int(d, "IPVS_DEST_ATTR_PERSIST_CONNS"),
        stats=decode_stats(d.get_attr("IPVS_DEST_ATTR_STATS64")),
    )


def decode_daemon(msg: Any) -> SyncDaemon:
    d = msg.get_attr("IPVS_CMD_ATTR_DAEMON")
    group = d.get_attr("IPVS_DAEMON_ATTR_MCAST_GROUP") or d.get_attr("IPVS_DAEMON_ATTR_MCAST_GROUP6") or ""
    return SyncDaemon(
        state=_int(d, "IPVS_DAEMON_ATTR_STATE"),
        mcast_ifn=d.get_attr("IPVS_DAEMON_ATTR_MCAST_IFN") or "",
        syncid=_int(d, "IPVS_DAEMON_ATTR_SYNC_ID"),
        sync_maxlen=_int(d, "IPVS_DAEMON_ATTR_SYNC_MAXLEN"),
        mcast_group=group,
        mcast_port=_int(d, "IPVS_DAEMON_ATTR_MCAST_PORT"),
        mcast_ttl=_int(d, "IPVS_DAEMON_ATTR_MCAST_TTL"),
    )


def decode_timeouts(msg: Any) -> Timeouts:
    return Timeouts(
        tcp=_int(msg, "IPVS_CMD_ATTR_TIMEOUT_TCP"),
        tcp_fin=_int(msg, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN"),
        udp=_int(msg, "IPVS_CMD_ATTR_TIMEOUT_UDP"),
    )


def raw_bytes(msg: Any) -> bytes:
    """The bytes of one received message, to decode it again with another class."""
    return bytes(msg.data[msg.offset: msg.offset + msg["header"]["length"]])


def decode_info(raw: bytes) -> Info:
    """Info from the raw bytes of a GET_INFO reply."""
    info = IpvsInfoMessage(raw)
    info.decode()
    return Info(version=_int(info, "IPVS_INFO_ATTR_VERSION"), conn_tab_size=_int(info, "IPVS_INFO_ATTR_CONN_TAB_SIZE"))

