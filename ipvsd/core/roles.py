"""VIP roles: whether this director holds each VIP, from the addresses its interfaces carry.

Pure: the shell (`ipvsd.shell.addresses`) observes links and addresses through rtnetlink and hands them in with
the wall time; this module says which VIPs are held, on which interfaces, and what changed since last time.

The VIPs are the addresses of the configured virtual services (fwmark services have none) plus
`settings.vips`. The rule, which an operator can check with `ip -br addr`:
    held      the VIP is configured on at least one interface that is up (IFF_UP) and is not a loopback
              interface (IFF_LOOPBACK), and that address is usable (not tentative, DAD did not fail)
    not held  otherwise: absent, only on `lo`, or only on interfaces that are down
Why loopback does not count: in direct routing every director (and every real) carries the VIP on `lo` to accept
the packets addressed to it, with arp_ignore so that it does not answer for it; keepalived adds the VIP to the
ethernet interface of the director that holds it (seed 000's recipe). In NAT the VIP is only ever on the holder's
external interface (seed 003). A VIP carried on a dummy interface by every node would count as held on all of
them: such a VIP belongs on `lo`.
A VIP's `since` is the wall time it last changed between held and not held (or was first observed); moving from
one interface to another while held is reported as a change but keeps `since`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ipvsd.config.schema import Config


@dataclass(frozen=True)
class Link:
    """An interface as rtnetlink reports it."""

    index: int
    name: str
    up: bool  # IFF_UP: administratively up
    loopback: bool  # IFF_LOOPBACK


@dataclass(frozen=True)
class Address:
    """One address on one interface (the same address may sit on several, or twice with two prefix lengths)."""

    index: int  # the interface's
    addr: str  # canonical text (see `canonical`)
    prefixlen: int
    usable: bool = True  # False while IPv6 duplicate address detection runs, or after it failed


@dataclass(frozen=True)
class Observed:
    """The interfaces and addresses of the director's network namespace at one moment."""

    links: Mapping[int, Link]
    addresses: frozenset[Address]


@dataclass(frozen=True)
class VipRole:
    vip: str
    held: bool
    interfaces: tuple[str, ...]  # where it is held, sorted; () when not held
    since: float  # wall time of the last change between held and not held, or of the first observation


@dataclass(frozen=True)
class RoleChange:
    vip: str
    held: bool
    interfaces: tuple[str, ...]
    was: VipRole | None  # None: the first observation of this VIP (at start, or a reload added it)

    def describe(self) -> str:
        """The change in an operator's words, for the log and the event log."""
        on = f" (on {', '.join(self.interfaces)})" if self.interfaces else ""
        if self.was is None:
            return f"{self.vip} is {'' if self.held else 'not '}held by this director{on}"
        if self.held and self.was.held:
            return f"{self.vip} is held by this director on other interfaces now{on}"
        if self.held:
            return f"{self.vip} is now held by this director{on}"
        return f"{self.vip} is no longer held by this director (it was on {', '.join(self.was.interfaces)})"


def summary(roles: Iterable[VipRole]) -> str:
    """One line for many VIPs (the first reading at start): the held ones by name, the others counted."""
    every = sorted(roles, key=lambda r: order(r.vip))
    held = [f"{r.vip} (on {', '.join(r.interfaces)})" for r in every if r.held]
    if not every:
        return "no VIPs to watch"
    if not held:
        return f"this director holds none of its {len(every)} VIPs"
    return f"this director holds {len(held)} of its {len(every)} VIPs: {', '.join(held)}"


def canonical(addr: str) -> str:
    """The text form the config uses for an address (compressed IPv6, no zone)."""
    return ipaddress.ip_address(addr.split("%", 1)[0]).compressed


def vips_of(config: Config) -> frozenset[str]:
    """The addresses whose holding is reported: the address services' and `settings.vips`."""
    return frozenset(vs.address for vs in config.services if vs.address is not None) | frozenset(config.settings.vips)


def holders(vips: Iterable[str], observed: Observed) -> dict[str, tuple[str, ...]]:
    """Each VIP's holding interfaces by the rule above (sorted names; () when not held)."""
    wanted = frozenset(vips)
    found: dict[str, set[str]] = {v: set() for v in wanted}
    for a in observed.addresses:
        if a.addr not in wanted or not a.usable:
            continue
        link = observed.links.get(a.index)
        if link is not None and link.up and not link.loopback:
            found[a.addr].add(link.name)
    return {v: tuple(sorted(names)) for v, names in found.items()}


def update(roles: Mapping[str, VipRole], vips: Iterable[str], observed: Observed,
           now: float) -> tuple[dict[str, VipRole], tuple[RoleChange, ...]]:
    """The roles after `observed`, and the changes from `roles` (VIPs no longer configured are dropped silently)."""
    new: dict[str, VipRole] = {}
    changes: list[RoleChange] = []
    for vip, where in sorted(holders(vips, observed).items(), key=lambda kv: order(kv[0])):
        held = bool(where)
        old = roles.get(vip)
        if old is not None and old.held == held and old.interfaces == where:
            new[vip] = old
            continue
        since = old.since if old is not None and old.held == held else now
        new[vip] = VipRole(vip, held, where, since)
        changes.append(RoleChange(vip, held, where, old))
    return new, tuple(changes)


def order(vip: str) -> tuple[int, int]:
    """A sort key: IPv4 before IPv6, then numeric."""
    a = ipaddress.ip_address(vip)
    return a.version, int(a)
