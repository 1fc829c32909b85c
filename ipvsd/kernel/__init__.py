"""The contract between ipvsd and an IPVS table: the Kernel protocol, met by the netlink adapter and the fake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ipvsd import lean
from ipvsd.kernel._batch import Batch
from ipvsd.model import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Info,
    Op,
    Service,
    ServiceAttrs,
    ServiceKey,
    SetTimeouts,
    StartDaemon,
    StopDaemon,
    SyncDaemon,
    SyncOp,
    Timeouts,
)

# Before any submodule imports pyroute2: the adapter needs its netlink core only (see ipvsd.lean).
lean.install("pyroute2")

__all__ = ["Batch", "Kernel", "apply"]


class Kernel(Protocol):
    """An IPVS table. Errno policy: EEXIST on add and ENOENT/ESRCH on delete count as done;
    everything else raises `KernelError(op_in_ipvsadm_notation, errno)`."""

    async def info(self) -> Info: ...
    async def services(self) -> list[Service]: ...  # every service with its dests, in kernel dump order
    async def service(self, key: ServiceKey) -> Service | None: ...
    async def add_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None: ...
    async def edit_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None: ...
    async def del_service(self, key: ServiceKey) -> None: ...
    async def add_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None: ...
    async def edit_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None: ...
    async def del_dest(self, service: ServiceKey, key: DestKey) -> None: ...
    # Many table ops, in order, sent in batches cut at each index in `cuts` (and by size); never raises
    # KernelError: each op's fate is in the Batch (see ipvsd.kernel._batch for what a failure means).
    async def apply_many(self, ops: Sequence[Op], cuts: Sequence[int] = ()) -> Batch: ...
    async def zero(self, key: ServiceKey | None = None) -> None: ...
    async def flush(self) -> None: ...  # operator command only; the daemon never calls it
    async def timeouts(self) -> Timeouts: ...
    async def set_timeouts(self, t: Timeouts) -> None: ...
    async def daemons(self) -> list[SyncDaemon]: ...
    async def start_daemon(self, d: SyncDaemon) -> None: ...
    async def stop_daemon(self, state: int) -> None: ...
    async def close(self) -> None: ...


async def apply(kernel: Kernel, op: Op | SyncOp | SetTimeouts) -> None:
    """Carry out one planned operation."""
    match op:
        case StartDaemon(d):
            await kernel.start_daemon(d)
        case StopDaemon(state):
            await kernel.stop_daemon(state)
        case SetTimeouts(t):
            await kernel.set_timeouts(t)
        case AddService(key, attrs):
            await kernel.add_service(key, attrs)
        case EditService(key, attrs):
            await kernel.edit_service(key, attrs)
        case DelService(key):
            await kernel.del_service(key)
        case AddDest(svc, key, attrs):
            await kernel.add_dest(svc, key, attrs)
        case EditDest(svc, key, attrs):
            await kernel.edit_dest(svc, key, attrs)
        case DelDest(svc, key):
            await kernel.del_dest(svc, key)
