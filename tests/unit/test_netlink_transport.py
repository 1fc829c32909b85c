"""The netlink adapter's batch transport (`_Plain.call_many`), natively, against the generic-netlink controller.

Many requests in one sendmsg, each ack found by its seq, a lost ack reported. No IPVS needed: nlctrl answers
GETFAMILY for any name, with ENOENT for a family that does not exist.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct

import pytest

from ipvsd.kernel import _wire
from ipvsd.kernel.netlink import _Plain

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST_ACK = 1 | 4


def getfamily(name: str) -> bytes:
    """A GETFAMILY request for `name`, with NLM_F_ACK (seq 0: call_many's caller patches it in)."""
    payload = name.encode() + b"\0"
    nla = struct.pack("=HH", 4 + len(payload), CTRL_ATTR_FAMILY_NAME) + payload + bytes(-len(payload) % 4)
    body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + nla
    return struct.pack("=IHHII", 16 + len(body), GENL_ID_CTRL, NLM_F_REQUEST_ACK, 0, 0) + body


@pytest.fixture
def plain() -> _Plain:
    try:
        p = _Plain(None, GENL_ID_CTRL)
    except OSError as e:  # pragma: no cover - a sandbox without netlink
        pytest.skip(f"no generic netlink here: {e}")
    return p


async def test_every_request_of_a_batch_gets_its_own_answer(plain: _Plain) -> None:
    names = ["nlctrl", "no-such-family", "nlctrl", "no-such-either"] * 25
    seqs = plain.seqs(len(names))
    try:
        errs, lost = await plain.call_many([_wire.with_seq(getfamily(n), s) for n, s in zip(names, seqs, strict=True)],
                                           seqs)
    finally:
        plain.close()
    assert lost is None
    assert errs == [0 if n == "nlctrl" else errno.ENOENT for n in names]  # the replies between acks are skipped


async def test_acks_lost_to_a_full_receive_buffer_are_reported_with_the_ones_that_came(plain: _Plain) -> None:
    plain.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few replies fill it
    seqs = plain.seqs(200)
    try:
        errs, lost = await plain.call_many([_wire.with_seq(getfamily("nlctrl"), s) for s in seqs], seqs)
    finally:
        plain.close()
    assert isinstance(lost, OSError) and lost.errno == errno.ENOBUFS
    known = errs.index(None)
    assert known >= 1 and errs[:known] == [0] * known and errs[known:] == [None] * (200 - known)


def test_the_socket_is_set_up_for_batches(plain: _Plain) -> None:
    try:
        assert plain.sock.getsockopt(270, 10) == 1  # NETLINK_CAP_ACK
        got = plain.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert plain.max_batch == min(500, got // 2048) and plain.max_batch >= 100
    finally:
        plain.close()


@pytest.mark.parametrize("left, raises", [([], False), ([1], True)])
def test_a_daemon_stop_without_an_ack_is_done_when_the_daemon_is_gone(left: list[int], raises: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel sends no ack for EINTR (a sync thread stopped before it first ran): the table decides
    from ipvsd.errors import KernelError
    from ipvsd.kernel.netlink import NetlinkKernel
    from ipvsd.model import SyncDaemon

    k = NetlinkKernel()

    async def no_ack(op: str, *args: object) -> None:
        raise KernelError(op, errno.ETIMEDOUT)

    async def daemons() -> list[SyncDaemon]:
        return [SyncDaemon(state=s, mcast_ifn="eth0") for s in left]

    monkeypatch.setattr(k, "_do", no_ack)
    monkeypatch.setattr(k, "daemons", daemons)
    if raises:
        with pytest.raises(KernelError, match="stop-daemon master"):
            asyncio.run(k.stop_daemon(1))
    else:
        asyncio.run(k.stop_daemon(1))
