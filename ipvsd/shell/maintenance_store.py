"""Operator maintenance: `ipvsd drain` entries kept in the state directory, and ldirectord's maintenancedir files.

Entries from `ipvsd drain` live in `<state_dir>/maintenance.json` (atomic writes) so they survive restarts and
reloads; each has a reason and an optional expiry. A maintenance_dir holds files named `ip`, `ip:port`,
`host` or `host:port` (ldirectord); the directory is the truth there, read again on every pass, so removing
the file is how that maintenance ends.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipvsd.errors import IpvsdError
from ipvsd.model import ServiceKey, canonical_addr
from ipvsd.shell.statefile import MaintenanceKey


@dataclass(frozen=True)
class MaintenanceInfo:
    """An operator's maintenance entry (from `ipvsd drain` or a maintenance_dir file)."""

    key: MaintenanceKey
    reason: str = ""
    since: float = 0.0
    until: float | None = None
    source: str = "ipvsd drain"


log = logging.getLogger("ipvsd.maintenance")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


def from_dir(path: str | os.PathLike[str],
             resolve: Callable[[str], str | None]) -> dict[MaintenanceKey, MaintenanceInfo]:
    """Return the maintenance entries of an ldirectord maintenancedir (missing dir: none)."""
    out: dict[MaintenanceKey, MaintenanceInfo] = {}
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return out
    except OSError as e:
        log.warning("maintenance_dir %s: %s", path, e.strerror)
        return out
    for name in names:
        if name.startswith("."):
            continue
        try:
            host, port = parse_real(name)
            key = key_of(host, port, None, resolve)
        except ValueError:
            continue  # ldirectord ignores files that name no real; so do we
        try:
            since = os.stat(os.path.join(path, name)).st_mtime
        except OSError:
            since = 0.0
        out[key] = MaintenanceInfo(key, reason=f"file {name}", since=since, source="maintenance_dir")
    return out


class Store:
    """The `ipvsd drain` entries, saved to `path` on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[MaintenanceKey, MaintenanceInfo] = {}

    def load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise IpvsdError(f"{self.path}: unreadable maintenance file: {e}") from e
        try:
            self.entries = {e.key: e for e in (_decode(x) for x in doc["maintenance"])}
        except (KeyError, TypeError, ValueError) as e:
            raise IpvsdError(f"{self.path}: unreadable maintenance file: {e}") from e

    def add(self, entry: MaintenanceInfo) -> None:
        self.entries[entry.key] = entry
        self.save()

    def remove(self, match: Callable[[MaintenanceKey], bool]) -> list[MaintenanceInfo]:
        gone = [e for k, e in self.entries.items() if match(k)]
        for e in gone:
            del self.entries[e.key]
        if gone:
            self.save()
        return gone

    def expire(self, now: float) -> list[MaintenanceInfo]:
        """Drop the entries whose `until` has passed; return them."""
        return self.remove(lambda k: (u := self.entries[k].until) is not None and u <= now)

    def save(self) -> None:
        data = json.dumps({"version": 1, "maintenance": [_encode(e) for e in sorted(
            self.entries.values(), key=lambda e: (e.key.addr, e.key.port, str(e.key.service)))]}, indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def merged(*sources: Iterable[MaintenanceInfo]) -> dict[MaintenanceKey, MaintenanceInfo]:
    """Return every entry by key; an earlier source wins (drain entries over directory files)."""
    out: dict[MaintenanceKey, MaintenanceInfo] = {}
    for src in sources:
        for e in src:
            out.setdefault(e.key, e)
    return out


def new_entry(key: MaintenanceKey, *, reason: str = "", until: float | None = None) -> MaintenanceInfo:
    return MaintenanceInfo(key, reason=reason, since=time.time(), until=until)


def _encode(e: MaintenanceInfo) -> dict[str, Any]:
    s = e.key.service
    return {"addr": e.key.addr, "port": e.key.port,
            "service": None if s is None else {"af": s.af, "protocol": s.protocol, "addr": s.addr, "port": s.port,
                                               "fwmark": s.fwmark},
            "reason": e.reason, "since": e.since, "until": e.until}


def _decode(x: Any) -> MaintenanceInfo:
    s = x.get("service")
    service = None if s is None else ServiceKey(af=int(s["af"]), protocol=int(s["protocol"]), addr=str(s["addr"]),
                                                port=int(s["port"]), fwmark=int(s["fwmark"]))
    key = MaintenanceKey(str(x["addr"]), int(x.get("port", 0)), service)
    until = x.get("until")
    return MaintenanceInfo(key, reason=str(x.get("reason", "")), since=float(x.get("since", 0.0)),
                           until=None if until is None else float(until))


def current(state_dir: str | os.PathLike[str], maintenance_dir: str | None,
            resolve: Callable[[str], str | None] = lambda _: None) -> frozenset[MaintenanceKey]:
    """Every maintenance key in force now, for tools outside the daemon (`ipvsd plan`): drains and directory files."""
    store = Store(Path(state_dir) / "maintenance.json")
    store.load()
    now = time.time()
    keys = {k for k, e in store.entries.items() if e.until is None or e.until > now}
    if maintenance_dir:
        keys |= set(from_dir(maintenance_dir, resolve))
    return frozenset(keys)
