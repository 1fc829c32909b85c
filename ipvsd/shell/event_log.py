"""The event log: transitions, reloads, drift repairs, kernel errors, maintenance and VIP roles as JSON lines.

Every event is one flat JSON object with `ts` (UTC, ISO 8601), `type` and `reason`. Subscribers (the control
socket's `events` stream) get a bounded queue each: a reader that falls behind loses the oldest events and is
told how many with a `lost` event, so a stuck client can never grow the daemon's memory. The optional file
sink appends one line per event and follows log rotation (a renamed or deleted file is reopened). `record` is
the log's subscription to the daemon's typed events (`ipvsd.shell.bus`): it says which of them an operator
sees, and how.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the client commands import this module: keep them from loading the daemon's types
    from ipvsd.core.roles import RoleChange
    from ipvsd.shell import bus

log = logging.getLogger("ipvsd.events")
QUEUE = 1000


def timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), default=str)


class Subscription:
    """One reader's queue; iterate it to get events as dicts."""

    def __init__(self, bus: EventLog, size: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self._lost = 0

    def put(self, event: dict[str, Any]) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._lost += 1
        self._queue.put_nowait(event)

    async def get(self) -> dict[str, Any]:
        if self._lost:  # said before the events that survived, which are newer than the lost ones
            lost, self._lost = self._lost, 0
            return {"ts": timestamp(time.time()), "type": "lost", "reason": f"{lost} events dropped (slow reader)",
                    "count": lost}
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                yield await self.get()
        finally:
            self.close()


class EventLog:
    """Fans events out to subscribers and to an optional JSON-lines file."""

    def __init__(self, file: str | None = None, *, queue: int = QUEUE) -> None:
        self.file = file
        self.queue = queue
        self.published = 0
        self._subs: set[Subscription] = set()
        self._fh: IO[str] | None = None
        self._ino: tuple[int, int] | None = None
        self._failed = False

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self.queue)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, type_: str, reason: str, **fields: Any) -> dict[str, Any]:
        """Send one event to every subscriber and the file sink; return it."""
        event: dict[str, Any] = {"ts": timestamp(time.time()), "type": type_, "reason": reason, **fields}
        self.published += 1
        for sub in list(self._subs):
            sub.put(event)
        if self.file is not None:
            self._write(line(event) + "\n")
        return event

    def record(self, event: bus.Event) -> None:
        """Publish what an operator should see of one of the daemon's events."""
        from ipvsd.core.syncd import ROLES
        from ipvsd.shell import bus

        match event:
            case bus.Transitioned(key=key, transition=t, reals=reals):
                for skey, dkey in reals:
                    self.publish("transition", t.result.reason, service=skey.label(), real=str(dkey),
                                 check=key.type, target=str(key.target), state="up" if t.up else "down",
                                 kind=t.result.kind.value)
            case bus.PassDone() as p:
                for op in p.drift:
                    self.publish("drift", "the kernel differed from what ipvsd set; repaired", op=str(op))
                if p.error is not None:
                    self.publish("kernel-error", p.error, op=str(p.failed))
                if p.refused is not None:
                    self.publish("refused", p.refused)
            case bus.PassFailed(error=error):
                self.publish("kernel-error", error)
            case bus.Reloaded() as r:
                reason = r.error or {"ok": "new configuration", "unchanged": "configuration unchanged"}.get(
                    r.outcome, r.outcome)
                extra = {"restart": list(r.restart)} if r.restart else {}
                self.publish("reload", reason, outcome=r.outcome, trigger=r.trigger, **extra)
            case bus.MaintenanceChanged(action=action, reason=reason, entry=e):
                self.publish("maintenance", reason, action=action, real=e.key.describe(), source=e.source,
                             until=e.until)
            case bus.RolesChanged(changes=changes):
                self._roles(changes)
            case bus.SyncChanged(action=action, daemon=d, why=why):
                self.publish("sync", why, action=action, state=ROLES.get(d.state, str(d.state)),
                             interface=d.mcast_ifn, syncid=d.syncid)
            case bus.SysctlChanged(name=name, action=action, old=old, new=new, error=error):
                self.publish("sysctl", error or f"net.ipv4.vs.{name}: {old} -> {new}", action=action, name=name,
                             old=old, new=new)
            case bus.RouteChanged(action=action, route=route, why=why):
                self.publish("route", why, action=action, route=route)
            case _:
                pass

    def _roles(self, changes: tuple[RoleChange, ...]) -> None:
        """One `vip` event per VIP whose holding changed; `first`: the first reading (start, or a reload added it)."""
        for c in changes:
            self.publish("vip", c.describe(), vip=c.vip, held=c.held, interfaces=list(c.interfaces),
                         first=c.was is None)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _write(self, text: str) -> None:
        assert self.file is not None
        try:
            if self._fh is not None and self._rotated():
                self.close()
            if self._fh is None:
                self._fh = open(self.file, "a", encoding="utf-8")  # noqa: SIM115 (kept open between events)
                st = os.fstat(self._fh.fileno())
                self._ino = (st.st_dev, st.st_ino)
            self._fh.write(text)
            self._fh.flush()
            self._failed = False
        except OSError as e:
            if not self._failed:  # once per failure streak, not once per event
                log.error("events file %s: %s", self.file, e.strerror or e)
            self._failed = True
            self.close()

    def _rotated(self) -> bool:
        assert self.file is not None
        try:
            st = os.stat(self.file)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ino
