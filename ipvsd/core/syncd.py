"""Connection-sync daemons, level-triggered: the config's `[sync]`, the daemons the kernel runs and what ipvsd
owns -> the steps of one pass (adopt, start, repair, replace, stop, release), each with its ops and its reason.

Pure. The kernel runs at most one master (state 1) and one backup (state 2) daemon per network namespace, so a
daemon is known by its state. `Owned` records the daemon ipvsd started or adopted for a state, as the config
asked for it (zeros and "" are the kernel's defaults), and whether it was found running (adopted).

Rules
-----
Rule 1: `owner = "external"`: no op, ever; whatever ipvsd owned is released untouched (keepalived or an operator
        runs the daemons now).
Rule 2: a wanted daemon matches an observed one of its state when interface and syncid are equal and each of
        group, port, ttl and maxlen is either left to the kernel (0, None) or equal. The kernel clamps an
        explicit maxlen into the range it accepts (ip_vs_sync.c: at least 1024 for a backup), so a daemon
        ipvsd owns for exactly this wanted daemon matches whatever maxlen the kernel chose (else a clamped
        maxlen would be replaced at every pass).
Rule 3: wanted and a match runs: adopt it when ipvsd does not own it yet (no op), else nothing.
Rule 4: wanted and none of its state runs: start it (a *repair* when ipvsd owned it: it disappeared).
Rule 5: wanted and a different daemon of its state runs: stop it, then start the wanted one (*replace*). The
        config names that state, so ipvsd takes it over, as keepalived's checker stops leftover daemons.
Rule 6: owned and no longer wanted (`[sync]` removed, `daemons` narrowed): stopped if it still is the daemon
        ipvsd recorded; one that changed behind ipvsd's back, or is gone, is released untouched.
Rule 7: a daemon neither wanted nor owned is never touched.
Rule 8: `SyncPlan.owned` is the ownership to persist before the ops run: it already holds what is about to
        start (a crash mid-apply still knows it), and still holds what is about to stop; `settled` drops a
        stopped daemon once its stop succeeded, and a first start that failed (nothing of ipvsd's runs: the
        next attempt is a start again, not the repair of a daemon that never was).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ipvsd.config.schema import Sync
from ipvsd.model import StartDaemon, StopDaemon, SyncDaemon, SyncOp

ROLES = {1: "master", 2: "backup"}
ACTIONS = ("adopt", "start", "repair", "replace", "stop", "release")


@dataclass(frozen=True)
class Owned:
    """The daemon ipvsd owns for one state: as the config asked for it, and whether it was found running."""

    daemon: SyncDaemon
    adopted: bool = False


@dataclass(frozen=True)
class Step:
    """One thing a pass does about one daemon: `ops` to apply in order (none to adopt or release) and why."""

    action: str  # one of ACTIONS
    daemon: SyncDaemon  # the wanted daemon (adopt, start, repair, replace) or the one that runs (stop, release)
    ops: tuple[SyncOp, ...]
    why: str  # operator language, e.g. "master sync daemon on eth0 (syncid 5) started"


@dataclass(frozen=True)
class SyncPlan:
    steps: tuple[Step, ...] = ()
    owned: Mapping[int, Owned] = field(default_factory=dict)  # to persist before the ops run (Rule 8)

    @property
    def ops(self) -> tuple[SyncOp, ...]:
        return tuple(op for s in self.steps for op in s.ops)


def describe(d: SyncDaemon) -> str:
    """`master sync daemon on eth0 (syncid 5)`."""
    return f"{ROLES.get(d.state, str(d.state))} sync daemon on {d.mcast_ifn or '?'} (syncid {d.syncid})"


def matches(want: SyncDaemon, got: SyncDaemon, *, owned: Owned | None = None) -> bool:
    """Rule 2: does the running daemon `got` serve as the wanted daemon `want`?"""
    return not differences(want, got, owned=owned)


def differences(want: SyncDaemon, got: SyncDaemon, *, owned: Owned | None = None) -> list[str]:
    """What differs between a wanted daemon and the one that runs, as `interface eth0 -> eth1` phrases."""
    out = []
    if want.mcast_ifn != got.mcast_ifn:
        out.append(f"interface {got.mcast_ifn} -> {want.mcast_ifn}")
    if want.syncid != got.syncid:
        out.append(f"syncid {got.syncid} -> {want.syncid}")
    if want.mcast_group and got.mcast_group and _addr(want.mcast_group) != _addr(got.mcast_group):
        out.append(f"group {got.mcast_group} -> {want.mcast_group}")
    if want.mcast_port and got.mcast_port and want.mcast_port != got.mcast_port:
        out.append(f"port {got.mcast_port} -> {want.mcast_port}")
    if want.mcast_ttl and got.mcast_ttl and want.mcast_ttl != got.mcast_ttl:
        out.append(f"ttl {got.mcast_ttl} -> {want.mcast_ttl}")
    clamped = owned is not None and owned.daemon == want  # Rule 2: the kernel's rendition of our own request
    if want.sync_maxlen and got.sync_maxlen != want.sync_maxlen and not clamped:
        out.append(f"maxlen {got.sync_maxlen} -> {want.sync_maxlen}")
    return out


def _addr(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def decide(sync: Sync | None, observed: Iterable[SyncDaemon], owned: Mapping[int, Owned]) -> SyncPlan:
    """The steps that bring the kernel's sync daemons to what `sync` asks, touching only what Rules 1-7 allow."""
    running = {d.state: d for d in observed}
    if sync is not None and sync.owner == "external":  # Rule 1
        return SyncPlan(tuple(Step("release", o.daemon, (), f"{describe(o.daemon)} left to its external owner")
                              for _, o in sorted(owned.items())), {})
    wanted = {d.state: d for d in (sync.wanted() if sync is not None else ())}
    steps: list[Step] = []
    keep: dict[int, Owned] = {}
    for state, want in sorted(wanted.items()):
        got, mine = running.get(state), owned.get(state)
        if got is None:  # Rule 4
            keep[state] = Owned(want)
            if mine is not None:
                steps.append(Step("repair", want, (StartDaemon(want),), f"{describe(want)} had disappeared: started"))
            else:
                steps.append(Step("start", want, (StartDaemon(want),), f"{describe(want)} started"))
        elif matches(want, got, owned=mine):  # Rule 3
            keep[state] = Owned(want, adopted=mine is None or mine.adopted)
            if mine is None:
                steps.append(Step("adopt", want, (), f"{describe(got)} adopted: it runs as configured"))
        else:  # Rule 5
            keep[state] = Owned(want)
            changed = ", ".join(differences(want, got, owned=mine))
            who = "" if mine is not None else " (not started by ipvsd)"
            steps.append(Step("replace", want, (StopDaemon(state), StartDaemon(want)),
                              f"{describe(got)}{who} replaced: {changed}"))
    for state, mine in sorted(owned.items()):
        if state in wanted:
            continue
        got = running.get(state)
        if got is not None and _is(mine, got):  # Rule 6
            keep[state] = mine  # until its stop succeeded (Rule 8)
            steps.append(Step("stop", got, (StopDaemon(state),), f"{describe(got)} stopped: no longer configured"))
        elif got is not None:
            steps.append(Step("release", got, (), f"{describe(got)} changed behind ipvsd's back: left alone, "
                                                  "no longer ipvsd's"))
    return SyncPlan(tuple(steps), keep)


def _is(mine: Owned, got: SyncDaemon) -> bool:
    """Is the running daemon still the one ipvsd recorded (as in Rule 2, its maxlen as the kernel chose)?"""
    return matches(mine.daemon, got, owned=mine)


def settled(owned: Mapping[int, Owned], done: Sequence[Step], failed: Sequence[Step] = ()) -> dict[int, Owned]:
    """Ownership once the steps in `done` succeeded and those in `failed` did not (Rule 8)."""
    out = dict(owned)
    for step in done:
        if step.action == "stop":
            out.pop(step.daemon.state, None)
    for step in failed:
        if step.action == "start":
            out.pop(step.daemon.state, None)
    return out
