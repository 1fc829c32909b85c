"""The sync daemons' decisions (ipvsd.core.syncd), and a reconciler that carries them out on the fake kernel."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import pytest

from ipvsd.config.schema import Config, Sync
from ipvsd.core import syncd
from ipvsd.core.syncd import Owned
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import StartDaemon, StopDaemon, SyncDaemon
from ipvsd.shell import statefile
from ipvsd.shell.reconciler import Reconciler

SYNC = Sync(interface="eth0", syncid=5)
MASTER = SyncDaemon(state=1, mcast_ifn="eth0", syncid=5)
BACKUP = SyncDaemon(state=2, mcast_ifn="eth0", syncid=5)


def kernel_view(d: SyncDaemon, maxlen: int = 1472) -> SyncDaemon:
    """A daemon as the kernel reports it: defaults filled in."""
    return SyncDaemon(state=d.state, mcast_ifn=d.mcast_ifn, syncid=d.syncid, sync_maxlen=d.sync_maxlen or maxlen,
                      mcast_group=d.mcast_group or "224.0.0.81", mcast_port=d.mcast_port or 8848,
                      mcast_ttl=d.mcast_ttl or 1)


def actions(p: syncd.SyncPlan) -> list[tuple[str, int]]:
    return [(s.action, s.daemon.state) for s in p.steps]


def test_missing_daemons_start_and_ownership_is_recorded_before() -> None:
    p = syncd.decide(SYNC, [], {})
    assert p.ops == (StartDaemon(MASTER), StartDaemon(BACKUP))
    assert actions(p) == [("start", 1), ("start", 2)]
    assert p.owned == {1: Owned(MASTER), 2: Owned(BACKUP)}
    assert str(p.ops[0]) == "--start-daemon master --mcast-interface eth0 --syncid 5"


def test_matching_daemons_are_adopted_whatever_defaults_the_kernel_filled_in() -> None:
    p = syncd.decide(SYNC, [kernel_view(MASTER), kernel_view(BACKUP, 65507)], {})
    assert p.ops == ()
    assert actions(p) == [("adopt", 1), ("adopt", 2)]
    assert p.owned == {1: Owned(MASTER, adopted=True), 2: Owned(BACKUP, adopted=True)}
    assert "adopted" in p.steps[0].why
    # adopted once: the next pass has nothing to say
    again = syncd.decide(SYNC, [kernel_view(MASTER), kernel_view(BACKUP)], p.owned)
    assert again.steps == () and again.owned == p.owned


def test_a_daemon_that_disappears_is_repaired() -> None:
    owned = {1: Owned(MASTER), 2: Owned(BACKUP)}
    p = syncd.decide(SYNC, [kernel_view(MASTER)], owned)
    assert actions(p) == [("repair", 2)] and p.ops == (StartDaemon(BACKUP),)
    assert "disappeared" in p.steps[0].why


def test_a_daemon_that_differs_is_stopped_then_started_and_the_reason_names_the_difference() -> None:
    other = kernel_view(SyncDaemon(state=1, mcast_ifn="eth1", syncid=9))
    p = syncd.decide(Sync(interface="eth0", syncid=5, daemons="master"), [other], {})
    assert p.ops == (StopDaemon(1), StartDaemon(MASTER))
    assert actions(p) == [("replace", 1)]
    assert "interface eth1 -> eth0" in p.steps[0].why and "syncid 9 -> 5" in p.steps[0].why
    assert "not started by ipvsd" in p.steps[0].why


def test_explicit_settings_must_match_and_the_kernels_clamped_maxlen_of_our_own_daemon_is_accepted() -> None:
    sync = Sync(interface="eth0", syncid=5, daemons="master", port=9000, maxlen=9000)
    want = sync.wanted()[0]
    assert syncd.decide(sync, [kernel_view(MASTER)], {}).ops == (StopDaemon(1), StartDaemon(want))
    # the kernel clamps a master's maxlen to 1472: not replaced again once it is ours
    started = kernel_view(want, 1472)
    assert started.sync_maxlen == 9000 and syncd.matches(want, started)
    clamped = SyncDaemon(**{**started.__dict__, "sync_maxlen": 1472})
    p = syncd.decide(sync, [clamped], {1: Owned(want)})
    assert p.steps == ()
    # someone else's daemon with that maxlen is not ours: replaced
    assert actions(syncd.decide(sync, [clamped], {})) == [("replace", 1)]


def test_removing_sync_stops_only_what_ipvsd_owns_and_still_is_as_recorded() -> None:
    owned = {1: Owned(MASTER), 2: Owned(BACKUP)}
    moved = kernel_view(SyncDaemon(state=2, mcast_ifn="eth7", syncid=5))  # changed behind ipvsd's back
    p = syncd.decide(None, [kernel_view(MASTER), moved], owned)
    assert p.ops == (StopDaemon(1),)
    assert actions(p) == [("stop", 1), ("release", 2)]
    assert p.owned == {1: Owned(MASTER)}  # until the stop succeeded
    assert syncd.settled(p.owned, [p.steps[0]]) == {}


def test_narrowing_to_master_stops_the_owned_backup() -> None:
    owned = {1: Owned(MASTER), 2: Owned(BACKUP)}
    p = syncd.decide(Sync(interface="eth0", syncid=5, daemons="master"), [kernel_view(MASTER),
                                                                          kernel_view(BACKUP)], owned)
    assert p.ops == (StopDaemon(2),)


def test_daemons_ipvsd_does_not_own_and_the_config_does_not_name_are_never_touched() -> None:
    foreign = kernel_view(SyncDaemon(state=2, mcast_ifn="eth1", syncid=3))
    assert syncd.decide(None, [foreign], {}).steps == ()
    p = syncd.decide(Sync(interface="eth0", syncid=5, daemons="master"), [foreign], {})
    assert p.ops == (StartDaemon(MASTER),)


def test_external_owner_means_no_op_and_releases_what_ipvsd_owned() -> None:
    external = Sync(interface="eth0", syncid=5, owner="external")
    assert syncd.decide(external, [], {}).steps == ()
    p = syncd.decide(external, [kernel_view(SyncDaemon(state=1, mcast_ifn="eth1", syncid=1))],
                     {1: Owned(MASTER)})
    assert p.ops == () and p.owned == {} and actions(p) == [("release", 1)]


def test_ownership_survives_in_the_state_file_and_old_files_load(tmp_path: Path) -> None:
    from ipvsd.core.decide import Memory

    path = tmp_path / "state.json"
    full = Memory(daemons={1: Owned(MASTER, adopted=True), 2: Owned(SYNC.wanted()[1])})
    statefile.save(path, full)
    assert statefile.load(path) == full
    path.write_text('{"version": 1, "owned": [], "drains": [], "maintenance": [], "quorum": []}')
    assert statefile.load(path).daemons == {}


# --- the reconciler carries them out -----------------------------------------------------------------------


def reconciler(tmp_path: Path, kernel: FakeKernel) -> Reconciler:
    r = Reconciler(kernel, tmp_path / "state.json", wall=lambda: 1000.0, mono=lambda: 0.0)
    r.load_state()
    return r


def config(sync: Sync | None) -> Config:
    return Config(sync=sync)


def test_reconciler_starts_repairs_at_the_next_read_and_stops_on_removal(tmp_path: Path) -> None:
    kernel = FakeKernel()
    r = reconciler(tmp_path, kernel)

    async def go() -> None:
        out = await r.reconcile(config(SYNC), {})
        assert out.sync is not None and [s.action for s in out.sync.done] == ["start", "start"]
        assert [d.state for d in await kernel.daemons()] == [1, 2]
        assert set(statefile.load(tmp_path / "state.json").daemons) == {1, 2}
        kernel.lose_daemon(2)  # ipvsadm --stop-daemon backup
        out = await r.reconcile(config(SYNC), {}, fresh=False)  # the mirror does not know yet
        assert out.sync is not None and out.sync.done == ()
        out = await r.reconcile(config(SYNC), {}, fresh=True)
        assert out.sync is not None and [s.action for s in out.sync.done] == ["repair"]
        assert [d.state for d in await kernel.daemons()] == [1, 2]
        out = await r.reconcile(config(None), {}, fresh=False)  # a reload removing [sync]: no need to wait
        assert out.sync is not None and [s.action for s in out.sync.done] == ["stop", "stop"]
        assert await kernel.daemons() == []
        assert statefile.load(tmp_path / "state.json").daemons == {}

    asyncio.run(go())


def test_a_missing_interface_is_said_once_retried_at_resync_and_the_table_is_still_managed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ipvsd.config.schema import RealServer, VirtualService

    kernel = FakeKernel()
    r = reconciler(tmp_path, kernel)
    cfg = Config(sync=Sync(interface="eth9", syncid=5),
                 services=(VirtualService(address="10.0.0.1", port=80, protocol="tcp",
                                          reals=(RealServer(address="10.0.1.1", port=80),)),))

    async def go() -> None:
        for fresh in (True, False, False, True, True):
            out = await r.reconcile(cfg, {}, fresh=fresh)
            assert out.error is None
        assert [s.key.addr for s in await kernel.services()] == ["10.0.0.1"]
        assert await kernel.daemons() == []
        starts = [op for op in kernel.log if op.startswith("--start-daemon")]
        assert len(starts) == 0  # ENODEV is refused before anything reaches the table
        assert r.sync_errors[1].startswith("cannot start the master sync daemon on eth9 (syncid 5)")
        kernel.interfaces["eth9"] = 1500  # the interface appears: the next resync starts the daemons
        out = await r.reconcile(cfg, {}, fresh=True)
        assert out.sync is not None and [s.action for s in out.sync.done] == ["start", "start"]
        assert r.sync_errors == {}

    attempts: list[str] = []
    kernel.fail = lambda op: attempts.append(op) or None  # type: ignore[func-returns-value]
    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    # tried at each fresh pass only (3 reads, 2 daemons each, the last one succeeding), never on mirror passes
    assert len([a for a in attempts if a.startswith("--start-daemon")]) == 8
    errors = [x.getMessage() for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 2, errors  # once per daemon, not once per attempt
    assert "No such device (ENODEV)" in errors[0] and "is there an interface eth9?" in errors[0]
    assert any("master sync daemon on eth9 (syncid 5) started" in x.getMessage() for x in caplog.records)


def test_clean_stop_stops_the_owned_daemons_and_leaves_a_foreign_one(tmp_path: Path) -> None:
    kernel = FakeKernel()
    r = reconciler(tmp_path, kernel)

    async def go() -> None:
        await r.reconcile(config(Sync(interface="eth0", syncid=5, daemons="master")), {})
        await kernel.start_daemon(SyncDaemon(state=2, mcast_ifn="lo", syncid=7))  # by hand
        done = await r.stop_daemons()
        assert [s.action for s in done] == ["stop"]
        assert [(d.state, d.mcast_ifn) for d in await kernel.daemons()] == [(2, "lo")]
        assert r.memory.daemons == {}

    asyncio.run(go())


def test_unreadable_daemons_are_said_once_and_the_table_goes_on(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel()
    kernel.fail = lambda op: errno.EPERM if op == "-L --daemon" else None
    r = reconciler(tmp_path, kernel)

    async def go() -> None:
        for _ in range(3):
            out = await r.reconcile(config(SYNC), {})
            assert out.sync is None and out.error is None

    asyncio.run(go())
    errors = [x.getMessage() for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot read the connection-sync daemons" in errors[0]


def test_lvs_timeouts_set_what_differs_and_nothing_when_the_kernel_has_them(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from ipvsd.config.schema import LvsTimeouts
    from ipvsd.core.decide import timeouts
    from ipvsd.model import SetTimeouts, Timeouts

    assert timeouts(None, Timeouts(900, 120, 300)) is None
    assert timeouts(LvsTimeouts(tcp=900, udp=60), Timeouts(900, 120, 300)) == SetTimeouts(Timeouts(0, 0, 60))
    assert timeouts(LvsTimeouts(tcp=900), Timeouts(900, 120, 300)) is None
    kernel = FakeKernel()
    r = reconciler(tmp_path, kernel)

    async def go() -> None:
        with caplog.at_level(logging.INFO):
            assert str(await r.set_timeouts(LvsTimeouts(tcp=1000, tcp_fin=30))) == "--set 1000 30 0"
            assert await r.set_timeouts(LvsTimeouts(tcp=1000, tcp_fin=30)) is None  # a reload: nothing to write
        assert await kernel.timeouts() == Timeouts(1000, 30, 300)

    asyncio.run(go())
    assert kernel.log == ["--set 1000 30 0"]
    assert "IPVS connection timeouts: tcp 900 -> 1000, tcpfin 120 -> 30" in caplog.text
