"""Offline encode/decode of ipvsd's IPVS netlink messages against hand-built kernel-shaped bytes."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.nlsocket import Marshal

from ipvsd.kernel import _messages as m
from ipvsd.kernel import _wire
from ipvsd.model import (
    AF_INET,
    AF_INET6,
    DestAttrs,
    DestKey,
    Fwd,
    Info,
    ServiceAttrs,
    ServiceKey,
    Stats,
    SvcFlag,
    SyncDaemon,
    Timeouts,
    TunFlags,
    TunType,
)

FAMILY_ID = 0x1E


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = struct.pack("HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def genl(cmd: int, body: bytes, *, seq: int = 1, flags: int = 0) -> bytes:
    """A generic netlink message of the IPVS family around `body`."""
    payload = struct.pack("BBH", cmd, 1, 0) + body
    return struct.pack("IHHII", 16 + len(payload), FAMILY_ID, flags, seq, 0) + payload


def u16(v: int) -> bytes:
    return struct.pack("H", v)


def u32(v: int) -> bytes:
    return struct.pack("I", v)


def u64(v: int) -> bytes:
    return struct.pack("Q", v)


def encode(msg: m.IpvsMessage) -> bytes:
    msg["header"] = {"type": FAMILY_ID, "flags": 5, "sequence_number": 1, "pid": 0}
    msg.encode()
    return bytes(msg.data)


def attrs_of(raw: bytes, offset: int) -> dict[int, bytes]:
    """Attribute type -> payload, for a flat run of attributes starting at `offset`."""
    out = {}
    while offset + 4 <= len(raw):
        length, kind = struct.unpack_from("HH", raw, offset)
        out[kind & 0x3FFF] = raw[offset + 4: offset + length]
        offset += (length + 3) & ~3
    return out


def parse(raw: bytes) -> list[object]:
    marshal = Marshal()
    marshal.msg_map[FAMILY_ID] = m.IpvsMessage
    return list(marshal.parse(raw))


def parse_wire(raw: bytes) -> list[object]:
    """The same replies through ipvsd's own decoder (kernel/_wire.py), which netlink.py uses."""
    got, err, _ = _wire.replies(raw, 1)
    assert err is None
    return list(got)


# Every reply test runs through pyroute2's decoder and ipvsd's: the same decode_* functions read both.
DECODERS = pytest.mark.parametrize("parse", [parse, parse_wire], ids=["pyroute2", "wire"])


# --- requests --------------------------------------------------------------------------------------


def test_v4_service_request_carries_every_field_and_a_network_order_netmask() -> None:
    key = ServiceKey.inet(6, "10.0.0.1", 80)
    attrs = ServiceAttrs("rr", flags=SvcFlag.PERSISTENT | SvcFlag.SCHED2, timeout=300, netmask=0xFFFFFF00)
    raw = encode(m.request(m.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs))]))
    top = attrs_of(raw, 20)
    svc = attrs_of(top[1], 0)
    assert svc == {
        1: u16(AF_INET), 2: u16(6), 3: socket.inet_aton("10.0.0.1"), 4: struct.pack(">H", 80),
        6: b"rr\0", 7: u32(0x11) + u32(0xFFFFFFFF), 8: u32(300), 9: bytes([255, 255, 255, 0]), 11: b"\0",
    }


def test_v6_service_request_sends_the_prefix_length_as_native_u32() -> None:
    key = ServiceKey.inet(17, "2001:db8::1", 53)
    raw = encode(m.request(m.CMD_SET_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, ServiceAttrs(
        "wlc", netmask=64)))]))
    svc = attrs_of(attrs_of(raw, 20)[1], 0)
    assert svc[1] == u16(AF_INET6) and svc[3] == socket.inet_pton(AF_INET6, "2001:db8::1")
    assert svc[9] == u32(64)
    assert struct.unpack("BB", raw[16:18]) == (m.CMD_SET_SERVICE, 1)


