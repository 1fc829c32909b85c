"""Issue 17's acceptance on a real kernel: three directors announce one VIP over BGP to an ECMP router (the samples in
etc/scaleout/, tests/kernel/scaleout.py), and flows keep their real server when the router moves them between
directors (mh, sloppy_tcp), except with a scheduler that does not agree across directors (rr).

The figures (times, counts) are printed as `FIGURE scaleout: ...` lines (`pytest -s`). One topology serves the
module; each test opens its own long-lived flows (fresh ports, so each has one director's connection entry at the
start) and leaves the three directors serving and announced.
"""

from __future__ import annotations

import re
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.kernel.lab import wait_until
from tests.kernel.scaleout import (
    CHECK,
    HOLD_TIME,
    PORT,
    SAMPLES,
    WITHDRAW_DELAY,
    Director,
    Flow,
    Flows,
    NewConnections,
    ScaleOut,
    timed,
    with_scheduler,
)
from tests.netns import running

FLOWS = 50  # long-lived connections per test
RR_FLOWS = 150  # the rr control's: about half move, 2/3 of those break by chance alone, and ~75 keep a
# share under a half more than 3 standard deviations away (0.1 %); ~45 (90 flows) were 2 away and failed once
RR_PERIOD = 1.0  # the rr control probes its 150 flows every second, fewer requests than 90 every 0.5 s
NEW = 300  # new connections spread over the directors
SHARE = 0.15  # each director's least share of them (a third, give or take the hash)
ANNOUNCE_BUDGET = 5.0  # the issue's: three next hops within 5 s of the directors serving
CHECK_BUDGET = CHECK.fall * CHECK.interval + 1.0  # the issue's: route gone within fall x interval + 1 s
TCG_MARGIN = 1.0  # the lab's emulated CPU: a pass, a BIRD update and the test's own polling run 20-30x slower
SURVIVE = 0.95  # the target for a director crash with mh and sloppy_tcp
RR_BROKEN = 0.5  # with rr, more than half of the moved flows must break (60-83 % measured, 150 flows)


def figure(text: str) -> None:
    print(f"FIGURE scaleout: {text}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    yield from running(ScaleOut(root=tmp_path_factory.mktemp("scaleout")), figure,
                       "topology up (BIRD x4, nginx x3, ipvsd x3)")


@pytest.fixture(autouse=True)
def diagnostics(lab: ScaleOut, request: pytest.FixtureRequest) -> Iterator[None]:
    """The daemons' logs after a test that failed (the session counts a failure before the teardown runs)."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        print(lab.diagnostics())


def moved(flows: Flows, first: dict[str, list[Flow]], lab: ScaleOut) -> list[Flow]:
    """The flows with a connection entry on another director than their first: the router moved them (an entry
    stays where it was, so a flow that moved has two)."""
    now = {d.name: set(d.ports()) for d in lab.directors}
    home = {f.port: name for name, fs in first.items() for f in fs}
    return [f for f in flows.flows if any(f.port in ports for name, ports in now.items() if name != home[f.port])]


def spread(first: dict[str, list[Flow]]) -> str:
    return ", ".join(f"{name.removeprefix('so-')} {len(fs)}" for name, fs in first.items())


def worst_gap(flows: list[Flow], since: float) -> tuple[float, float]:
    """(longest, median) of each flow's longest wait between two answers after `since`."""
    gaps = [f.longest_gap(since) for f in flows] or [0.0]
    return max(gaps), statistics.median(gaps)


