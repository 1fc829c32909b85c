"""Where maintenance is kept: `ipvsd drain` entries in the state directory, and ldirectord's maintenancedir files.

Entries from `ipvsd drain` live in `<state_dir>/maintenance.json` (atomic writes) so they survive restarts and
reloads; each has a reason and an optional expiry. A maintenance_dir holds files named `ip`, `ip:port`,
`host` or `host:port` (ldirectord); the directory is the truth there, read again on every pass, so removing
the file is how that maintenance ends.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ipvsd.core.maintenance import DIRECTOR, MaintenanceInfo, MaintenanceKey, key_of, parse_real
from ipvsd.errors import IpvsdError
from ipvsd.model import ServiceKey
from ipvsd.shell.persist import Writer

log = logging.getLogger("ipvsd.maintenance")


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
    """The `ipvsd drain` entries, saved to `path` on every change. A save that fails (a full or read-only state
    directory) is said once and leaves the entries in force in memory; `flush` tries again (each pass)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[MaintenanceKey, MaintenanceInfo] = {}
        self.writer = Writer(path, "the drains")

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

    def shift(self, jump: float) -> None:
        """The wall clock stepped by `jump` seconds: move each entry's start with it (`director_delay` counts from
        there), not its `until`, an absolute time the operator gave."""
        if self.entries:
            self.entries = {k: replace(e, since=e.since + jump) for k, e in self.entries.items()}
            self.save()

    def expire(self, now: float) -> list[MaintenanceInfo]:
        """Drop the entries whose `until` has passed; return them."""
        return self.remove(lambda k: (u := self.entries[k].until) is not None and u <= now)

    def flush(self) -> None:
        """Write the entries again if a save failed since the last one that worked."""
        if self.writer.pending:
            self.save()

    def save(self) -> bool:
        """Write the entries; False when that failed (said once, tried again at the next `flush`)."""
        return self.writer.write(self._save)

    def _save(self) -> None:
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


def director_since(state_dir: str | os.PathLike[str]) -> float | None:
    """When `ipvsd drain --director` started, if it is recorded (for `ipvsd plan`)."""
    store = Store(Path(state_dir) / "maintenance.json")
    store.load()
    entry = store.entries.get(DIRECTOR)
    return None if entry is None else entry.since


def current(state_dir: str | os.PathLike[str], maintenance_dir: str | None,
            resolve: Callable[[str], str | None] = lambda _: None, *, now: float) -> frozenset[MaintenanceKey]:
    """Every maintenance key in force at `now`, for tools outside the daemon (`ipvsd plan`): drains and files."""
    store = Store(Path(state_dir) / "maintenance.json")
    store.load()
    keys = {k for k, e in store.entries.items() if e.until is None or e.until > now}
    if maintenance_dir:
        keys |= set(from_dir(maintenance_dir, resolve))
    return frozenset(keys)