def test_fwmark_key_sends_af_and_fwmark_only() -> None:
    key = m.service_key_nest(ServiceKey.mark(7, AF_INET6))
    raw = encode(m.request(m.CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", key)]))
    assert attrs_of(attrs_of(raw, 20)[1], 0) == {1: u16(AF_INET6), 5: u32(7)}


def test_address_key_sends_no_fwmark() -> None:
    nest = m.service_key_nest(ServiceKey.inet(6, "10.0.0.1", 80))
    assert [name for name, _ in nest["attrs"]] == [
        "IPVS_SVC_ATTR_AF", "IPVS_SVC_ATTR_PROTOCOL", "IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_PORT"]


def test_dest_request_has_a_big_endian_tunnel_port_and_every_field() -> None:
    attrs = DestAttrs(fwd=Fwd.TUNNEL, weight=3, u_thresh=100, l_thresh=10, tun_type=TunType.GUE, tun_port=6080,
                      tun_flags=TunFlags.REMCSUM)
    raw = encode(m.request(m.CMD_NEW_DEST, [
        ("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(ServiceKey.mark(5))),
        ("IPVS_CMD_ATTR_DEST", m.dest_nest(DestKey.of("2001:db8::10", 0), attrs))]))
    dest = attrs_of(attrs_of(raw, 20)[2], 0)
    assert dest == {
        11: u16(AF_INET6), 1: socket.inet_pton(AF_INET6, "2001:db8::10"), 2: struct.pack(">H", 0),
        3: u32(2), 4: u32(3), 5: u32(100), 6: u32(10), 13: b"\x01", 14: struct.pack(">H", 6080), 15: u16(2),
    }


def test_timeouts_are_u32_not_text() -> None:
    raw = encode(m.request(m.CMD_SET_CONFIG, m.timeout_attrs(Timeouts(900, 0, 300))))
    assert attrs_of(raw, 20) == {4: u32(900), 5: u32(0), 6: u32(300)}


def test_daemon_nest() -> None:
    d = SyncDaemon(state=1, mcast_ifn="eth0", syncid=7, sync_maxlen=1000, mcast_group="239.1.2.3", mcast_port=9000,
                   mcast_ttl=3)
    raw = encode(m.request(m.CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", m.daemon_nest(d))]))
    assert attrs_of(attrs_of(raw, 20)[3], 0) == {
        1: u32(1), 2: b"eth0\0", 3: u32(7), 4: u16(1000), 7: u16(9000), 8: b"\x03",
        5: socket.inet_aton("239.1.2.3")}
    plain = attrs_of(attrs_of(encode(m.request(m.CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", m.daemon_nest(
        SyncDaemon(state=2, mcast_ifn="eth1")))])), 20)[3], 0)
    assert 5 not in plain and 6 not in plain  # no group: the kernel's default, never 0.0.0.0
    v6 = m.daemon_nest(SyncDaemon(state=1, mcast_ifn="eth0", mcast_group="ff02::1:2"))
    assert v6["attrs"][-1] == ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ff02::1:2")


# --- replies, shaped as the kernel writes them ---------------------------------------------------------


def stats_nest(kind: int, values: list[int], *, wide: bool) -> bytes:
    body = b"".join(nla(i + 1, u64(v) if wide or i in (3, 4) else u32(v)) for i, v in enumerate(values))
    return nla(kind, body)


@DECODERS
def test_decode_v4_service_reply(parse: Callable[[bytes], list[object]]) -> None:
    svc = b"".join([
        nla(1, u16(AF_INET)), nla(2, u16(6)), nla(3, socket.inet_aton("10.0.0.1") + b"\0" * 12),
        nla(4, struct.pack(">H", 443)), nla(6, b"mh\0"), nla(11, b"sip\0"),
        nla(7, u32(0x1 | 0x2 | 0x8 | 0x4) + u32(0xFFFFFFFF)), nla(8, u32(3600)), nla(9, bytes([255, 255, 0, 0])),
        stats_nest(10, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], wide=False),
        stats_nest(12, [2**40, 2, 3, 2**60, 5, 6, 7, 8, 9, 10], wide=True),
    ])
    (msg,) = parse(genl(m.CMD_NEW_SERVICE, nla(1, svc)))
    got = m.decode_service(msg)
    assert got.key == ServiceKey.inet(6, "10.0.0.1", 443)
    assert got.attrs == ServiceAttrs("mh", flags=0x1 | 0x8 | 0x4, timeout=3600, netmask=0xFFFF0000, pe_name="sip")
    assert got.stats == Stats(2**40, 2, 3, 2**60, 5, 6, 7, 8, 9, 10)


@DECODERS
def test_decode_v6_fwmark_service_reply(parse: Callable[[bytes], list[object]]) -> None:
    svc = b"".join([nla(1, u16(AF_INET6)), nla(5, u32(3_000_000_000)), nla(6, b"rr\0"),
                    nla(7, u32(0x2) + u32(0xFFFFFFFF)), nla(8, u32(0)), nla(9, u32(128))])
    (msg,) = parse(genl(m.CMD_NEW_SERVICE, nla(1, svc)))
    got = m.decode_service(msg)
    assert got.key == ServiceKey.mark(3_000_000_000, AF_INET6)
    assert got.attrs == ServiceAttrs("rr", flags=0, timeout=0, netmask=128, pe_name="")
    assert got.stats == Stats()


@DECODERS
def test_decode_dest_reply_with_family_after_address(parse: Callable[[bytes], list[object]]) -> None:
    dest = b"".join([
        nla(1, socket.inet_pton(AF_INET6, "2001:db8::10")), nla(2, struct.pack(">H", 8080)), nla(3, u32(2)),
        nla(4, u32(2**31 - 1)), nla(5, u32(100)), nla(6, u32(10)), nla(7, u32(4)), nla(8, u32(5)), nla(9, u32(6)),
        stats_nest(10, [1] * 10, wide=False), nla(11, u16(AF_INET6)),
        stats_nest(12, [5_000_000_000, 0, 0, 0, 0, 0, 0, 0, 0, 0], wide=True),
        nla(13, b"\x01"), nla(14, struct.pack(">H", 6080)), nla(15, u16(1)),
    ])
    (msg,) = parse(genl(m.CMD_NEW_DEST, nla(2, dest)))
    got = m.decode_dest(msg, AF_INET)
    assert got.key == DestKey.of("2001:db8::10", 8080)
    assert got.attrs == DestAttrs(fwd=Fwd.TUNNEL, weight=2**31 - 1, u_thresh=100, l_thresh=10,
                                  tun_type=TunType.GUE, tun_port=6080, tun_flags=TunFlags.CSUM)
    assert (got.active_conns, got.inact_conns, got.persist_conns) == (4, 5, 6)
    assert got.stats == Stats(conns=5_000_000_000)


@DECODERS
def test_decode_daemon_and_timeouts(parse: Callable[[bytes], list[object]]) -> None:
    daemon = b"".join([nla(1, u32(1)), nla(2, b"eth0\0"), nla(3, u32(0)), nla(4, u16(1472)), nla(7, u16(8848)),
                       nla(8, b"\x01"), nla(5, socket.inet_aton("224.0.0.81"))])
    (msg,) = parse(genl(m.CMD_NEW_DAEMON, nla(3, daemon)))
    assert m.decode_daemon(msg) == SyncDaemon(1, "eth0", 0, 1472, "224.0.0.81", 8848, 1)
    (msg,) = parse(genl(m.CMD_SET_CONFIG, nla(4, u32(900)) + nla(5, u32(120)) + nla(6, u32(300))))
    assert m.decode_timeouts(msg) == Timeouts(900, 120, 300)


def test_get_info_reply_decodes_through_the_info_class() -> None:
    # attribute numbers 1 and 2 collide with SERVICE and DEST: the IPVS class would read them as nests
    raw = genl(m.CMD_SET_INFO, nla(1, u32(0x010201)) + nla(2, u32(4096)))
    (msg,) = parse(raw + raw)[:1]
    assert m.decode_info(m.raw_bytes(msg)) == Info(version=0x010201, conn_tab_size=4096)
    (ours,) = parse_wire(raw + raw)[:1]
    assert m.decode_info(ours.raw) == Info(version=0x010201, conn_tab_size=4096)  # type: ignore[attr-defined]


def test_round_trip_of_every_field_through_our_own_encoder() -> None:
    key = ServiceKey.inet(132, "2001:db8::5", 3868)
    attrs = ServiceAttrs("sh", flags=SvcFlag.SCHED1 | SvcFlag.SCHED2 | SvcFlag.ONEPACKET, timeout=5, netmask=96)
    dkey, dattrs = DestKey.of("10.9.9.9", 0), DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GRE, tun_flags=1)
    raw = encode(m.request(m.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs)),
                                               ("IPVS_CMD_ATTR_DEST", m.dest_nest(dkey, dattrs))]))
    msg = m.IpvsMessage(raw)
    msg.decode()
    assert (m.decode_service(msg).key, m.decode_service(msg).attrs) == (key, attrs)
    assert (m.decode_dest(msg, AF_INET6).key, m.decode_dest(msg, AF_INET6).attrs) == (dkey, dattrs)


