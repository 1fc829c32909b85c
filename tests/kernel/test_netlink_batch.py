"""apply_many on Linux's IPVS (lab VM): 2,000 ops batched and one by one give one table; errors per op; lost acks."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator

import pytest

from ipvsd.kernel import apply
from ipvsd.kernel.netlink import NetlinkKernel
from ipvsd.model import AddDest, AddService, DestAttrs, DestKey, Fwd, Op, Proto, ServiceAttrs, ServiceKey
from tests.netns import ipvsadm, sh

SERVICES, REALS = 200, 9  # 2,000 ops: 200 service adds, then 1,800 dest adds
RR = ServiceAttrs("rr")


def _svc(i: int) -> ServiceKey:
    return ServiceKey.inet(Proto.TCP, f"10.3.{i // 250}.{1 + i % 250}", 80)


def _ops(services: int = SERVICES, reals: int = REALS) -> tuple[list[Op], list[int]]:
    """A table programmed from empty, as a plan orders it (service adds, then dest adds); and its cut."""
    ops: list[Op] = [AddService(_svc(i), RR) for i in range(services)]
    for i in range(services):
        for j in range(i * reals, (i + 1) * reals):
            ops.append(AddDest(_svc(i), DestKey.of(f"10.4.{j // 250}.{1 + j % 250}", 80),
                               DestAttrs(fwd=Fwd.MASQ, weight=1 + j % 5)))
    return ops, [services]


def _dests(ns: str) -> int:
    return sum(1 for line in ipvsadm(ns, "-Ln").splitlines() if line.lstrip().startswith("->") and "RemoteAddress"
               not in line)


async def _flushed(k: NetlinkKernel) -> None:
    """Empty the table now and close: deleting a namespace with 2,000 entries leaves its cleanup to a kernel
    worker, which under the lab's emulated CPU competes with the tests that follow. Suspected, not proven: in
    the first run the conformance suite's sync-daemon test then got no ack for --stop-daemon (a sync thread
    stopped before it first ran makes kthread_stop return EINTR, and netlink sends no ack for EINTR)."""
    try:
        await k.flush()
    finally:
        await k.close()


@pytest.fixture
def other() -> Iterator[str]:
    """A second fresh namespace, for the same ops applied one by one."""
    name = f"t{os.getpid()}-other"
    sh("ip", "netns", "add", name)
    # lo up creates the local routing table: without it IPVS finds no address type for a real (EINVAL)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


async def test_2000_ops_batched_and_one_by_one_give_the_same_table(netns: str, other: str) -> None:
    ops, cuts = _ops()
    batched, single = NetlinkKernel(netns=netns), NetlinkKernel(netns=other)
    try:
        await batched.info()  # open both sockets before timing
        await single.info()
        t0 = time.perf_counter()
        got = await batched.apply_many(ops, cuts)
        t1 = time.perf_counter()
        for op in ops:
            await apply(single, op)
        t2 = time.perf_counter()
        assert batched._plain is not None
        print(f"\n2,000 ops: batched {t1 - t0:.3f} s ({got.sends} sendmsg, at most {batched._plain.max_batch} "
              f"requests each), one by one {t2 - t1:.3f} s; {(t2 - t1) / (t1 - t0):.1f} x")
        assert got.ok and got.applied == tuple(ops)
        assert 2 <= got.sends <= 20  # the cut, then the dest adds by bytes: far fewer than 2,000 round trips
        assert _dests(netns) == SERVICES * REALS  # before the comparison: two empty tables are equal too
        assert ipvsadm(netns, "-Ln") == ipvsadm(other, "-Ln")
    finally:
        await _flushed(batched)
        await _flushed(single)


async def test_a_dest_add_on_a_missing_service_fails_alone_inside_a_big_batch(netns: str) -> None:
    ops, cuts = _ops()
    bad = AddDest(ServiceKey.inet(Proto.TCP, "10.9.9.9", 80), DestKey.of("10.4.9.9", 80), DestAttrs())
    at = 1100
    ops.insert(at, bad)
    k = NetlinkKernel(netns=netns)
    try:
        got = await k.apply_many(ops, cuts)
        assert got.failed == bad and got.error is not None
        assert (got.error.errno, got.error.op) == (errno.ESRCH, "-a -t 10.9.9.9:80 -r 10.4.9.9:80 -m -w 1")
        assert got.applied == tuple(ops[:at]) and got.later_errors == ()
        assert got.later == tuple(ops[at + 1: at + 1 + len(got.later)])  # the rest of its batch, carried out
        # every op acked done is in the table, and none that was not sent
        assert _dests(netns) == (at - SERVICES) + len(got.later)
        sent = at + 1 + len(got.later)
        print(f"\nfailure at op {at}: {len(got.later)} later ops of its batch carried out, {len(ops) - sent} not sent")
        rest = await k.apply_many(ops[sent:])  # the socket is fine for the next call
        assert rest.ok
        assert _dests(netns) == SERVICES * REALS
    finally:
        await _flushed(k)


async def test_a_lost_ack_is_reported_not_waited_for(netns: str) -> None:
    ops, _ = _ops(services=1, reals=300)
    k = NetlinkKernel(netns=netns)
    try:
        await k.info()
        plain = k._plain
        assert plain is not None
        assert plain.sock.getsockopt(270, 10) == 1  # NETLINK_CAP_ACK: error acks do not copy the request
        assert plain.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20 and plain.max_batch == 500
        # Break the sizing on purpose: a tiny receive buffer and one batch of everything.
        plain.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        plain.max_batch = 10_000
        t0 = time.perf_counter()
        got = await k.apply_many(ops)
        took = time.perf_counter() - t0
        assert got.error is not None and got.error.errno == errno.ENOBUFS and got.later == ()
        assert 0 < len(got.applied) < len(ops) and got.failed == ops[len(got.applied)]
        assert took < 5  # no reply timeout was waited for
        assert _dests(netns) == 300  # the kernel carried out the whole batch; only its acks were lost
        print(f"\nlost acks: {len(got.applied)} of {len(ops)} acked, reported as ENOBUFS after {took:.3f} s")
        more = await k.apply_many([AddDest(_svc(0), DestKey.of("10.5.0.1", 80), DestAttrs())])
        assert more.ok and k._plain is not plain  # a fresh socket: no stray acks from the broken batch
    finally:
        await _flushed(k)
