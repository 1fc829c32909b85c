"""BGP scale-out, pure: which VIP routes this director announces, and when a service's reals may go.

N directors announce the same VIP to an ECMP router (through a routing daemon that reads ipvsd's routing
table, `ipvsd.shell.routes`); a director that cannot serve a VIP must stop attracting its traffic before it
stops forwarding the traffic it already has.

Rules
-----
Rule 1: a VIP is announced while every service announcing it (`VirtualService.announced()`) has quorum, the
        director is not drained (`ipvsd drain --director`) and the daemon is not stopping with
        `on_stop = "withdraw"`. One service without quorum withdraws the VIP: the other directors serve it.
Rule 2: withdraw before you drain. A service that loses quorum keeps its reals as the kernel has them for
        `withdraw_delay` seconds after the loss, while the routers move its flows elsewhere; a director drain
        puts the reals in maintenance `withdraw_delay` seconds after it started. Without [announce] there is
        nothing to withdraw first: no grace, and a director drain takes effect at once.
Rule 3: ipvsd's routes are the table's routes with ipvsd's protocol. A wanted route that is absent is added, a
        present one that is not wanted is deleted, nothing else is touched; both lists are sorted, so every
        director does the same in the same order. The shell runs withdrawals before the pass's table ops and
        announcements after them (capacity before traffic).
Rule 4: without [announce] no route is wanted; routes left from an earlier configuration are withdrawn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ipvsd.config.schema import Config
from ipvsd.model import ServiceKey


def prefix(vip: str) -> str:
    """The host route of a VIP: `192.0.2.10/32`, `2001:db8::10/128`."""
    a = ipaddress.ip_address(vip)
    return f"{a}/{a.max_prefixlen}"


def announcers(config: Config) -> dict[str, tuple[ServiceKey, ...]]:
    """Each announced VIP's route, with the services whose quorum it needs (Rule 1)."""
    out: dict[str, list[ServiceKey]] = {}
    if config.announce is None:
        return {}
    for vs in config.services:
        for vip in vs.announced():
            out.setdefault(prefix(vip), []).append(vs.service_key())
    return {p: tuple(keys) for p, keys in out.items()}


@dataclass(frozen=True)
class RoutePlan:
    """The route changes of one pass, each with why (Rule 3), and the routes wanted after it."""

    withdraw: tuple[tuple[str, str], ...] = ()  # (route, why)
    announce: tuple[tuple[str, str], ...] = ()
    wanted: frozenset[str] = frozenset()
    why_not: Mapping[str, str] = field(default_factory=dict)  # an unannounced VIP's reason, for status


def plan(config: Config, quorum: Mapping[ServiceKey, bool], observed: Iterable[str], *, drained: bool = False,
         stopping: bool = False) -> RoutePlan:
    """The routes to add and delete so the table holds what Rule 1 wants (Rules 1, 3, 4)."""
    have = frozenset(observed)
    wanted: set[str] = set()
    why_not: dict[str, str] = {}
    for route, keys in announcers(config).items():
        lacking = [k for k in keys if not quorum.get(k, False)]
        if stopping:
            why_not[route] = "ipvsd is stopping"
        elif drained:
            why_not[route] = "the director is drained"
        elif lacking:
            why_not[route] = f"{lacking[0].label()} has no quorum"
        else:
            wanted.add(route)
    withdraw = tuple((r, why_not.get(r, "no longer configured")) for r in sorted(have - wanted, key=route_order))
    add = tuple((r, "quorum") for r in sorted(wanted - have, key=route_order))
    return RoutePlan(withdraw, add, frozenset(wanted), why_not)


def grace(config: Config, before: Mapping[ServiceKey, bool], lost_at: Mapping[ServiceKey, float],
          now: float) -> dict[ServiceKey, float]:
    """Until when a service without quorum keeps its reals as they are (Rule 2): `now + withdraw_delay` for a
    service that had quorum at the last pass (were it to lose it now), `lost_at + withdraw_delay` for one that
    lost it since. Only announced services get any."""
    if config.announce is None or config.announce.withdraw_delay <= 0:
        return {}
    delay = config.announce.withdraw_delay
    out: dict[ServiceKey, float] = {}
    for vs in config.services:
        if not vs.announced():
            continue
        key = vs.service_key()
        if before.get(key):
            out[key] = now + delay
        elif key in lost_at:
            out[key] = lost_at[key] + delay
    return out


def lost(before: Mapping[ServiceKey, bool], after: Mapping[ServiceKey, bool], lost_at: Mapping[ServiceKey, float],
         now: float) -> dict[ServiceKey, float]:
    """When each service without quorum lost it (kept from `lost_at`, `now` for a loss in this pass)."""
    out: dict[ServiceKey, float] = {}
    for key, has in after.items():
        if has:
            continue
        if key in lost_at:
            out[key] = lost_at[key]
        elif before.get(key):
            out[key] = now
    return out


def director_delay(config: Config) -> float:
    """Seconds between `ipvsd drain --director` and its reals going into maintenance (Rule 2)."""
    return 0.0 if config.announce is None else config.announce.withdraw_delay


def due(config: Config, lost_at: Mapping[ServiceKey, float], drained_since: float | None, now: float
        ) -> float | None:
    """The next wall time at which a grace ends (a pass must run then), or None."""
    times = [t + director_delay(config) for t in lost_at.values()]
    if drained_since is not None:
        times.append(drained_since + director_delay(config))
    later = [t for t in times if t > now]
    return min(later) if later else None


def route_order(route: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(route)
    return net.version, int(net.network_address), net.prefixlen