# --- why the classes are declared, not subclassed from pyroute2's, and the stock encoder's defects ------


def test_stock_subclass_inherits_the_parents_compiled_types() -> None:
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    ipvsmsg()  # the stock class compiles (and caches) its attribute table on first use

    class Retyped(ipvsmsg):  # type: ignore[misc]
        nla_map = tuple((n, "uint32" if n.startswith("IPVS_CMD_ATTR_TIMEOUT") else t) for n, t in ipvsmsg.nla_map)

    msg = Retyped()
    msg["cmd"], msg["version"], msg["attrs"] = m.CMD_SET_CONFIG, 1, [("IPVS_CMD_ATTR_TIMEOUT_TCP", 900)]
    msg["header"] = {"type": FAMILY_ID, "flags": 5}
    try:
        msg.encode()
        encoded_as_u32 = attrs_of(bytes(msg.data), 20).get(4) == u32(900)
    except TypeError:  # still the parent's "hex" type
        encoded_as_u32 = False
    assert not encoded_as_u32


def test_stock_timeouts_encode_as_ascii_text() -> None:
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    msg = ipvsmsg()
    msg["cmd"], msg["version"], msg["attrs"] = m.CMD_SET_CONFIG, 1, [("IPVS_CMD_ATTR_TIMEOUT_TCP", "84:03:00:00")]
    msg["header"] = {"type": FAMILY_ID, "flags": 5}
    msg.encode()
    assert attrs_of(bytes(msg.data), 20)[4] == b"84:03:00:00"  # the text, not 900


