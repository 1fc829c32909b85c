"""Slow start, pure: a real that comes back ramps from a quarter of its weight to all of it (HAProxy slowstart).

A real that starts serving gets its full share of new connections at once: a cold server (empty caches, pools
not filled, a JIT not warm) is flooded. (A director rejoining an ECMP group gets its share of flows from the
router at once: that share is the router's to spread, not a real's weight.) No IPVS peer ramps;
HAProxy's `slowstart` is the model. Time (`now`, wall-clock seconds, as drains) is passed in; what passes
carry forward is when each ramp started (`ipvsd.core.decide.Memory.ramps`, persisted in the state file: a
restart mid-ramp goes on with the ramp instead of jumping to the full weight).

Rules
-----
Rule 1: a ramp starts at `now` when a real whose `slow_start` (`VirtualService.slow_start_for`) is > 0 is to
        serve (the desired table wants it SERVE at a weight > 0) and the kernel does not serve with it (absent,
        or at weight 0): it came back up, left maintenance, was quiesced, or was added by a reload.
Rule 2: a real ramps only while another real of its service keeps serving: in the kernel at a weight > 0 and
        still wanted there (SERVE at a weight > 0, or KEEP). Alone, a real takes every new connection whatever
        its weight, so ramping it would only delay service: it goes to its full weight at once, and a ramp
        under way ends when the other reals stop serving. The fallback server is no real of the service.
Rule 3: the first pass after a start (`first`: no pass applied yet) starts no ramp: it programs the table the
        config and health ask for, and the reals up then get their full weight. A real that comes up later (its
        checks settle after that pass, a reload adds it) ramps; ramps persisted before a restart go on.
Rule 4: the weights. A ramp of `slow_start` T has STEPS steps of T/STEPS seconds; in step k (1..STEPS) the real
        serves at ceil(weight * k / STEPS), never 0: 25 %, 50 %, 75 %, then 100 % of its weight. The weight is
        the desired table's, read at each pass: a weight changed by a reload mid-ramp is where the ramp goes
        on to; a slow_start changed mid-ramp keeps the ramp's start. At start + T the ramp is over (forgotten).
Rule 5: a ramp is forgotten when its real is no longer wanted at a weight > 0 (down, maintenance, removed from
        the config, quorum lost and the fallback in) or its slow_start becomes 0: it ramps again when it comes
        back. A real whose health is not settled (KEEP: the kernel keeps its entry as it is) keeps its ramp.
Rule 6: `due` is the next step (or end) of any ramp: a pass must run then, or the weight would stay at its
        step until the next resync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ipvsd.config.schema import Config
from ipvsd.core.plan import Desired, DesiredDest, DesiredService, Want
from ipvsd.core.probes import RealKey, literal
from ipvsd.model import DestKey, Service, ServiceKey

STEPS = 4
SLACK = 0.001  # seconds early a timer may fire (the event loop's clock resolution): its step has come


@dataclass(frozen=True)
class Ramp:
    """One real's slow start: since when (wall clock), over how many seconds, towards which weight."""

    since: float
    period: float
    target: int

    @property
    def until(self) -> float:
        """When the ramp is over."""
        return self.since + self.period

    def step(self, now: float) -> int:
        """The step (1..STEPS) the ramp is in at `now` (Rule 4)."""
        return min(STEPS, max(1, int((now - self.since + SLACK) // (self.period / STEPS)) + 1))

    def weight(self, now: float) -> int:
        """The weight the real serves at `now`: ceil(target * step / STEPS), never 0 (Rule 4)."""
        return max(1, -(-self.target * self.step(now) // STEPS))

    def next_change(self, now: float) -> float:
        """The wall time of the next step, or of the end in the last one (Rule 6)."""
        return self.since + self.period * self.step(now) / STEPS


def ramps(config: Config, table: Desired, observed: Iterable[Service], since: Mapping[RealKey, float], *,
          now: float, first: bool, resolved: Mapping[str, str] | None = None) -> dict[RealKey, Ramp]:
    """The ramps in force after this pass, by real (Rules 1, 2, 3, 5); `since` is when each ramp under way
    started, `table` the desired table before any ramp."""
    out: dict[RealKey, Ramp] = {}
    if not config.slow_starting:
        return out  # the common case: nothing ever ramps
    kernel = {s.key: s for s in observed}
    for vs in config.slow_starting:
        skey = vs.service_key()
        wanted = table.get(skey)
        if wanted is None:
            continue
        svc = kernel.get(skey)
        serving = {d.key: d.attrs.weight for d in svc.dests} if svc is not None else {}
        periods: dict[DestKey, float] = {}
        for real in vs.reals:
            addr = literal(real.address) or (resolved or {}).get(real.address)
            if addr is not None:
                periods[real.dest_key(addr)] = vs.slow_start_for(real)
        keep = {k for k in periods if serving.get(k, 0) > 0 and _stays(wanted.dests.get(k))}
        for dkey, period in periods.items():
            dd = wanted.dests.get(dkey)
            if period <= 0 or dd is None or not keep - {dkey}:
                continue  # no slow start, or alone (Rule 2)
            start = since.get((skey, dkey))
            if dd.want is Want.KEEP:
                if start is None:
                    continue  # health not settled: the kernel keeps its entry, a ramp under way its start
            elif dd.want is not Want.SERVE or dd.attrs.weight <= 0:
                continue  # down, drained, absent (Rule 5)
            elif start is None:
                if first or serving.get(dkey, 0) > 0:
                    continue  # the first programming, or it already serves (Rules 1, 3)
                start = now
            ramp = Ramp(start, period, dd.attrs.weight)
            if now + SLACK < ramp.until:
                out[(skey, dkey)] = ramp
    return out


def _stays(dd: DesiredDest | None) -> bool:
    """A real the kernel serves with goes on serving after this pass."""
    return dd is not None and (dd.want is Want.KEEP or (dd.want is Want.SERVE and dd.attrs.weight > 0))


def weighted(table: Desired, ramping: Mapping[RealKey, Ramp], now: float) -> dict[ServiceKey, DesiredService]:
    """The desired table with each ramping real that is to serve at its step's weight (Rule 4)."""
    out = dict(table)
    for (skey, dkey), ramp in ramping.items():
        svc = out[skey]
        dd = svc.dests[dkey]
        if dd.want is Want.SERVE:
            dests = {**svc.dests, dkey: DesiredDest(replace(dd.attrs, weight=ramp.weight(now)), dd.want)}
            out[skey] = replace(svc, dests=dests)
    return out


def due(ramping: Mapping[RealKey, Ramp], now: float) -> float | None:
    """The next wall time a ramp steps or ends (Rule 6), or None."""
    return min((r.next_change(now) for r in ramping.values()), default=None)
