"""Seed 003's director pair on a real kernel: keepalived --vrrp moves the VIPs, ipvsd runs the table and the
connection sync on both directors, and established connections survive a director's power cut.

The figures (longest gap, time to a new connection, drain time) are printed as `FIGURE ...` lines (`pytest -s`).
One topology serves the module; each test leaves both directors up and serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.kernel.lab import RealHost, wait_until
from tests.kernel.pair import VIP, Director, KeepAlive, Pair, first_new_connection
from tests.netns import running

RS1, RS2 = "10.2.1.242:80", "10.2.1.243:80"
TAKEOVER = 3 * 1 + (256 - 95) / 256  # VRRPv2 Master_Down_Interval of the backup: 3 x advert_int + skew, 3.63 s
NEW_CONNECTION = 5.0  # the budget for a new connection after the crash
TCG_MARGIN = 1.5  # the lab's emulated CPU: keepalived, the client's retries and ARP all run 20-30x slower
DRAIN = 2 + 1 + 2  # sample timing: interval 2, retry_delay 1 (fall 2), plus a 2 s allowance for the emulated CPU


def figure(text: str) -> None:
    print(f"FIGURE pair: {text}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from running(Pair(root=tmp_path_factory.mktemp("pair")), figure,
                       "topology up (keepalived, ipvsd, nginx)")


def short(real: RealHost) -> str:
    """rs1 for namespace ha-rs1: the name its page carries."""
    return real.name.removeprefix("ha-")


def backup_state_entries(d: Director) -> int:
    return d.keepalived.log().count("Entering BACKUP STATE")


def test_both_directors_same_table_and_sync_daemons(pair: Pair) -> None:
    assert pair.lb1.table() == pair.lb2.table() == {f"TCP {VIP}:80": {RS1: 1, RS2: 1}}
    both = [("backup", "ens4", 1), ("master", "ens4", 1)]
    assert pair.lb1.daemons() == pair.lb2.daemons() == both
    for d in pair.directors:  # ipvsd started them, from the sample's [sync]
        for role in ("master", "backup"):
            d.ipvsd.wait_log(rf"{role} sync daemon on ens4 \(syncid 1\) started", timeout=5)
    assert pair.holder() is pair.lb1 and not pair.lb2.holds()


def test_failover_and_return_keep_established_connections(pair: Pair) -> None:
    master = pair.holder()
    backup = pair.other(master)
    c1 = pair.keepalive()
    c2: KeepAlive | None = None
    try:
        # 1. a keep-alive connection open >= 3 s, its entry already synced to the backup
        entry = wait_until(lambda: time.monotonic() - c1.opened >= 3 and pair.entry(backup, c1), timeout=30,
                           what="the long-lived connection's entry on the backup")
        figure(f"backup {backup.name} shows 10.2.0.1:{c1.port} {entry}, "
               f"{time.monotonic() - c1.opened:.1f}s after it opened")

        # 2. power cut on the master: the connection goes on, a new one gets through
        crashed = time.monotonic()
        master.crash()
        took, page = first_new_connection("ha-client", VIP, crashed, timeout=20)
        c1.wait_answers_since(crashed, 10, timeout=30)
        assert backup.holds() and c1.failed == 0
        figure(f"{master.name} power cut: 0 failed requests on the long-lived connection "
               f"({len(c1.answers)} answered), longest gap {c1.longest_gap():.2f}s (VRRP takeover {TAKEOVER:.2f}s)")
        figure(f"first new connection {took:.2f}s after the crash (budget {NEW_CONNECTION}s + "
               f"{TCG_MARGIN}s for the emulated CPU), served by {page}")
        assert took <= NEW_CONNECTION + TCG_MARGIN, pair.diagnostics()

        # 3. a connection made while the old master is away; the old master returns and stays backup (nopreempt)
        c2 = pair.keepalive()
        c1.close()
        returned = backup_state_entries(master)
        back = time.monotonic()
        master.restore()
        wait_until(lambda: backup_state_entries(master) > returned, timeout=30,
                   what=f"{master.name}'s keepalived back in BACKUP")
        entry = wait_until(lambda: pair.entry(master, c2), timeout=30,
                           what=f"the new connection's entry synced to the returned {master.name}")
        figure(f"returned {master.name} stays BACKUP (nopreempt) and shows 10.2.0.1:{c2.port} {entry} "
               f"{time.monotonic() - back:.1f}s after its links came back")
        assert backup.holds() and not master.holds() and c2.failed == 0

        # 4. a real fails while the backup holds the VIP: its ipvsd drains it (so does the other's)
        victim = next(r for r in pair.reals if c2.real != f"debian11-{short(r)}")
        kept = next(r for r in pair.reals if r is not victim)
        gone, survivor = f"{victim.addr}:80", f"{kept.addr}:80"
        failed = time.monotonic()
        victim.stop()
        for d in (backup, master):
            wait_until(lambda d=d: d.weights() == {survivor: 1, gone: 0}, timeout=DRAIN,
                       what=f"{d.name} to quiesce {gone}")
            figure(f"{short(victim)} stopped: quiesced in {d.name}'s table after {time.monotonic() - failed:.2f}s "
                   f"(budget {DRAIN}s)")
        served = {pair.get() for _ in range(4)}
        assert served == {f"debian11-{short(kept)}"}, served
        victim.start()
        for d in (backup, master):
            wait_until(lambda d=d: d.weights() == {RS1: 1, RS2: 1}, timeout=DRAIN, what=f"{gone} back in {d.name}")

        # 5. the connection made while the old master was away survives a failover back to it
        crashed = time.monotonic()
        backup.crash()
        c2.wait_answers_since(crashed, 10, timeout=30)
        assert master.holds() and c2.failed == 0
        figure(f"{backup.name} power cut, back to {master.name}: 0 failed requests on the connection made while "
               f"{master.name} was away ({len(c2.answers)} answered), longest gap {c2.longest_gap(crashed):.2f}s")
        returned = backup_state_entries(backup)
        backup.restore()
        wait_until(lambda: backup_state_entries(backup) > returned, timeout=30,
                   what=f"{backup.name}'s keepalived back in BACKUP")
        c2.wait_answers_since(time.monotonic(), 5, timeout=30)
        assert master.holds() and c2.failed == 0
    except BaseException:
        print(pair.diagnostics())
        raise
    finally:
        c1.close()
        if c2 is not None:
            c2.close()
        for d in pair.directors:
            d.restore()


def test_failover_without_sync_breaks_the_connection(pair: Pair) -> None:
    """The same power cut with no sync daemons: the new master has no entry and resets the connection."""
    for d in pair.directors:
        d.set_sync(False)
    for d in pair.directors:
        wait_until(lambda d=d: d.daemons() == [], timeout=30, what=f"{d.name}'s sync daemons stopped")
    master = pair.holder()
    backup = pair.other(master)
    conn = pair.keepalive()
    try:
        conn.wait_answers_since(conn.opened, 5, timeout=30)
        assert pair.entry(backup, conn) is None
        crashed = time.monotonic()
        master.crash()
        wait_until(lambda: conn.error is not None, timeout=30, what="the unsynced connection to break")
        assert conn.failed_at is not None
        figure(f"without sync: the connection broke {conn.failed_at - crashed:.2f}s after {master.name}'s power cut "
               f"({conn.error!r})")
        assert backup.holds()
    finally:
        conn.close()
        master.restore()
        for d in pair.directors:
            d.set_sync(True)
    for d in pair.directors:
        wait_until(lambda d=d: len(d.daemons()) == 2, timeout=30, what=f"{d.name}'s sync daemons back")