def test_three_next_hops_and_new_connections_spread(lab: ScaleOut) -> None:
    f = lab.figures
    tables = max(f[f"{d.name} table"] for d in lab.directors)
    routes = max(f[f"{d.name} route"] for d in lab.directors)
    hops = f["router 3 next hops"]
    figure(f"after the ipvsd starts: every table full at {tables:.1f}s, every route in table 200 at {routes:.1f}s "
           f"(" + ", ".join(f"{d.name.removeprefix('so-')} {f[f'{d.name} route']:.1f}s" for d in lab.directors)
           + f"), three next hops on the router at {hops:.1f}s: {hops - routes:.2f}s after the last director "
           f"announced (budget {ANNOUNCE_BUDGET}s)")
    assert hops - routes <= ANNOUNCE_BUDGET

    t0 = time.monotonic()
    done = lab.new_connections(NEW)  # one failure raises
    took = time.monotonic() - t0
    # each connection has its entry (TIME_WAIT now, for 2 minutes) on the director that scheduled it: an exact count,
    # where the IPVS counters (ipvsadm --stats) are refreshed by the kernel's estimator only every 2 s
    ports = {port for port, _ in done}
    counts = {d.name: len(ports & set(d.ports())) for d in lab.directors}
    reals = Counter(page for _, page in done)
    figure(f"{NEW} new connections in {took:.1f}s, 0 failed: per director "
           + ", ".join(f"{n.removeprefix('so-')} {c} ({c / NEW:.0%})" for n, c in counts.items())
           + "; per real " + ", ".join(f"{r} {c}" for r, c in sorted(reals.items())))
    assert sum(counts.values()) == NEW  # each on exactly one director
    assert min(counts.values()) >= SHARE * NEW, counts


def test_director_blind_to_the_reals_withdraws_and_no_flow_breaks(lab: ScaleOut) -> None:
    d1 = lab.directors[0]
    flows = Flows(FLOWS)
    news = NewConnections()
    blinded = False
    try:
        first = flows.by_director(lab.directors)
        news.start()
        wait_until(lambda: news.ok >= 5, timeout=30, what="new connections to flow")
        d1.blind(True)
        blinded = True
        t0 = time.monotonic()  # the rule is in force: every check from d1 gets a reset from now on
        got = timed({"table": lambda: not d1.announces(), "router": lambda: d1.addr not in lab.next_hops()},
                    since=t0, timeout=30, what=f"{d1.name}'s route to go")
        gone = t0 + got["router"]
        wait_until(lambda: flows.settled(gone), timeout=40, what="every flow to answer twice after the change")
        ok_then = news.ok
        wait_until(lambda: news.ok >= ok_then + 10, timeout=30, what="new connections after the change")
        news.stop()
        # the grace after the withdrawal ends: d1 quiesces its reals, or its blast-radius guard refuses to
        wait_until(lambda: set(d1.weights().values()) == {0} or "refused" in d1.ipvsd.log(),
                   timeout=WITHDRAW_DELAY + 10, what=f"{d1.name} to quiesce its reals or refuse to")
        weights = d1.weights()
        shifted = moved(flows, first, lab)
        longest, median = worst_gap(first[d1.name], t0)
        figure(f"{d1.name} blind to the reals: its route off table 200 after {got['table']:.2f}s, off the router "
               f"after {got['router']:.2f}s (budget fall x interval + 1 = {CHECK_BUDGET:.0f}s)")
        figure(f"{d1.name} blind: {len(flows.broken())}/{FLOWS} long-lived flows broken ({spread(first)} at the "
               f"start; {len(shifted)} moved to another director); its flows' longest gap {longest:.2f}s "
               f"(median {median:.2f}s); new connections {news.ok} ok, {len(news.failed)} failed; "
               f"{d1.name}'s weights {withdraw_delay_later(weights)}")
        assert got["table"] <= CHECK_BUDGET and got["router"] <= CHECK_BUDGET, got
        assert not flows.broken(), [(f.port, f.real, f.error) for f in flows.broken()]
        assert not news.failed, news.failed[:5]
    finally:
        news.stop()
        flows.close()
        if blinded:
            d1.blind(False)
        lab.restored()


def withdraw_delay_later(weights: dict[str, int]) -> str:
    """How the blinded director's weights stand once its grace ran out: quiesced, or kept (the guard refused)."""
    values = set(weights.values())
    return ("all 0 (quiesced after withdraw_delay)" if values == {0} else
            f"kept at {sorted(values)} (not quiesced: the blast-radius guard refuses every real at once)")


