"""The kernel table as last read, patched with the ops applied since: what a pass plans against between reads.

Why: reading the table was most of a pass once it is large (500 dests: 2-3 s of pyroute2 decoding on the
lab's emulated CPU, against 0.15 s for build and plan; kernel/_wire now decodes instead, but a read is still
one dump per service), and health transitions can ask for a pass many times a second. The daemon still reads
the kernel on every resync, after any failed op and at start, so what this copy cannot see (a change made by
hand, connection counts moving) is caught there, as drift always was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ipvsd.model import AddDest, AddService, DelService, Dest, DestKey, EditDest, EditService, Op, Service, ServiceKey


def keyed(table: Iterable[Service], keys: Iterable[ServiceKey]) -> list[Service]:
    """`table` (as read) with each service's key replaced by the equal one in `keys` (the configuration's), in
    the same order: the passes until the next read find each service by identity, where a key decoded from the
    kernel is compared field by field at every lookup (a thousand lookups a pass at 1,000 services)."""
    known = {k: k for k in keys}
    return [s if (k := known.get(s.key)) is None or k is s.key else replace(s, key=k) for s in table]


def patched(table: Iterable[Service], ops: Iterable[Op]) -> list[Service]:
    """Return `table` as it is after `ops` succeeded (new entries with zero counters), in the same order."""
    services = {s.key: s for s in table}
    dests: dict[ServiceKey, dict[DestKey, Dest]] = {}  # the services whose dests the ops touch

    def dests_of(key: ServiceKey) -> dict[DestKey, Dest]:
        if key not in dests:
            dests[key] = {d.key: d for d in services[key].dests}
        return dests[key]

    for op in ops:
        if isinstance(op, AddService):
            services.setdefault(op.key, Service(op.key, op.attrs))
        elif isinstance(op, EditService):
            if op.key in services:
                services[op.key] = replace(services[op.key], attrs=op.attrs)
        elif isinstance(op, DelService):
            services.pop(op.key, None)
            dests.pop(op.key, None)
        elif op.service not in services:
            continue
        elif isinstance(op, AddDest):
            dests_of(op.service).setdefault(op.key, Dest(op.key, op.attrs))
        elif isinstance(op, EditDest):
            have = dests_of(op.service)
            if op.key in have:
                have[op.key] = replace(have[op.key], attrs=op.attrs)
        else:
            dests_of(op.service).pop(op.key, None)
    return [replace(s, dests=tuple(dests[k].values())) if k in dests else s for k, s in services.items()]
