"""A fast watcher of the director's IPVS table: a thread in the `lb` namespace reading /proc every few ms.

Under the lab's emulated CPU a forked `ipvsadm -Ln` costs ~140 ms, longer than what we measure. Reading
/proc/thread-self/net/ip_vs from a thread that joined the namespace costs well under a millisecond, and the
timestamps (time.monotonic) are taken in the same process as the events they are compared with. When only one
service's dests matter, `one_service` reads just those through netlink: /proc holds the whole table, and at
11,000 entries one read of it takes ~20 ms in the lab, longer than the change being timed is late by then.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.generic import GenericNetlinkSocket

from ipvsd.kernel import _messages as m
from ipvsd.kernel import _wire
from ipvsd.model import ServiceKey
from tests.kernel.lab import parse_proc_ip_vs
from tests.netns import join_netns

Table = dict[str, dict[str, int]]
_NETLINK_GENERIC, _NLMSG_ERROR, _NLMSG_DONE = 16, 2, 3


def _proc() -> Callable[[], str]:
    """The whole table's /proc text (the thread has joined the namespace)."""

    def read() -> str:
        with open("/proc/thread-self/net/ip_vs") as f:
            return f.read()

    return read


def one_service(protocol: int, vip: str, port: int) -> Callable[[], Callable[[], str]]:
    """A Watcher source: the number of dests of one service, from a netlink dump of them in the watcher's
    namespace (digest it with `dest_count`). The replies are counted, not decoded: a sample costs the emulated
    CPU little, so sampling every few ms takes little from the daemon being timed."""

    def opened() -> Callable[[], str]:
        genl = GenericNetlinkSocket()
        try:
            genl.bind(m.GENL_NAME, m.IpvsMessage)
            family = genl.prid
        finally:
            genl.close()
        # Freed with the reader when the watcher's thread ends.
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_GENERIC)
        sock.bind((0, 0))
        key = ServiceKey.inet(protocol, vip, port)
        request = _wire.request(family, m.CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))],
                                flags=NLM_F_REQUEST | NLM_F_DUMP, seq=1)

        def read() -> str:
            sock.send(request)
            dests = 0
            while True:
                data = sock.recv(1 << 16)
                at = 0
                while at + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, at)
                    if kind == _NLMSG_DONE:
                        return str(dests)
                    if kind == _NLMSG_ERROR:  # the dump failed (a missing service dumps no dests: "0")
                        return "-"
                    dests += kind == family
                    at += (length + 3) & ~3

        return read

    return opened


def dest_count(raw: str) -> Table:
    """`one_service`'s reading as a digest like `counts`' ({"count": {"rs": dests}}; {} when the dump failed)."""
    return {} if raw == "-" else {"count": {"rs": int(raw)}}


def counts(text: str) -> Table:
    """A cheap digest for big tables: {"count": {"svc": services, "rs": dests, "up": dests with weight > 0}}."""
    svc = rs = up = 0
    for line in text.splitlines()[3:]:
        if line.startswith("  ->"):
            rs += 1
            parts = line.split()
            if len(parts) > 3 and parts[3] != "0":
                up += 1
        elif line:
            svc += 1
    return {"count": {"svc": svc, "rs": rs, "up": up}}


@dataclass
class Change:
    """The table as first seen at monotonic time `t`."""

    t: float
    table: Table


@dataclass
class Watcher:
    """Samples the table of namespace `ns` every `interval` s; keeps every change, with the time it was seen."""

    ns: str
    interval: float = 0.005
    digest: Callable[[str], Table] = parse_proc_ip_vs
    """Raw /proc text -> the table compared between samples (parse_proc_ip_vs ignores connection counters)."""
    source: Callable[[], Callable[[], str]] = _proc
    """Opens, in the watcher's thread once it has joined the namespace, the reader of what `digest` is given."""
    changes: list[Change] = field(default_factory=list)
    samples: int = 0
    max_gap: float = 0.0
    span: float = 0.0
    """Seconds from the first sample to the last: span / (samples - 1) is the mean time between samples (a
    read of a big table's /proc text takes longer than `interval` in the lab VM)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> Watcher:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"watch-{self.ns}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        try:
            join_netns(self.ns)
            read = self.source()
            last_raw = None
            last = first = time.monotonic()
            while not self._stop.is_set():
                raw = read()
                now = time.monotonic()
                if self.samples:
                    self.max_gap = max(self.max_gap, now - last)
                else:
                    first = now
                last = now
                self.span = now - first
                self.samples += 1
                if raw != last_raw:  # connection counters change the text too: compare the digests
                    table = self.digest(raw)
                    with self._cond:
                        if not self.changes or self.changes[-1].table != table:
                            self.changes.append(Change(now, table))
                            self._cond.notify_all()
                    last_raw = raw
                if not ready.is_set():
                    ready.set()
                time.sleep(self.interval)
        except BaseException as e:  # surfaced to the caller through start()/wait_for()
            self._error = e
            ready.set()

    def current(self) -> Table:
        with self._cond:
            return self.changes[-1].table if self.changes else {}

    def wait_for(self, pred: Callable[[Table], bool], *, since: float, timeout: float) -> float | None:
        """Monotonic time of the first change seen after `since` whose table satisfies `pred`; None on timeout.

        When the table already satisfies `pred` at `since`, `since` itself is returned.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._error:
                    raise self._error
                before = [c for c in self.changes if c.t <= since]
                if before and pred(before[-1].table):
                    return since
                for c in self.changes[len(before):]:
                    if pred(c.table):
                        return c.t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def changes_between(self, t0: float, t1: float) -> list[Change]:
        with self._cond:
            return [c for c in self.changes if t0 < c.t <= t1]

