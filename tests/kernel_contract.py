"""The Kernel conformance suite: what any IPVS table (the netlink adapter, the fake) must do, errnos included.

Not collected by itself. A test module subclasses `KernelContract` and provides an async fixture `kernel` that
yields a fresh, empty table: tests/unit/test_kernel_fake.py (FakeKernel, natively) and
tests/kernel/test_netlink_conformance.py (NetlinkKernel in a fresh namespace, in the lab VM). The interface
`SYNC_IFN` must exist in that table's namespace with a 1500-byte MTU.
"""

from __future__ import annotations

import errno

import pytest

from ipvsd.errors import KernelError
from ipvsd.kernel import Batch, Kernel, apply
from ipvsd.model import (
    AF_INET,
    AF_INET6,
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Fwd,
    Info,
    Op,
    Proto,
    ServiceAttrs,
    ServiceKey,
    SvcFlag,
    SyncDaemon,
    Timeouts,
    TunFlags,
    TunType,
)

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
SYNC_IFN = "eth0"

V4 = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
V6 = ServiceKey.inet(Proto.TCP, "2001:db8::1", 80)
MARK = ServiceKey.mark(7)
RR = ServiceAttrs(scheduler="rr")
RR6 = ServiceAttrs(scheduler="rr", netmask=128)

SERVICES: dict[str, tuple[ServiceKey, ServiceAttrs]] = {
    "tcp4": (V4, RR),
    "udp4-sh-fallback-ops": (ServiceKey.inet(Proto.UDP, "10.0.0.1", 53),
                             ServiceAttrs("sh", flags=SvcFlag.SCHED1 | SvcFlag.ONEPACKET)),
    "sctp4-flag3": (ServiceKey.inet(Proto.SCTP, "10.0.0.1", 3868), ServiceAttrs("rr", flags=SvcFlag.SCHED3)),
    "tcp4-mh-persistent-pe-sip": (ServiceKey.inet(Proto.TCP, "10.0.0.1", 5060),
                                  ServiceAttrs("mh", flags=SvcFlag.SCHED1 | SvcFlag.SCHED2 | SvcFlag.PERSISTENT,
                                               timeout=3600, pe_name="sip")),
    "tcp4-persistent-mask": (ServiceKey.inet(Proto.TCP, "192.168.0.1", 443),
                             ServiceAttrs("wrr", flags=SvcFlag.PERSISTENT, timeout=300, netmask=0xFFFFFF00)),
    "tcp6": (V6, RR6),
    "udp6-persistent-prefix": (ServiceKey.inet(Proto.UDP, "2001:db8::2", 53),
                               ServiceAttrs("lc", flags=SvcFlag.PERSISTENT, timeout=60, netmask=64)),
    "sctp6": (ServiceKey.inet(Proto.SCTP, "2001:db8::3", 3868), ServiceAttrs("wlc", netmask=128)),
    "fwmark4": (MARK, ServiceAttrs("lc")),
    "fwmark6": (ServiceKey.mark(9, AF_INET6), RR6),
    "fwmark4-high": (ServiceKey.mark(3_000_000_000), ServiceAttrs("wrr")),
}

GUE = DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GUE, tun_port=6080)
DESTS: dict[str, DestAttrs] = {
    "masq": DestAttrs(fwd=Fwd.MASQ, weight=1),
    "route": DestAttrs(fwd=Fwd.ROUTE, weight=5),
    "ipip": DestAttrs(fwd=Fwd.TUNNEL, weight=2),
    "gue": GUE,
    "gue-csum": DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GUE, tun_port=5555, tun_flags=TunFlags.CSUM),
    "gue-remcsum": DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GUE, tun_port=1, tun_flags=TunFlags.REMCSUM),
    "gre": DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GRE),
    "gre-csum": DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GRE, tun_flags=TunFlags.CSUM),
    "thresholds": DestAttrs(fwd=Fwd.MASQ, weight=3, u_thresh=100, l_thresh=10),
    "weight0": DestAttrs(fwd=Fwd.ROUTE, weight=0),
    "weight-max": DestAttrs(fwd=Fwd.ROUTE, weight=2**31 - 1),
}


