"""Operator maintenance as data: the key a drain or a maintenance_dir file names, its entry, and parsing them.

Pure: resolving a host name and reading the clock are the caller's (`key_of` takes a resolver, `parse_until`
and `new_entry` take `now`). Where entries are kept is `ipvsd.shell.maintenance_store`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ipvsd.model import DestKey, ServiceKey, canonical_addr

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, order=True)
class MaintenanceKey:
    """A real put in maintenance by an operator: `port` 0 means every port, `service` None every service."""

    addr: str
    port: int = 0
    service: ServiceKey | None = None

    def describe(self) -> str:
        """The key as an operator writes it: `10.0.0.1:80 in TCP 10.0.0.10:80`, `10.0.0.1`."""
        if self == DIRECTOR:
            return "the whole director"
        real = str(DestKey.of(self.addr, self.port)) if self.port else self.addr
        return real + ("" if self.service is None else f" in {self.service.label()}")


DIRECTOR = MaintenanceKey("*")
"""`ipvsd drain --director`: every real of every service, after its VIP routes are withdrawn."""


@dataclass(frozen=True)
class MaintenanceInfo:
    """An operator's maintenance entry (from `ipvsd drain` or a maintenance_dir file)."""

    key: MaintenanceKey
    reason: str = ""
    since: float = 0.0
    until: float | None = None
    source: str = "ipvsd drain"


def parse_real(text: str) -> tuple[str, int]:
    """Split `ip`, `ip:port`, `[v6]:port`, `v6`, `host` or `host:port` into (host, port); port 0 means any."""
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        return host, _port(rest.removeprefix(":") or "0", text)
    try:
        ipaddress.ip_address(t)
        return t, 0  # a bare IPv6 address has colons but no port
    except ValueError:
        pass
    host, sep, port = t.rpartition(":")
    if not sep:
        return t, 0
    return host, _port(port, text)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: bad port {text!r}")
    return int(text)


def parse_until(text: str, *, now: float) -> float:
    """Return the wall time `text` names: a duration (`90`, `30s`, `15m`, `2h`, `1d`) or an ISO 8601 time."""
    m = _DURATION.match(text.strip())
    if m:
        return now + float(m.group(1)) * _UNITS[m.group(2)]
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise ValueError(f"--until {text!r}: expected a duration like 30m or an ISO 8601 time") from e
    return when.timestamp()


def key_of(host: str, port: int, service: ServiceKey | None, resolve: Callable[[str], str | None]) -> MaintenanceKey:
    """Return the maintenance key of a real named by address or hostname (raises ValueError if unresolvable)."""
    try:
        addr = canonical_addr(host)
    except ValueError:
        found = resolve(host)
        if found is None:
            raise ValueError(f"{host}: not an address, and it does not resolve") from None
        addr = canonical_addr(found)
    return MaintenanceKey(addr, port, service)


def merged(*sources: Iterable[MaintenanceInfo]) -> dict[MaintenanceKey, MaintenanceInfo]:
    """Return every entry by key; an earlier source wins (drain entries over directory files)."""
    out: dict[MaintenanceKey, MaintenanceInfo] = {}
    for src in sources:
        for e in src:
            out.setdefault(e.key, e)
    return out


def new_entry(key: MaintenanceKey, *, now: float, reason: str = "", until: float | None = None) -> MaintenanceInfo:
    return MaintenanceInfo(key, reason=reason, since=now, until=until)


def in_maintenance(maint: frozenset[MaintenanceKey], skey: ServiceKey, dkey: DestKey) -> bool:
    """Return True when an entry puts this real in maintenance (any port/service when those are unset)."""
    if not maint:
        return False
    if DIRECTOR in maint:
        return True
    for port in (dkey.port, 0):
        for svc in (skey, None):
            if MaintenanceKey(dkey.addr, port, svc) in maint:
                return True
    return False