def test_director_drain_withdraws_first_then_drains(lab: ScaleOut) -> None:
    d2 = lab.directors[1]
    flows = Flows(FLOWS)
    drained = False
    try:
        first = flows.by_director(lab.directors)
        t0 = time.monotonic()
        said = d2.drain(True)
        drained = True
        got = timed({"table": lambda: not d2.announces(), "router": lambda: d2.addr not in lab.next_hops()},
                    since=t0, timeout=30, what=f"{d2.name}'s route to go")
        try:
            # drained as `ipvsd drain` drains a real: weight 0, deleted when drain_timeout (0 here) runs out; the
            # service stays. Every real at once: the operator's drain is not held back by the blast-radius guard.
            zero: float | None = timed({"0": lambda: d2.scheduler() == "mh"
                                        and set(d2.weights().values()) <= {0}}, since=t0,
                                       timeout=WITHDRAW_DELAY + 5 + TCG_MARGIN, what=f"{d2.name}'s weights 0")["0"]
        except AssertionError:
            zero = None
        gone = t0 + got["router"]
        wait_until(lambda: flows.settled(gone), timeout=40, what="every flow to answer twice after the change")
        shifted = moved(flows, first, lab)
        longest, median = worst_gap(first[d2.name], t0)
        figure(f"{d2.name} drained (ipvsd drain --director): route off table 200 after {got['table']:.2f}s, off "
               f"the router after {got['router']:.2f}s; weights 0 "
               + (f"after {zero:.2f}s" if zero is not None else f"never (weights {d2.weights()})")
               + f" (withdraw_delay {WITHDRAW_DELAY:.0f}s); the command said: {said.strip()!r}")
        figure(f"{d2.name} drained: {len(flows.broken(first[d2.name]))}/{len(first[d2.name])} of its long-lived "
               f"flows broken, {len(flows.broken())}/{FLOWS} in all ({len(shifted)} moved); its flows' longest gap "
               f"{longest:.2f}s (median {median:.2f}s)")
        assert got["router"] < WITHDRAW_DELAY, got  # the route goes first
        assert not flows.broken(), [(f.port, f.real, f.error) for f in flows.broken()]
        assert zero is not None, (d2.weights(), re.findall(r"^.*refused.*$", d2.ipvsd.log(), re.M))
        assert WITHDRAW_DELAY - 0.5 <= zero <= WITHDRAW_DELAY + CHECK_BUDGET + TCG_MARGIN, zero
    finally:
        flows.close()
        if drained:
            d2.drain(False)
        lab.restored()


def test_real_fails_only_its_flows_end(lab: ScaleOut) -> None:
    victim = lab.real("so-rs2")
    name = victim.name.removeprefix("so-")
    flows = Flows(FLOWS)
    news = NewConnections()
    try:
        first = flows.by_director(lab.directors)
        others = [f for f in flows.flows if f.real != name]
        news.start()
        wait_until(lambda: news.ok >= 5, timeout=30, what="new connections to flow")
        t0 = time.monotonic()
        victim.stop(signal.SIGKILL)
        dest = f"{victim.addr}:{PORT}"
        got = timed({d.name: lambda d=d: d.weights().get(dest) == 0 for d in lab.directors}, since=t0,
                    timeout=30, what=f"every director to quiesce {name}")
        settled = time.monotonic()
        wait_until(lambda: flows.settled(settled, others), timeout=40, what="the other reals' flows to answer")
        news.stop()
        hops = lab.next_hops()
        mine = [f for f in flows.flows if f.real == name]
        figure(f"{name} killed: quiesced by " + ", ".join(f"{n.removeprefix('so-')} after {t:.2f}s"
                                                         for n, t in got.items())
               + f" (budget {CHECK_BUDGET:.0f}s + {TCG_MARGIN:.0f}s for the emulated CPU)")
        figure(f"{name} killed: {len(flows.broken(others))}/{len(others)} flows of the other reals broken "
               f"(directors at the start: {spread(first)}); {len(flows.broken(mine))}/{len(mine)} of {name}'s own "
               f"ended; new connections {news.ok} ok, {len(news.failed)} failed (before the quiesce: its share goes "
               f"to a dead server until then); next hops {len(hops)}")
        assert not flows.broken(others), [(f.port, f.real, f.error) for f in flows.broken(others)]
        assert max(got.values()) <= CHECK_BUDGET + TCG_MARGIN, got
        assert len(hops) == len(lab.directors)  # two reals up: quorum, every director still announces
    finally:
        news.stop()
        flows.close()
        victim.start()
        lab.restored()


