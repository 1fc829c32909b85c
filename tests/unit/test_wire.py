"""ipvsd's struct encoder of IPVS requests against pyroute2's, byte for byte, over every request shape."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from ipvsd.kernel import _messages as m
from ipvsd.kernel import _wire, netlink
from ipvsd.kernel._policy import DONE_ON_ADD, DONE_ON_DELETE, STRICT
from ipvsd.model import (
    AF_INET,
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Fwd,
    Op,
    ServiceAttrs,
    ServiceKey,
    SyncDaemon,
    Timeouts,
    TunFlags,
    TunType,
)

FAMILY_ID = 0x1E
FLAGS = 5  # NLM_F_REQUEST | NLM_F_ACK


def pyroute2_bytes(cmd: int, attrs: m.Attrs, seq: int) -> bytes:
    msg = m.request(cmd, attrs)
    msg["header"] = {"type": FAMILY_ID, "flags": FLAGS, "sequence_number": seq, "pid": 0}
    msg.encode()
    return bytes(msg.data)


def ours(cmd: int, attrs: m.Attrs, seq: int) -> bytes:
    return _wire.request(FAMILY_ID, cmd, attrs, flags=FLAGS, seq=seq)


def reference(op: Op) -> tuple[int, m.Attrs, frozenset[int]]:
    """A table op as the single-request encoder takes it: (command, attributes, errnos that count as done),
    written out op by op as the IPVS netlink API defines them: the oracle of the batch encoder."""
    match op:
        case AddService(key, attrs):
            return m.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs))], DONE_ON_ADD
        case EditService(key, attrs):
            return m.CMD_SET_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs))], STRICT
        case DelService(key):
            return m.CMD_DEL_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))], DONE_ON_DELETE
        case AddDest(service, key, attrs):
            return m.CMD_NEW_DEST, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)),
                                    ("IPVS_CMD_ATTR_DEST", m.dest_nest(key, attrs))], DONE_ON_ADD
        case EditDest(service, key, attrs):
            return m.CMD_SET_DEST, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)),
                                    ("IPVS_CMD_ATTR_DEST", m.dest_nest(key, attrs))], STRICT
        case DelDest(service, key):
            return m.CMD_DEL_DEST, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)),
                                    ("IPVS_CMD_ATTR_DEST", m.dest_key_nest(key))], DONE_ON_DELETE
    raise TypeError(f"not a table op: {op!r}")


u8, u16, u32 = (st.integers(0, 2**n - 1) for n in (8, 16, 32))
v4 = st.integers(1, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(1, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
addrs = st.one_of(v4, v6)
names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=15)


@st.composite
def service_keys(draw: st.DrawFn) -> ServiceKey:
    if draw(st.booleans()):
        return ServiceKey.inet(draw(st.sampled_from([6, 17, 132])), draw(addrs), draw(u16))
    return ServiceKey(af=draw(st.sampled_from([2, 10])), fwmark=draw(st.integers(1, 2**32 - 1)))


@st.composite
def service_attrs(draw: st.DrawFn, af: int) -> ServiceAttrs:
    netmask = draw(u32) if af == AF_INET else draw(st.integers(0, 128))
    return ServiceAttrs(scheduler=draw(names), flags=draw(u32), timeout=draw(u32), netmask=netmask,
                        pe_name=draw(st.sampled_from(["", "sip"])))


dest_keys = st.builds(DestKey.of, addrs, u16)
dest_attrs = st.builds(DestAttrs, fwd=st.sampled_from(list(Fwd)), weight=st.integers(0, 65535), u_thresh=u32,
                       l_thresh=u32, tun_type=st.sampled_from(list(TunType)), tun_port=u16,
                       tun_flags=st.sampled_from(list(TunFlags)))


@given(service_keys(), st.data(), st.integers(1, 2**32 - 1))
def test_service_requests(key: ServiceKey, data: st.DataObject, seq: int) -> None:
    attrs = data.draw(service_attrs(key.af))
    for cmd, nest in ((m.CMD_NEW_SERVICE, m.service_nest(key, attrs)), (m.CMD_SET_SERVICE, m.service_nest(key, attrs)),
                      (m.CMD_DEL_SERVICE, m.service_key_nest(key)), (m.CMD_ZERO, m.service_key_nest(key))):
        shape = [("IPVS_CMD_ATTR_SERVICE", nest)]
        assert ours(cmd, shape, seq) == pyroute2_bytes(cmd, shape, seq)


@given(service_keys(), dest_keys, dest_attrs, st.integers(1, 2**32 - 1))
def test_dest_requests(service: ServiceKey, key: DestKey, attrs: DestAttrs, seq: int) -> None:
    for cmd, nest in ((m.CMD_NEW_DEST, m.dest_nest(key, attrs)), (m.CMD_SET_DEST, m.dest_nest(key, attrs)),
                      (m.CMD_DEL_DEST, m.dest_key_nest(key))):
        shape = [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)), ("IPVS_CMD_ATTR_DEST", nest)]
        assert ours(cmd, shape, seq) == pyroute2_bytes(cmd, shape, seq)


@given(st.builds(SyncDaemon, state=st.sampled_from([1, 2]), mcast_ifn=names, syncid=u8, sync_maxlen=u16,
                 mcast_group=st.sampled_from(["", "239.1.2.3", "ff02::1:5"]), mcast_port=u16, mcast_ttl=u8),
       st.builds(Timeouts, tcp=u32, tcp_fin=u32, udp=u32))
def test_daemon_timeout_and_bare_requests(daemon: SyncDaemon, timeouts: Timeouts) -> None:
    for cmd, shape in ((m.CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", m.daemon_nest(daemon))]),
                       (m.CMD_DEL_DAEMON, [("IPVS_CMD_ATTR_DAEMON", {"attrs": [("IPVS_DAEMON_ATTR_STATE", 1)]})]),
                       (m.CMD_SET_CONFIG, m.timeout_attrs(timeouts)), (m.CMD_FLUSH, []), (m.CMD_ZERO, [])):
        assert ours(cmd, shape, 9) == pyroute2_bytes(cmd, shape, 9)


def ack(seq: int, err: int) -> bytes:
    inner = struct.pack("=IHHII", 16, FAMILY_ID, FLAGS, seq, 0)
    body = struct.pack("=i", -err) + inner
    return struct.pack("=IHHII", 16 + len(body), _wire.NLMSG_ERROR, 0, seq, 1234) + body


def test_ack_error_finds_the_ack_of_its_request() -> None:
    assert _wire.ack_error(ack(7, 0), 7) == 0
    assert _wire.ack_error(ack(7, 17), 7) == 17  # EEXIST
    assert _wire.ack_error(ack(6, 2) + ack(7, 3), 7) == 3  # a late ack of an earlier request is skipped
    assert _wire.ack_error(ack(6, 2), 7) is None
    assert _wire.ack_error(b"\x00" * 8, 7) is None  # truncated: not an ack


def test_a_dump_ends_at_done_and_reports_a_failed_dump() -> None:
    reply = struct.pack("=IHHII", 20, FAMILY_ID, 2, 5, 0) + struct.pack("=BBH", m.CMD_NEW_SERVICE, 1, 0)

    def done(err: int) -> bytes:
        return struct.pack("=IHHII", 20, _wire.NLMSG_DONE, 2, 5, 0) + struct.pack("=i", -err)

    got, err, finished = _wire.replies(reply + reply + done(0), 5)
    assert (len(got), err, finished) == (2, None, True)
    got, err, finished = _wire.replies(reply + done(22), 5)
    assert (len(got), err, finished) == (1, 22, True)
    got, err, finished = _wire.replies(reply, 5)  # more datagrams to come
    assert (len(got), err, finished) == (1, None, False)


# --- the batch encoder: the same bytes as `request`, with its caches warm or cold ----------------------------

table_ops = st.one_of(
    st.builds(AddService, service_keys(), st.builds(ServiceAttrs, scheduler=names)),
    st.builds(EditService, service_keys(), st.builds(ServiceAttrs, scheduler=names, flags=u32, timeout=u32)),
    st.builds(DelService, service_keys()),
    st.builds(AddDest, service_keys(), dest_keys, dest_attrs),
    st.builds(EditDest, service_keys(), dest_keys, dest_attrs),
    st.builds(DelDest, service_keys(), dest_keys),
)


@given(st.lists(table_ops, min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_batch_requests_equal_single_requests(ops: list[Op], seq: int) -> None:
    encode = _wire.Requests(FAMILY_ID)
    for op in ops * 2:  # the second round from the caches
        cmd, attrs, done = reference(op)
        assert netlink._COMMANDS[type(op)] == (cmd, done)
        assert encode(op, cmd, flags=FLAGS, seq=seq) == ours(cmd, attrs, seq)


def test_dests_of_one_service_share_its_attribute_and_settings() -> None:
    svc = ServiceKey.inet(6, "10.0.0.1", 80)
    encode = _wire.Requests(FAMILY_ID)
    for i in range(1, 4):
        op = AddDest(svc, DestKey.of(f"10.1.0.{i}", 80), DestAttrs(weight=2))
        cmd, attrs, _ = reference(op)
        assert encode(op, cmd, flags=FLAGS, seq=i) == ours(cmd, attrs, i)
    assert len(encode._services) == 1 and len(encode._settings) == 1


def test_with_seq_changes_only_the_sequence_number() -> None:
    shape = [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(ServiceKey.mark(7)))]
    assert _wire.with_seq(ours(m.CMD_DEL_SERVICE, shape, 0), 77) == ours(m.CMD_DEL_SERVICE, shape, 77)


def test_acks_lists_every_ack_of_a_datagram() -> None:
    assert _wire.acks(ack(6, 0) + ack(7, 17)) == [(6, 0), (7, 17)]
    assert _wire.acks(b"\x00" * 8) == []
