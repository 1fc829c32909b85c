"""Seed 000's two-node ssh cluster on a real kernel, from the samples in etc/seed000/: ssh to the VIP alternates
between the nodes, each node's own address reaches itself, and the survivor of a crash keeps the VIP and its
sessions. Figures are printed as `FIGURE ...` lines (`pytest -s`).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.kernel.lab import wait_until
from tests.kernel.seed000 import VIP, Cluster, Session, banner
from tests.netns import running

NEW_SESSION = 5.0  # the budget for a new session after the crash
TCG_MARGIN = 1.5  # the lab's emulated CPU
BOTH = {"192.168.2.230:22": 1, "192.168.2.231:22": 1}


def figure(text: str) -> None:
    print(f"FIGURE seed000: {text}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Cluster(root=tmp_path_factory.mktemp("seed000")), figure,
                       "two nodes up (sshd, keepalived, ipvsd)")


def test_vip_alternates_and_own_addresses_reach_themselves(cluster: Cluster) -> None:
    served = [banner(VIP) for _ in range(20)]
    counts = Counter(served)
    figure(f"20 new connections to the VIP: {dict(sorted(counts.items()))}")
    assert counts == {"ha0": 10, "ha1": 10}, served
    assert all(a != b for a, b in itertools.pairwise(served)), served  # rr, no persistence: strictly alternating
    assert banner("192.168.2.230") == "ha0" and banner("192.168.2.231") == "ha1"


def test_crash_of_the_vip_holder_and_its_return(cluster: Cluster) -> None:
    holder = cluster.holder()
    survivor = cluster.other(holder)
    sessions: list[Session] = []
    try:
        # The survivor's own sessions: one reached through the VIP (balanced by the holder, served by the
        # survivor), one to its own address. rr alternates: after a connection the holder served, the next
        # login through the VIP goes to the survivor (a banner costs far less than a login).
        wait_until(lambda: banner(VIP) == holder.name, timeout=10, what="a connection served by the holder")
        sessions += [cluster.session(VIP), cluster.session(survivor.addr)]
        own = [s for s in sessions if s.node == survivor.name]
        assert len(own) == 2 and all(s.alive() for s in own), [(s.addr, s.node) for s in sessions]

        crashed = time.monotonic()
        holder.crash()
        took, node = cluster.first_banner(crashed, timeout=20)
        figure(f"{holder.name} (VIP holder) crashed: first new connection {took:.2f}s later, served by {node} "
               f"(budget {NEW_SESSION}s + {TCG_MARGIN}s for the emulated CPU)")
        assert node == survivor.name and took <= NEW_SESSION + TCG_MARGIN, cluster.diagnostics()
        assert survivor.holds()
        wait_until(lambda: survivor.weights() == {f"{survivor.addr}:22": 1}, timeout=10,
                   what=f"{survivor.name}'s ipvsd to remove the crashed node")
        removed = time.monotonic() - crashed
        assert {banner(VIP) for _ in range(4)} == {survivor.name}
        assert all(s.alive() for s in own), "the survivor's sessions were touched"
        figure(f"survivor {survivor.name}: its 2 sessions untouched, {holder.name} out of its table "
               f"{removed:.2f}s after the crash, new sessions all on {survivor.name}")
        during = cluster.session(VIP)
        sessions.append(during)
        assert during.node == survivor.name

        # The crashed node returns: nopreempt leaves the VIP where it is, nothing is lost, rr over both again
        back = time.monotonic()
        holder.restore()
        wait_until(lambda: survivor.weights() == BOTH and holder.weights() == BOTH, timeout=30,
                   what="both nodes in both tables again")
        figure(f"{holder.name} back: both nodes in both tables {time.monotonic() - back:.2f}s after its link came up")
        assert all(s.alive() for s in [*own, during]), "a session was lost when the crashed node returned"
        assert survivor.holds() and not holder.holds()
        assert Counter(banner(VIP) for _ in range(4)) == {"ha0": 2, "ha1": 2}
    except BaseException:
        print(cluster.diagnostics())
        raise
    finally:
        for s in sessions:
            s.close()
        holder.restore()