def crash(lab: ScaleOut, d: Director, flows: Flows, scheduler: str) -> tuple[dict[str, list[Flow]], list[Flow],
                                                                              float, float]:
    """Pull `d`'s cable, wait for the router to drop it and the flows to settle; return where the flows were, those
    that moved, the time the router took and the crash time."""
    first = flows.by_director(lab.directors)
    t0 = time.monotonic()
    lab.cable(d, False)
    got = timed({"router": lambda: d.addr not in lab.next_hops()}, since=t0, timeout=HOLD_TIME + 30,
                what=f"the router to drop {d.name}")
    gone = t0 + got["router"]
    wait_until(lambda: flows.settled(gone), timeout=60, what=f"every {scheduler} flow to answer or break")
    return first, moved(flows, first, lab), got["router"], t0


def test_director_crash_flows_survive_with_mh(lab: ScaleOut) -> None:
    d3 = lab.directors[2]
    flows: Flows | None = None
    try:
        flows = Flows(FLOWS)
        first, shifted, took, t0 = crash(lab, d3, flows, "mh")
        survived = FLOWS - len(flows.broken())
        longest, median = worst_gap(first[d3.name], t0)
        figure(f"{d3.name} crash (cable pulled), mh: off the router after {took:.2f}s (hold time {HOLD_TIME:.0f}s); "
               f"{survived}/{FLOWS} long-lived flows survived ({survived / FLOWS:.0%}; {spread(first)} at the start, "
               f"{len(shifted)} moved, {len(flows.broken(shifted))} of those broken); {d3.name}'s flows' gap "
               f"longest {longest:.2f}s, median {median:.2f}s")
        assert took <= HOLD_TIME + TCG_MARGIN, took
        assert survived >= SURVIVE * FLOWS, [(f.port, f.real, f.error) for f in flows.broken()]
    finally:
        if flows is not None:
            flows.close()
        lab.cable(d3, True)
        lab.restored()


def test_director_crash_breaks_moved_flows_with_rr(lab: ScaleOut) -> None:
    """The control: the same crash with rr, a scheduler each director runs on its own, breaks most moved flows."""
    d3 = lab.directors[2]
    sample = (SAMPLES / "ipvsd.toml").read_text()
    flows: Flows | None = None
    try:
        for d in lab.directors:
            d.set_config(with_scheduler(sample, "rr"))
        for d in lab.directors:
            wait_until(lambda d=d: d.scheduler() == "rr", timeout=60, what=f"{d.name} to switch to rr")
        flows = Flows(RR_FLOWS, period=RR_PERIOD)
        first, shifted, took, _ = crash(lab, d3, flows, "rr")
        broken = flows.broken(shifted)
        share = len(broken) / len(shifted) if shifted else 0.0
        stayed = [f for f in flows.flows if f not in shifted]
        figure(f"{d3.name} crash, rr: off the router after {took:.2f}s; {len(broken)}/{len(shifted)} moved flows "
               f"broken ({share:.0%}; {spread(first)} at the start); {len(flows.broken(stayed))}/{len(stayed)} of "
               f"those that stayed broken")
        assert share > RR_BROKEN, (len(broken), len(shifted))
    finally:
        if flows is not None:
            flows.close()
        lab.cable(d3, True)
        for d in lab.directors:
            d.set_config(sample)
        for d in lab.directors:
            wait_until(lambda d=d: d.scheduler() == "mh", timeout=60, what=f"{d.name} back to mh")
        lab.restored()