def test_stock_service_defaults_leak_and_misspelt_keys_vanish() -> None:
    from pyroute2.ipvs import IPVSService

    sent = dict(IPVSService(addr="10.0.0.1", port=80, protocol=6, sched="rr").dump_nla()["attrs"])
    assert sent["IPVS_SVC_ATTR_SCHED_NAME"] == "wlc"
    v6 = dict(IPVSService(addr="2001:db8::1", port=80, protocol=6).dump_nla()["attrs"])
    assert "IPVS_SVC_ATTR_NETMASK" not in v6


# --- the resync's dest decoder (kernel/_wire.py `dest`) against the generic one --------------------------------


@st.composite
def dest_nests(draw: st.DrawFn) -> tuple[bytes, int]:
    """A dest nest as a kernel could write it: any subset of its attributes in any order, PAD attributes in the
    64-bit stats nest, addresses of either family; and the service's family."""
    v6 = draw(st.booleans())
    addr = socket.inet_pton(AF_INET6, "2001:db8::7") if v6 else socket.inet_aton("10.4.0.9") + b"\0" * 12
    addr = addr[:draw(st.sampled_from([4, 16, 16, 16]))]  # a kernel writes 16 bytes; a shorter one is read alike
    word = st.integers(0, 2**32 - 1)
    wide = [nla(13, b"")] + [nla(i, u64(draw(st.integers(0, 2**64 - 1)))) for i in range(1, 11)]
    parts = [nla(1, addr), nla(2, struct.pack(">H", draw(st.integers(0, 65535)))), nla(3, u32(draw(st.integers(0, 4)))),
             nla(4, u32(draw(word))), nla(5, u32(draw(word))), nla(6, u32(draw(word))), nla(7, u32(draw(word))),
             nla(8, u32(draw(word))), nla(9, u32(draw(word))), stats_nest(10, [draw(word)] * 10, wide=False),
             nla(11, u16(AF_INET6 if v6 else AF_INET)), nla(12, b"".join(draw(st.permutations(wide)))),
             nla(13, bytes([draw(st.integers(0, 2))])), nla(14, struct.pack(">H", draw(st.integers(0, 65535)))),
             nla(15, u16(draw(st.integers(0, 7)))), nla(16, b"\x01\x02\x03")]  # 16: an attribute of a newer kernel
    kept = draw(st.lists(st.sampled_from(parts), unique=True, min_size=1))
    return nla(2, b"".join(kept)), draw(st.sampled_from([AF_INET, AF_INET6]))


@settings(max_examples=300, deadline=None)
@given(nests=st.lists(dest_nests(), min_size=1, max_size=4))
def test_the_resync_dest_decoder_reads_what_the_generic_one_reads(nests: list[tuple[bytes, int]]) -> None:
    # twice over: the second reading of a shape comes from the decoder's cache of layouts
    for body, af in nests + nests:
        (msg,) = _wire.replies(genl(m.CMD_NEW_DEST, body), 1, af=af)[0]
        assert _wire.dest(msg, af) == m.decode_dest(msg, af)


def test_two_dests_of_one_length_in_other_orders_are_each_read_right() -> None:
    a = [nla(1, socket.inet_aton("10.0.0.1") + b"\0" * 12), nla(2, struct.pack(">H", 80)), nla(4, u32(5)),
         nla(5, u32(7))]
    for parts in (a, [a[0], a[1], a[3], a[2]], a):
        (msg,) = _wire.replies(genl(m.CMD_NEW_DEST, nla(2, b"".join(parts))), 1, af=AF_INET)[0]
        got = _wire.dest(msg, AF_INET)
        assert (got.attrs.weight, got.attrs.u_thresh) == (5, 7)
        assert got == m.decode_dest(msg, AF_INET)
