"""The daemon's small state file: the persisted part of `ipvsd.core.decide.Memory`; atomic load/save only.

Ownership must outlive a restart and a service's removal from the config, or ipvsd could neither clean up
after itself nor tell its services from foreign ones. Drain start times are wall-clock seconds, so a drain
keeps its deadline across a restart. A missing file is an empty state (first start: nothing owned, so nothing
is ever deleted); an unreadable one raises `IpvsdError` and the caller decides. Quorum is kept too, so a
restart (and `ipvsd plan`) applies the same hysteresis as the running daemon. The sync daemons ipvsd owns are
kept under "daemons"; a file written before they existed loads with none. So are the start times of the slow
starts under way ("ramps", wall clock): a restart mid-ramp goes on with the ramp instead of giving the real its
full weight at once (`ipvsd.core.slowstart`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from ipvsd.core.decide import Memory
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.core.syncd import Owned
from ipvsd.errors import IpvsdError
from ipvsd.model import DestKey, ServiceKey, SyncDaemon

VERSION = 1
_T = TypeVar("_T")


class Corrupt(IpvsdError):
    """The state file is there but is no state: garbage, truncated, wrong types, or not a file at all."""


def load(path: str | os.PathLike[str]) -> Memory:
    """Return the state stored at `path`, or an empty state when there is no file; `Corrupt` when what is there
    cannot be decoded, `IpvsdError` when it cannot be read."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return Memory()
    except IsADirectoryError as e:
        raise Corrupt(f"{path}: unreadable state file: {e.strerror}") from e
    except OSError as e:
        raise IpvsdError(f"{path}: cannot read state: {e.strerror}") from e
    try:
        return _decode(json.loads(raw.decode("utf-8")))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise Corrupt(f"{path}: unreadable state file: {e or type(e).__name__}") from e


def set_aside(path: str | os.PathLike[str]) -> Path | None:
    """Move a corrupt state file out of the way, to `NAME.corrupt` beside it (replacing an older one), for the
    operator to look at; None when it cannot be moved (the next save then fails, and says so)."""
    target = Path(path)
    aside = target.with_name(target.name + ".corrupt")
    try:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink(missing_ok=True)
        os.replace(target, aside)
    except OSError:
        return None
    return aside


def save(path: str | os.PathLike[str], state: Memory) -> None:
    """Write `state` to `path` atomically: a temp file in the same directory, fsync, rename, fsync the dir."""
    target = Path(path)
    # No indent: json's C encoder only runs without one, and at 10,000 reals the Python one cost a start 50 ms
    # natively (a second in the lab). One line still reads with `jq .`.
    data = json.dumps(_encode(state), sort_keys=True, separators=(",", ":")).encode()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the state directory may have been removed
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


# --- JSON shape ----------------------------------------------------------------------------------------------


def _flat(key: Any) -> dict[str, Any]:
    """A flat dataclass (a key of the model) as a dict; dataclasses.asdict, without its deep copy."""
    return {f.name: getattr(key, f.name) for f in fields(key)}


def _encode(state: Memory) -> dict[str, Any]:
    return {
        "version": VERSION,
        "owned": [_flat(k) for k in sorted(state.owned)],
        "drains": [{"service": _flat(s), "dest": _flat(d), "since": t}
                   for (s, d), t in sorted(state.drains.items())],
        "maintenance": [{"addr": m.addr, "port": m.port, "service": None if m.service is None else _flat(m.service)}
                        for m in sorted(state.maintenance, key=_maintenance_order)],
        "quorum": [{"service": _flat(s), "has": has} for s, has in sorted(state.quorum.items())],
        "daemons": [{**_flat(o.daemon), "adopted": o.adopted} for _, o in sorted(state.daemons.items())],
        "ramps": [{"service": _flat(s), "dest": _flat(d), "since": t} for (s, d), t in sorted(state.ramps.items())],
    }


def _maintenance_order(m: MaintenanceKey) -> tuple[str, int, bool, ServiceKey]:
    return (m.addr, m.port, m.service is not None, m.service or ServiceKey(af=0))


def _decode(doc: Any) -> Memory:
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError(f"expected a version {VERSION} state object")
    return Memory(
        owned=frozenset(_service(x) for x in doc.get("owned", [])),
        drains={(_service(x["service"]), _dest(x["dest"])): _number(x["since"]) for x in doc.get("drains", [])},
        maintenance=frozenset(
            MaintenanceKey(addr=_typed(x["addr"], str), port=_typed(x.get("port", 0), int),
                           service=None if x.get("service") is None else _service(x["service"]))
            for x in doc.get("maintenance", [])),
        quorum={_service(x["service"]): _flag(x["has"]) for x in doc.get("quorum", [])},
        daemons={o.daemon.state: o for o in map(_owned_daemon, doc.get("daemons", []))},
        ramps={(_service(x["service"]), _dest(x["dest"])): _number(x["since"]) for x in doc.get("ramps", [])},
    )


def _owned_daemon(x: Any) -> Owned:
    d = SyncDaemon(state=_typed(x["state"], int), mcast_ifn=_typed(x["mcast_ifn"], str),
                   syncid=_typed(x.get("syncid", 0), int), sync_maxlen=_typed(x.get("sync_maxlen", 0), int),
                   mcast_group=_typed(x.get("mcast_group", ""), str), mcast_port=_typed(x.get("mcast_port", 0), int),
                   mcast_ttl=_typed(x.get("mcast_ttl", 0), int))
    return Owned(d, adopted=_flag(x.get("adopted", False)))


def _service(x: Any) -> ServiceKey:
    return ServiceKey(af=_typed(x["af"], int), protocol=_typed(x.get("protocol", 0), int),
                      addr=_typed(x.get("addr", ""), str), port=_typed(x.get("port", 0), int),
                      fwmark=_typed(x.get("fwmark", 0), int))


def _dest(x: Any) -> DestKey:
    return DestKey(af=_typed(x["af"], int), addr=_typed(x["addr"], str), port=_typed(x["port"], int))


def _number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"{x!r} is not a number")
    return float(x)


def _flag(x: Any) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"{x!r} is not true or false")
    return x


def _typed(x: Any, kind: type[_T]) -> _T:
    if isinstance(x, bool) or not isinstance(x, kind):
        raise TypeError(f"{x!r} is not a {kind.__name__}")
    return x
