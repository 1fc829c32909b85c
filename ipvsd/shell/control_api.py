"""The control socket's commands: `status` from the live view; `reload`, `drain`, `undrain` through a narrow interface.

The daemon implements `Commands` and nothing else of it is visible here: a drain or an undrain is handed over
and answered once the pass that carries it out is done (pass N, counted by the daemon), or when none ends in
time. Requests are validated here, against the last snapshot: an unknown real or service, a time in the past
or not a number is refused with a clear error before the daemon sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from ipvsd.core import view as status
from ipvsd.core.maintenance import (
    DIRECTOR,
    MaintenanceInfo,
    MaintenanceKey,
    in_maintenance,
    key_of,
    new_entry,
    parse_real,
)
from ipvsd.core.probes import is_name
from ipvsd.errors import IpvsdError
from ipvsd.model import ServiceKey
from ipvsd.shell import resolver
from ipvsd.shell.bus import Reloaded
from ipvsd.shell.control import Handler
from ipvsd.shell.live_view import LiveView

log = logging.getLogger("ipvsd.control")


class Commands(Protocol):
    """What the control socket may ask of the daemon."""

    async def reload(self, trigger: str) -> Reloaded: ...

    async def drain(self, entry: MaintenanceInfo) -> bool: ...  # True: a pass carried it out

    async def undrain(self, match: Callable[[MaintenanceKey], bool]) -> tuple[list[MaintenanceInfo], bool]: ...


class ControlApi:
    """The handlers of the control socket's request/answer commands."""

    def __init__(self, view: LiveView, commands: Commands, *, config_path: str,
                 wall: Callable[[], float] = time.time) -> None:
        self.view = view
        self.commands = commands
        self.config_path = config_path
        self.wall = wall

    def handlers(self) -> dict[str, Handler]:
        return {"status": self.status, "drain": self.drain, "undrain": self.undrain, "reload": self.reload}

    async def status(self, req: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(OSError, IpvsdError, TimeoutError):
            async with asyncio.timeout(2):
                await self.view.refresh_kernel()
        return {"services": status.to_json(self.view.statuses()), "kernel_at": self.view.kernel_wall,
                "maintenance": [status.maintenance_json(e) for e in self.view.maintenance().values()],
                "config": self.config_path, "last_reload": self.view.last_reload or None,
                "vips": status.vips_json(self.view.vips()),
                "sync": status.sync_json(self.view.sync()), "sysctls": status.sysctl_json(self.view.sysctls()),
                "routes": status.route_json(self.view.routes())}

    async def reload(self, req: dict[str, Any]) -> dict[str, Any]:
        r = await self.commands.reload("control socket")
        if r.outcome == "error":
            return {"ok": False, "error": f"reload rejected, the running configuration stays: {r.error}"}
        return {"outcome": r.outcome, "trigger": r.trigger, "error": None, "at": r.at, "restart": list(r.restart)}

    async def drain(self, req: dict[str, Any]) -> dict[str, Any]:
        key = await self._key(req)
        matched = self._matching(key)
        if not matched:
            raise ValueError(f"{key.describe()} matches no configured real")
        until = _until(req.get("until"), now=self.wall())
        entry = new_entry(key, now=self.wall(), reason=str(req.get("reason") or ""), until=until)
        applied = await self.commands.drain(entry)
        return {"reals": matched, "entry": status.maintenance_json(entry), "applied": applied}

    async def undrain(self, req: dict[str, Any]) -> dict[str, Any]:
        key = await self._key(req)
        any_port, any_service = key.port == 0, key.service is None

        def match(k: MaintenanceKey) -> bool:
            return k.addr == key.addr and (any_port or k.port == key.port) and (any_service or k.service == key.service)

        files = [e for k, e in self.view.maintenance().items() if e.source == "maintenance_dir" and match(k)]
        gone, applied = await self.commands.undrain(match)
        if not gone:
            why = f"; remove {files[0].reason} from the maintenance_dir" if files else ""
            raise ValueError(f"{key.describe()} is not drained by `ipvsd drain`{why}")
        return {"applied": applied, "removed": [status.maintenance_json(e) for e in gone],
                "still": [status.maintenance_json(e) for e in files]}

    async def _key(self, req: dict[str, Any]) -> MaintenanceKey:
        if req.get("director") is True:
            return DIRECTOR
        host, port = parse_real(str(req.get("real", "")))
        if not host:
            raise ValueError("name a real: ADDRESS[:PORT] or HOST[:PORT]")
        service = self._service(str(req["service"])) if req.get("service") else None
        return await asyncio.to_thread(key_of, host, port, service, self._resolve)

    def _resolve(self, host: str) -> str | None:
        snap = self.view.snapshot
        if snap is not None and host in snap.resolved:
            return snap.resolved[host]
        try:
            return resolver.getaddrinfo(host, socket.AF_UNSPEC)
        except (OSError, UnicodeError):
            return None

    def _service(self, text: str) -> ServiceKey:
        want = text.strip().lower()
        snap = self.view.snapshot
        for vs in snap.config.services if snap is not None else ():
            skey = vs.service_key()
            label = skey.label().lower()
            if want in (label, label.split(" ", 1)[1]) or (skey.is_fwmark and want == str(skey.fwmark)):
                return skey
        raise ValueError(f"{text}: no such virtual service (e.g. \"TCP 10.0.0.1:80\", \"10.0.0.1:80\", \"FWM 7\")")

    def _matching(self, key: MaintenanceKey) -> list[str]:
        snap = self.view.snapshot
        if snap is None:
            return []
        keys = frozenset({key})
        out = []
        for vs in snap.config.services:
            skey = vs.service_key()
            for real in vs.reals:
                addr = snap.resolved.get(real.address, real.address)
                if is_name(addr):
                    continue
                dkey = real.dest_key(addr)
                if in_maintenance(keys, skey, dkey):
                    out.append(f"{skey.label()} -> {dkey}")
        return out


def _until(value: Any, *, now: float) -> float | None:
    """A drain's end: None, or a wall time in the future (NaN, infinities and non-numbers are refused)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"until {value!r}: expected seconds since the epoch")
    try:
        until = float(value)
    except ValueError:
        raise ValueError(f"until {value!r}: expected seconds since the epoch") from None
    if not math.isfinite(until):
        raise ValueError(f"until {value!r}: expected a finite time")
    if until <= now:
        raise ValueError("--until is in the past")
    return until
