"""An in-memory IPVS table with the kernel's semantics and errnos, for fast tests of everything above the adapter.

It answers what Linux 6.1's ip_vs_ctl.c answers (checked by the shared conformance suite, tests/kernel_contract.py,
which runs against this fake natively and against the real kernel in the lab VM), and applies the same errno
policy as the netlink adapter. `fail` lets a test make any operation fail with a chosen errno.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ipvsd.errors import IpvsMissing, KernelError
from ipvsd.kernel import apply
from ipvsd.kernel._batch import MAX_BATCH_OPS, Batch, chunks, results
from ipvsd.kernel._policy import DONE_ON_ADD, DONE_ON_DELETE, STRICT, settle
from ipvsd.model import (
    AF_INET6,
    USER_FLAGS,
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Fwd,
    Info,
    Op,
    Service,
    ServiceAttrs,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
    TunType,
)

SCHEDULERS = frozenset({"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"})
PERSISTENCE_ENGINES = frozenset({"sip"})
INT_MAX = 2**31 - 1
HZ = 250  # Debian's CONFIG_HZ; SET_CONFIG refuses timeouts above INT_MAX / HZ seconds
DEFAULT_TIMEOUTS = Timeouts(tcp=900, tcp_fin=120, udp=300)
_DAEMON_NAMES = {1: "master", 2: "backup"}

Hook = Callable[[str], int | None]
"""Called with each operation in ipvsadm notation before it is carried out; a returned errno fails it."""


@dataclass
class _Entry:
    attrs: ServiceAttrs
    dests: list[Dest] = field(default_factory=list)  # newest first, as the kernel lists them
    stats: Stats = field(default_factory=Stats)


class FakeKernel:
    """The IPVS table of one imaginary network namespace."""

    def __init__(self, *, schedulers: frozenset[str] = SCHEDULERS, interfaces: dict[str, int] | None = None) -> None:
        self.schedulers = schedulers
        # interface name -> MTU; sync daemons need an existing interface
        self.interfaces = {"lo": 65536, "eth0": 1500} if interfaces is None else interfaces
        self.fail: Hook | None = None  # also asked for reads: "-L" (the table), "--version" (info)
        self.ipvs = True  # False: a kernel without IPVS (every call fails as the netlink adapter's would)
        self.log: list[str] = []  # every modifying operation that reached the table, in ipvsadm notation
        self._inet: dict[ServiceKey, _Entry] = {}
        self._fwmark: dict[ServiceKey, _Entry] = {}
        self._timeouts = DEFAULT_TIMEOUTS
        self._daemons: dict[int, SyncDaemon] = {}
        self.closed = False
        self.max_batch = MAX_BATCH_OPS  # ops per batch; the adapter also cuts by bytes, which this does not model
        self.batches: list[int] = []  # the size of every batch apply_many sent, in order

    # --- the kernel's side -----------------------------------------------------------------------

    def _table(self, key: ServiceKey) -> dict[ServiceKey, _Entry]:
        return self._fwmark if key.is_fwmark else self._inet

    def _enter(self, op: str) -> int | None:
        """The injected errno for `op`, if the test hook asks for one."""
        return self.fail(op) if self.fail is not None else None

    def _check_service_attrs(self, key: ServiceKey, attrs: ServiceAttrs) -> int | None:
        if attrs.scheduler not in self.schedulers:
            return errno.ENOENT
        if attrs.pe_name and attrs.pe_name not in PERSISTENCE_ENGINES:
            return errno.ENOENT
        if key.af == AF_INET6 and not 1 <= attrs.netmask <= 128:
            return errno.EINVAL
        return None

    def _check_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> int | None:
        if service not in self._table(service):
            return errno.ESRCH
        if key.af != service.af and (self._daemons or attrs.fwd != Fwd.TUNNEL):
            return errno.EINVAL
        if attrs.weight > INT_MAX or attrs.l_thresh > attrs.u_thresh:
            return errno.ERANGE
        if attrs.tun_type == TunType.GUE and attrs.tun_port == 0:
            return errno.EINVAL
        return None

    def _run(self, op: str, done: frozenset[int], change: Callable[[], int | None]) -> None:
        if not self.ipvs:
            raise IpvsMissing(errno.ENOENT)
        err = self._enter(op)
        if err is None:
            err = change()
        if err is None:
            self.log.append(op)
        else:
            settle(op, err, done)

    # --- reading ---------------------------------------------------------------------------------

    def _read(self, op: str) -> None:
        """Fail a read as the kernel would: no IPVS at all, or an errno the test hook injects for `op`."""
        if not self.ipvs:
            raise IpvsMissing(errno.ENOENT)
        err = self._enter(op)
        if err is not None:
            raise KernelError(op, err)

    async def info(self) -> Info:
        self._read("--version")
        return Info(version=0x010201, conn_tab_size=4096)

    def _service(self, key: ServiceKey, e: _Entry) -> Service:
        return Service(key=key, attrs=e.attrs, dests=tuple(e.dests), stats=e.stats)

    async def services(self) -> list[Service]:
        self._read("-L")
        # the kernel walks its address table first, then its fwmark table
        return [self._service(k, e) for table in (self._inet, self._fwmark) for k, e in table.items()]

    async def service(self, key: ServiceKey) -> Service | None:
        e = self._table(key).get(key)
        return None if e is None else self._service(key, e)

    async def timeouts(self) -> Timeouts:
        self._read("-L --timeout")
        return self._timeouts

    async def daemons(self) -> list[SyncDaemon]:
        self._read("-L --daemon")
        return [self._daemons[s] for s in sorted(self._daemons)]  # master first

    # --- services and dests ----------------------------------------------------------------------

    async def add_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None:
        def change() -> int | None:
            table = self._table(key)
            if key in table:
                return errno.EEXIST
            if (err := self._check_service_attrs(key, attrs)) is not None:
                return err
            table[key] = _Entry(attrs=replace(attrs, flags=attrs.flags & USER_FLAGS))
            return None

        self._run(str(AddService(key, attrs)), DONE_ON_ADD, change)

    async def edit_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None:
        def change() -> int | None:
            e = self._table(key).get(key)
            if e is None:
                return errno.ESRCH
            if (err := self._check_service_attrs(key, attrs)) is not None:
                return err
            e.attrs = replace(attrs, flags=attrs.flags & USER_FLAGS)
            return None

        self._run(str(EditService(key, attrs)), STRICT, change)

    async def del_service(self, key: ServiceKey) -> None:
        def change() -> int | None:
            return errno.ESRCH if self._table(key).pop(key, None) is None else None

        self._run(str(DelService(key)), DONE_ON_DELETE, change)

    async def add_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        def change() -> int | None:
            if (err := self._check_dest(service, key, attrs)) is not None:
                return err
            dests = self._table(service)[service].dests
            if any(d.key == key for d in dests):
                return errno.EEXIST
            dests.insert(0, Dest(key=key, attrs=attrs))
            return None

        self._run(str(AddDest(service, key, attrs)), DONE_ON_ADD, change)

    async def edit_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        def change() -> int | None:
            if (err := self._check_dest(service, key, attrs)) is not None:
                return err
            dests = self._table(service)[service].dests
            for i, d in enumerate(dests):
                if d.key == key:
                    dests[i] = replace(d, attrs=attrs)
                    return None
            return errno.ENOENT

        self._run(str(EditDest(service, key, attrs)), STRICT, change)

    async def del_dest(self, service: ServiceKey, key: DestKey) -> None:
        def change() -> int | None:
            e = self._table(service).get(service)
            if e is None:
                return errno.ESRCH
            kept = [d for d in e.dests if d.key != key]
            if len(kept) == len(e.dests):
                return errno.ENOENT
            e.dests = kept
            return None

        self._run(str(DelDest(service, key)), DONE_ON_DELETE, change)

    async def apply_many(self, ops: Sequence[Op], cuts: Sequence[int] = ()) -> Batch:
        """As the adapter: batches cut at `cuts` and by count; every op of a batch is carried out, also after
        one that fails in it; no batch after that one is sent."""
        if not self.ipvs:  # the adapter fails opening the family, before any request
            return results(ops, [IpvsMissing(errno.ENOENT)], 0)
        outcomes: list[KernelError | None] = []
        sends = 0
        for part in chunks([0] * len(ops), cuts, max_ops=self.max_batch):
            self.batches.append(len(part))
            sends += 1
            failed = False
            for i in part:
                try:
                    await apply(self, ops[i])
                    outcomes.append(None)
                except KernelError as e:
                    outcomes.append(e)
                    failed = True
            if failed:
                break
        return results(ops, outcomes, sends)

    async def zero(self, key: ServiceKey | None = None) -> None:
        def change() -> int | None:
            if key is None:
                entries = [*self._inet.values(), *self._fwmark.values()]
            elif (e := self._table(key).get(key)) is None:
                return errno.ESRCH
            else:
                entries = [e]
            for e in entries:
                e.stats = Stats()
                e.dests = [replace(d, stats=Stats()) for d in e.dests]
            return None

        self._run("-Z" if key is None else f"-Z {key}", STRICT, change)

    async def flush(self) -> None:
        def change() -> int | None:
            self._inet.clear()
            self._fwmark.clear()
            return None

        self._run("-C", STRICT, change)

    # --- global settings -------------------------------------------------------------------------

    async def set_timeouts(self, t: Timeouts) -> None:
        def change() -> int | None:
            if any(v > INT_MAX // HZ for v in (t.tcp, t.tcp_fin, t.udp)):
                return errno.EINVAL
            old = self._timeouts
            self._timeouts = Timeouts(tcp=t.tcp or old.tcp, tcp_fin=t.tcp_fin or old.tcp_fin, udp=t.udp or old.udp)
            return None

        self._run(f"--set {t.tcp} {t.tcp_fin} {t.udp}", STRICT, change)

    async def start_daemon(self, d: SyncDaemon) -> None:
        def change() -> int | None:
            if d.state not in _DAEMON_NAMES:
                return errno.EINVAL
            if d.state in self._daemons:
                return errno.EEXIST
            mtu = self.interfaces.get(d.mcast_ifn)
            if mtu is None:
                return errno.ENODEV
            if any(k.af != d_.key.af for k, e in self._inet.items() for d_ in e.dests) or any(
                    k.af != d_.key.af for k, e in self._fwmark.items() for d_ in e.dests):
                return errno.EINVAL  # sync cannot carry mixed-family services
            # as start_sync_thread: a 1500-byte MTU for a master, the device's (1500..65535) for a backup,
            # less the IP and UDP headers; an explicit maxlen is clamped into that range
            link_mtu = 1500 if d.state == 1 else min(max(mtu, 1500), 65535)
            room = link_mtu - (48 if ":" in d.mcast_group else 28)
            lowest = 1 if d.state == 1 else 1024
            maxlen = min(max(d.sync_maxlen, lowest), room) if d.sync_maxlen else room
            self._daemons[d.state] = replace(d, sync_maxlen=maxlen, mcast_group=d.mcast_group or "224.0.0.81",
                                             mcast_port=d.mcast_port or 8848, mcast_ttl=d.mcast_ttl or 1)
            return None

        op = f"--start-daemon {_DAEMON_NAMES.get(d.state, d.state)} --mcast-interface {d.mcast_ifn} --syncid {d.syncid}"
        self._run(op, DONE_ON_ADD, change)

    async def stop_daemon(self, state: int) -> None:
        def change() -> int | None:
            if state not in _DAEMON_NAMES:
                return errno.EINVAL
            return errno.ESRCH if self._daemons.pop(state, None) is None else None

        self._run(f"--stop-daemon {_DAEMON_NAMES.get(state, state)}", DONE_ON_DELETE, change)

    async def close(self) -> None:
        self.closed = True

    # --- test helpers: what only traffic could do to a real table --------------------------------

    def lose_daemon(self, state: int) -> None:
        """Pretend another program stopped a sync daemon (`ipvsadm --stop-daemon backup`): not in `log`."""
        self._daemons.pop(state, None)

    def set_counters(self, service: ServiceKey, dest: DestKey | None = None, *, stats: Stats | None = None,
                     active_conns: int = 0, inact_conns: int = 0, persist_conns: int = 0) -> None:
        """Pretend traffic happened: set a service's stats, or a dest's stats and connection counts."""
        e = self._table(service)[service]
        if dest is None:
            e.stats = stats or Stats()
            return
        e.dests = [replace(d, stats=stats or Stats(), active_conns=active_conns, inact_conns=inact_conns,
                           persist_conns=persist_conns) if d.key == dest else d for d in e.dests]