async def expect_errno(err: int, coro: object, op: str) -> None:
    with pytest.raises(KernelError) as info:
        await coro  # type: ignore[misc]
    assert (info.value.errno, info.value.op) == (err, op)


def _err(batch: Batch) -> tuple[int, str] | None:
    """The first failure of a batch as (errno, op in ipvsadm notation); None when there was none."""
    return None if batch.error is None else (batch.error.errno, batch.error.op)


class KernelContract:
    """Behaviour shared by every Kernel. Subclasses provide the `kernel` fixture."""

    schedulers_available: tuple[str, ...] = SCHEDULERS  # the rest must be refused with ENOENT

    # --- reading an empty table ------------------------------------------------------------------

    async def test_fresh_table_is_empty(self, kernel: Kernel) -> None:
        assert await kernel.services() == []
        assert await kernel.service(V4) is None
        assert await kernel.daemons() == []

    async def test_info_reports_version_and_table_size(self, kernel: Kernel) -> None:
        info = await kernel.info()
        assert info == Info(version=0x010201, conn_tab_size=info.conn_tab_size)
        assert info.conn_tab_size > 0 and info.conn_tab_size & (info.conn_tab_size - 1) == 0  # a power of two

    # --- services --------------------------------------------------------------------------------

    @pytest.mark.parametrize("case", sorted(SERVICES))
    async def test_service_round_trips(self, kernel: Kernel, case: str) -> None:
        key, attrs = SERVICES[case]
        await kernel.add_service(key, attrs)
        got = await kernel.service(key)
        assert got is not None
        assert (got.key, got.attrs, got.dests) == (key, attrs, ())
        assert [(s.key, s.attrs) for s in await kernel.services()] == [(key, attrs)]

    @pytest.mark.parametrize("scheduler", SCHEDULERS)
    async def test_every_scheduler(self, kernel: Kernel, scheduler: str) -> None:
        if scheduler not in self.schedulers_available:
            await expect_errno(errno.ENOENT, kernel.add_service(V4, ServiceAttrs(scheduler)),
                               f"-A -t 10.0.0.1:80 -s {scheduler}")
            return
        await kernel.add_service(V4, ServiceAttrs(scheduler))
        got = await kernel.service(V4)
        assert got is not None and got.attrs.scheduler == scheduler

    async def test_all_services_listed_with_their_dests(self, kernel: Kernel) -> None:
        for key, attrs in SERVICES.values():
            await kernel.add_service(key, attrs)
            await kernel.add_dest(key, DestKey.of("2001:db8:1::1" if key.af == AF_INET6 else "10.1.0.1", 80),
                                  DestAttrs(fwd=Fwd.ROUTE))
        listed = {s.key: s for s in await kernel.services()}
        assert {k: (s.attrs, len(s.dests)) for k, s in listed.items()} == {k: (a, 1) for k, a in SERVICES.values()}

    async def test_edit_service_changes_every_field(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, ServiceAttrs("wlc"))
        new = ServiceAttrs("sh", flags=SvcFlag.PERSISTENT | SvcFlag.SCHED1 | SvcFlag.ONEPACKET, timeout=120,
                           netmask=0xFFFF0000, pe_name="sip")
        await kernel.edit_service(V4, new)
        got = await kernel.service(V4)
        assert got is not None and got.attrs == new
        await kernel.edit_service(V4, RR)  # and back: flags cleared, pe removed, not left as they were
        got = await kernel.service(V4)
        assert got is not None and got.attrs == RR

    async def test_edit_keeps_the_dests(self, kernel: Kernel) -> None:
        await kernel.add_service(MARK, RR)
        await kernel.add_dest(MARK, DestKey.of("10.1.0.1", 0), DestAttrs())
        await kernel.edit_service(MARK, ServiceAttrs("wrr"))
        got = await kernel.service(MARK)
        assert got is not None and got.attrs.scheduler == "wrr" and len(got.dests) == 1

    async def test_delete_service(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        await kernel.add_service(MARK, RR)
        await kernel.del_service(V4)
        assert [s.key for s in await kernel.services()] == [MARK]

    async def test_v4_and_v6_fwmark_services_are_distinct(self, kernel: Kernel) -> None:
        await kernel.add_service(ServiceKey.mark(7, AF_INET), RR)
        await kernel.add_service(ServiceKey.mark(7, AF_INET6), RR6)
        assert sorted(s.key for s in await kernel.services()) == [ServiceKey.mark(7, AF_INET),
                                                                  ServiceKey.mark(7, AF_INET6)]

    # --- dests -----------------------------------------------------------------------------------

    @pytest.mark.parametrize("case", sorted(DESTS))
    async def test_dest_round_trips(self, kernel: Kernel, case: str) -> None:
        await kernel.add_service(V4, RR)
        key = DestKey.of("10.1.0.1", 8080)
        await kernel.add_dest(V4, key, DESTS[case])
        got = await kernel.service(V4)
        assert got is not None
        assert [(d.key, d.attrs, d.active_conns, d.inact_conns) for d in got.dests] == [(key, DESTS[case], 0, 0)]

    async def test_dests_are_listed_newest_first(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        keys = [DestKey.of(f"10.1.0.{i}", 80) for i in (1, 2, 3)]
        for k in keys:
            await kernel.add_dest(V4, k, DestAttrs())
        got = await kernel.service(V4)
        assert got is not None and [d.key for d in got.dests] == keys[::-1]

    async def test_v6_dests_and_a_v4_tunnel_dest_in_a_v6_service(self, kernel: Kernel) -> None:
        await kernel.add_service(V6, RR6)
        v6, v4 = DestKey.of("2001:db8:1::10", 80), DestKey.of("10.9.9.9", 80)
        await kernel.add_dest(V6, v6, DestAttrs(fwd=Fwd.MASQ))
        await kernel.add_dest(V6, v4, DestAttrs(fwd=Fwd.TUNNEL))
        got = await kernel.service(V6)
        assert got is not None and [(d.key, d.attrs.fwd) for d in got.dests] == [(v4, Fwd.TUNNEL), (v6, Fwd.MASQ)]

    async def test_edit_dest_changes_every_field(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        key = DestKey.of("10.1.0.1", 80)
        await kernel.add_dest(V4, key, DestAttrs(fwd=Fwd.MASQ, weight=1))
        for attrs in (GUE, DestAttrs(fwd=Fwd.ROUTE, weight=7, u_thresh=50, l_thresh=5), DestAttrs(weight=0)):
            await kernel.edit_dest(V4, key, attrs)
            got = await kernel.service(V4)
            assert got is not None and [d.attrs for d in got.dests] == [attrs]

    async def test_dest_ops_on_a_fwmark_service_reach_that_service(self, kernel: Kernel) -> None:
        # a v4 address service and fwmark services side by side: each dest must land where it was sent
        await kernel.add_service(V4, RR)
        await kernel.add_service(MARK, RR)
        await kernel.add_service(ServiceKey.mark(7, AF_INET6), RR6)
        key = DestKey.of("10.1.0.1", 0)
        await kernel.add_dest(MARK, key, DestAttrs(fwd=Fwd.ROUTE, weight=3))
        await kernel.edit_dest(MARK, key, DestAttrs(fwd=Fwd.ROUTE, weight=9))
        by_key = {s.key: s for s in await kernel.services()}
        assert [(d.key, d.attrs.weight) for d in by_key[MARK].dests] == [(key, 9)]
        assert by_key[V4].dests == () and by_key[ServiceKey.mark(7, AF_INET6)].dests == ()
        await kernel.del_dest(MARK, key)
        got = await kernel.service(MARK)
        assert got is not None and got.dests == ()

    async def test_delete_dest(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        a, b = DestKey.of("10.1.0.1", 80), DestKey.of("10.1.0.2", 80)
        await kernel.add_dest(V4, a, DestAttrs())
        await kernel.add_dest(V4, b, DestAttrs())
        await kernel.del_dest(V4, a)
        got = await kernel.service(V4)
        assert got is not None and [d.key for d in got.dests] == [b]

    async def test_apply_carries_out_planned_ops(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        await apply(kernel, AddDest(V4, DestKey.of("10.1.0.1", 80), DestAttrs(weight=4)))
        got = await kernel.service(V4)
        assert got is not None and [d.attrs.weight for d in got.dests] == [4]
        await apply(kernel, DelService(V4))
        assert await kernel.services() == []

    # --- the errno policy: EEXIST on add and ENOENT/ESRCH on delete are done ------------------------

    async def test_adding_an_existing_service_is_done_and_changes_nothing(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        await kernel.add_service(V4, ServiceAttrs("wrr"))
        got = await kernel.service(V4)
        assert got is not None and got.attrs == RR

    async def test_adding_an_existing_dest_is_done(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        key = DestKey.of("10.1.0.1", 80)
        await kernel.add_dest(V4, key, DestAttrs(weight=1))
        await kernel.add_dest(V4, key, DestAttrs(weight=2))
        got = await kernel.service(V4)
        assert got is not None and [d.attrs.weight for d in got.dests] == [1]

    async def test_deleting_what_is_gone_is_done(self, kernel: Kernel) -> None:
        await kernel.del_service(V4)  # ESRCH
        await kernel.del_dest(V4, DestKey.of("10.1.0.1", 80))  # ESRCH: no such service
        await kernel.add_service(V4, RR)
        await kernel.del_dest(V4, DestKey.of("10.1.0.1", 80))  # ENOENT: no such dest
        await kernel.stop_daemon(1)  # ESRCH: not running
        got = await kernel.service(V4)
        assert got is not None

    async def test_editing_a_missing_service_fails(self, kernel: Kernel) -> None:
        await expect_errno(errno.ESRCH, kernel.edit_service(V4, RR), "-E -t 10.0.0.1:80 -s rr")

    async def test_editing_a_missing_dest_fails(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        await expect_errno(errno.ENOENT, kernel.edit_dest(V4, DestKey.of("10.1.0.1", 80), DestAttrs()),
                           "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1")

    async def test_dest_on_a_missing_service_fails(self, kernel: Kernel) -> None:
        await expect_errno(errno.ESRCH, kernel.add_dest(MARK, DestKey.of("10.1.0.1", 0), DestAttrs()),
                           "-a -f 7 -r 10.1.0.1:0 -m -w 1")

    async def test_unknown_scheduler_or_pe_fails(self, kernel: Kernel) -> None:
        await expect_errno(errno.ENOENT, kernel.add_service(V4, ServiceAttrs("nosuch")), "-A -t 10.0.0.1:80 -s nosuch")
        bad_pe = ServiceAttrs("rr", flags=SvcFlag.PERSISTENT, timeout=10, pe_name="nope")
        await expect_errno(errno.ENOENT, kernel.add_service(V4, bad_pe), f"-A {V4} {bad_pe.notation(AF_INET)}")
        await kernel.add_service(V4, RR)
        await expect_errno(errno.ENOENT, kernel.edit_service(V4, ServiceAttrs("nosuch")), "-E -t 10.0.0.1:80 -s nosuch")

    async def test_v6_service_needs_a_prefix_length(self, kernel: Kernel) -> None:
        await expect_errno(errno.EINVAL, kernel.add_service(V6, ServiceAttrs("rr", netmask=0xFFFFFFFF)),
                           "-A -t [2001:db8::1]:80 -s rr")

    async def test_lower_threshold_above_upper_is_out_of_range(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        bad = DestAttrs(u_thresh=5, l_thresh=10)
        await expect_errno(errno.ERANGE, kernel.add_dest(V4, DestKey.of("10.1.0.1", 80), bad),
                           "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1 -x 5 -y 10")

    async def test_gue_needs_a_port(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        bad = DestAttrs(fwd=Fwd.TUNNEL, tun_type=TunType.GUE, tun_port=0)
        await expect_errno(errno.EINVAL, kernel.add_dest(V4, DestKey.of("10.1.0.1", 80), bad),
                           "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -i -w 1 --tun-type gue --tun-port 0")

    async def test_mixed_family_dest_must_tunnel(self, kernel: Kernel) -> None:
        await kernel.add_service(V6, RR6)
        await expect_errno(errno.EINVAL, kernel.add_dest(V6, DestKey.of("10.1.0.1", 80), DestAttrs(fwd=Fwd.MASQ)),
                           "-a -t [2001:db8::1]:80 -r 10.1.0.1:80 -m -w 1")

    # --- apply_many: many ops per request batch ------------------------------------------------------

    async def test_apply_many_carries_out_every_op_in_order(self, kernel: Kernel) -> None:
        svcs = [ServiceKey.inet(Proto.TCP, f"10.0.{i // 250}.{1 + i % 250}", 80) for i in range(120)]
        dests = [DestKey.of(f"10.1.0.{j}", 80) for j in range(1, 10)]
        ops: list[Op] = [AddService(s, RR) for s in svcs]
        ops += [AddDest(s, d, DestAttrs(weight=j)) for s in svcs for j, d in enumerate(dests, 1)]
        got = await kernel.apply_many(ops, [len(svcs)])
        assert got == Batch(applied=tuple(ops), sends=got.sends)
        assert got.sends >= 3  # at least the cut, and 1,080 dest adds do not fit one batch
        table = {s.key: s for s in await kernel.services()}
        assert sorted(table) == sorted(svcs)
        # the kernel lists dests newest first: they went in in the order given
        assert all([(d.key, d.attrs.weight) for d in s.dests] == [(d, j) for j, d in enumerate(dests, 1)][::-1]
                   for s in table.values())

    async def test_apply_many_goes_on_inside_a_batch_after_a_failure(self, kernel: Kernel) -> None:
        # A dest add on a missing service fails (ESRCH) alone: the kernel carries out the rest of its batch.
        a, b = DestKey.of("10.1.0.1", 80), DestKey.of("10.1.0.2", 80)
        ops: list[Op] = [AddService(V4, RR), AddDest(MARK, DestKey.of("10.1.0.1", 0), DestAttrs()),
                         AddDest(V4, a, DestAttrs()), AddDest(MARK, DestKey.of("10.1.0.2", 0), DestAttrs()),
                         AddDest(V4, b, DestAttrs())]
        got = await kernel.apply_many(ops)
        assert (got.applied, got.failed, got.later) == ((ops[0],), ops[1], (ops[2], ops[4]))
        assert _err(got) == (errno.ESRCH, "-a -f 7 -r 10.1.0.1:0 -m -w 1")
        assert [(e.errno, e.op) for e in got.later_errors] == [(errno.ESRCH, "-a -f 7 -r 10.1.0.2:0 -m -w 1")]
        assert [[d.key for d in s.dests] for s in await kernel.services()] == [[b, a]]

    async def test_apply_many_sends_nothing_after_a_cut_that_follows_a_failure(self, kernel: Kernel) -> None:
        ops: list[Op] = [AddService(V4, ServiceAttrs("nosuch")), AddService(MARK, RR),
                         AddDest(V4, DestKey.of("10.1.0.1", 80), DestAttrs()),
                         AddDest(MARK, DestKey.of("10.1.0.1", 0), DestAttrs())]
        got = await kernel.apply_many(ops, [2])  # the phases: service adds, then dest adds
        assert _err(got) == (errno.ENOENT, "-A -t 10.0.0.1:80 -s nosuch")
        assert (got.applied, got.failed, got.later, got.later_errors, got.sends) == ((), ops[0], (ops[1],), (), 1)
        assert [(s.key, s.dests) for s in await kernel.services()] == [(MARK, ())]

    async def test_apply_many_keeps_the_errno_policy(self, kernel: Kernel) -> None:
        d = DestKey.of("10.1.0.1", 80)
        ops: list[Op] = [AddService(V4, RR), AddService(V4, ServiceAttrs("wrr")),  # EEXIST on add: done
                         AddDest(V4, d, DestAttrs(weight=1)), AddDest(V4, d, DestAttrs(weight=2)),  # EEXIST: done
                         DelDest(V4, DestKey.of("10.1.0.9", 80)),  # ENOENT on delete: done
                         DelDest(MARK, d), DelService(MARK)]  # ESRCH on delete: done
        got = await kernel.apply_many(ops)
        assert got.ok and got.applied == tuple(ops)
        (svc,) = await kernel.services()
        assert svc.attrs == RR and [x.attrs.weight for x in svc.dests] == [1]
        bad = await kernel.apply_many([EditDest(V4, DestKey.of("10.1.0.9", 80), DestAttrs()), EditService(MARK, RR)])
        assert _err(bad) == (errno.ENOENT, "-e -t 10.0.0.1:80 -r 10.1.0.9:80 -m -w 1")
        assert [e.errno for e in bad.later_errors] == [errno.ESRCH]

    async def test_apply_many_of_nothing(self, kernel: Kernel) -> None:
        assert await kernel.apply_many([]) == Batch()

    # --- zero and flush --------------------------------------------------------------------------

    async def test_zero(self, kernel: Kernel) -> None:
        await kernel.add_service(V4, RR)
        await kernel.add_dest(V4, DestKey.of("10.1.0.1", 80), DestAttrs())
        await kernel.zero(V4)
        await kernel.zero()
        got = await kernel.service(V4)
        assert got is not None and got.stats.conns == 0 and got.dests[0].stats.inpkts == 0
        await expect_errno(errno.ESRCH, kernel.zero(MARK), "-Z -f 7")

    async def test_flush_removes_every_service(self, kernel: Kernel) -> None:
        for key, attrs in SERVICES.values():
            await kernel.add_service(key, attrs)
        await kernel.flush()
        assert await kernel.services() == []

    # --- timeouts and sync daemons ---------------------------------------------------------------

    async def test_timeouts(self, kernel: Kernel) -> None:
        assert await kernel.timeouts() == Timeouts(tcp=900, tcp_fin=120, udp=300)
        await kernel.set_timeouts(Timeouts(tcp=1000, tcp_fin=0, udp=0))  # 0 leaves a timeout unchanged
        assert await kernel.timeouts() == Timeouts(tcp=1000, tcp_fin=120, udp=300)
        await kernel.set_timeouts(Timeouts(tcp=0, tcp_fin=30, udp=45))
        assert await kernel.timeouts() == Timeouts(tcp=1000, tcp_fin=30, udp=45)
        await expect_errno(errno.EINVAL, kernel.set_timeouts(Timeouts(tcp=10_000_000)), "--set 10000000 0 0")

    async def test_sync_daemon_defaults(self, kernel: Kernel) -> None:
        await kernel.start_daemon(SyncDaemon(state=1, mcast_ifn=SYNC_IFN))
        assert await kernel.daemons() == [SyncDaemon(state=1, mcast_ifn=SYNC_IFN, syncid=0, sync_maxlen=1472,
                                                      mcast_group="224.0.0.81", mcast_port=8848, mcast_ttl=1)]
        await kernel.start_daemon(SyncDaemon(state=1, mcast_ifn=SYNC_IFN))  # EEXIST: done
        await kernel.stop_daemon(1)
        assert await kernel.daemons() == []

    async def test_sync_daemons_explicit(self, kernel: Kernel) -> None:
        backup = SyncDaemon(state=2, mcast_ifn=SYNC_IFN, syncid=9, sync_maxlen=1400, mcast_group="239.1.2.4",
                            mcast_port=9001, mcast_ttl=2)
        master = SyncDaemon(state=1, mcast_ifn=SYNC_IFN, syncid=7, sync_maxlen=1000, mcast_group="239.1.2.3",
                            mcast_port=9000, mcast_ttl=3)
        await kernel.start_daemon(backup)
        await kernel.start_daemon(master)
        assert await kernel.daemons() == [master, backup]
        await kernel.stop_daemon(2)
        assert await kernel.daemons() == [master]

    async def test_no_mixed_family_dests_while_syncing(self, kernel: Kernel) -> None:
        await kernel.start_daemon(SyncDaemon(state=1, mcast_ifn=SYNC_IFN))
        await kernel.add_service(V6, RR6)
        await expect_errno(errno.EINVAL, kernel.add_dest(V6, DestKey.of("10.1.0.1", 80), DestAttrs(fwd=Fwd.TUNNEL)),
                           "-a -t [2001:db8::1]:80 -r 10.1.0.1:80 -i -w 1")

    async def test_no_syncing_while_mixed_family_dests_exist(self, kernel: Kernel) -> None:
        await kernel.add_service(V6, RR6)
        await kernel.add_dest(V6, DestKey.of("10.1.0.1", 80), DestAttrs(fwd=Fwd.TUNNEL))
        await expect_errno(errno.EINVAL, kernel.start_daemon(SyncDaemon(state=1, mcast_ifn=SYNC_IFN)),
                           f"--start-daemon master --mcast-interface {SYNC_IFN} --syncid 0")
        assert await kernel.daemons() == []
