"""The Kernel conformance suite against FakeKernel, plus the fake's own test hooks."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

import pytest

from ipvsd.errors import IpvsMissing, KernelError
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import DestAttrs, DestKey, ServiceAttrs, Stats
from tests.kernel_contract import RR, SYNC_IFN, V4, KernelContract


@pytest.fixture
async def kernel() -> AsyncIterator[FakeKernel]:
    k = FakeKernel(interfaces={"lo": 65536, SYNC_IFN: 1500})
    yield k
    await k.close()


class TestFakeKernel(KernelContract):
    pass


async def test_fail_hook_injects_an_errno_with_the_op(kernel: FakeKernel) -> None:
    kernel.fail = lambda op: errno.ENOMEM if op.startswith("-a ") else None
    await kernel.add_service(V4, RR)
    with pytest.raises(KernelError) as info:
        await kernel.add_dest(V4, DestKey.of("10.1.0.1", 80), DestAttrs())
    assert (info.value.op, info.value.errno) == ("-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1", errno.ENOMEM)
    got = await kernel.service(V4)
    assert got is not None and got.dests == ()
    assert kernel.log == ["-A -t 10.0.0.1:80 -s rr"]


async def test_injected_errno_goes_through_the_policy(kernel: FakeKernel) -> None:
    kernel.fail = lambda op: errno.EEXIST if op.startswith("-A ") else None
    await kernel.add_service(V4, RR)  # "already there" counts as done, as with the kernel
    assert await kernel.services() == [] and kernel.log == []


async def test_reads_fail_too_and_a_kernel_without_ipvs_fails_everything(kernel: FakeKernel) -> None:
    kernel.fail = lambda op: errno.EIO if op == "-L" else None
    with pytest.raises(KernelError) as info:
        await kernel.services()
    assert (info.value.op, info.value.errno) == ("-L", errno.EIO)
    kernel.fail = None
    kernel.ipvs = False
    for call in (kernel.info(), kernel.services(), kernel.add_service(V4, RR)):
        with pytest.raises(IpvsMissing, match="no IPVS"):
            await call


async def test_hidden_flag_bits_are_not_reported(kernel: FakeKernel) -> None:
    await kernel.add_service(V4, ServiceAttrs("rr", flags=0x2 | 0x40))  # HASHED and an unknown bit
    got = await kernel.service(V4)
    assert got is not None and got.attrs.flags == 0


async def test_backup_daemon_maxlen_follows_the_device_mtu(kernel: FakeKernel) -> None:
    from ipvsd.model import SyncDaemon

    await kernel.start_daemon(SyncDaemon(state=2, mcast_ifn="lo"))
    assert [d.sync_maxlen for d in await kernel.daemons()] == [65535 - 28]
    with pytest.raises(KernelError) as info:
        await kernel.start_daemon(SyncDaemon(state=1, mcast_ifn="nosuch0"))
    assert info.value.errno == errno.ENODEV


async def test_set_counters_and_zero(kernel: FakeKernel) -> None:
    d = DestKey.of("10.1.0.1", 80)
    await kernel.add_service(V4, RR)
    await kernel.add_dest(V4, d, DestAttrs())
    kernel.set_counters(V4, stats=Stats(conns=5))
    kernel.set_counters(V4, d, stats=Stats(inpkts=7), active_conns=2)
    got = await kernel.service(V4)
    assert got is not None and got.stats.conns == 5 and got.dests[0].stats.inpkts == 7
    assert got.dests[0].active_conns == 2
    await kernel.zero()
    got = await kernel.service(V4)
    assert got is not None and got.stats == Stats() and got.dests[0].stats == Stats()
