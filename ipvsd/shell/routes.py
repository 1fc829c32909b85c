"""The VIP routes ipvsd announces: host routes in one kernel routing table with ipvsd's own protocol number.

A routing daemon (BIRD's `protocol kernel { kernel table N; learn; }`) reads that table and exports it over BGP,
so no process talks to the routing daemon and `ip route show table N` shows the state. ipvsd owns exactly the
routes of table N whose protocol is its own: it reads, adds and deletes only those (the kernel filters the dump
by table and protocol on a strict-checking socket, and the reply is filtered again here, for kernels before
4.20 that ignore the filter). A route is `VIP/32` (or /128) `dev DEVICE scope link`, as
`ip route add VIP/32 dev lo table N proto P` makes it.

Requests are small and rare (a route per VIP, on a change): a blocking NETLINK_ROUTE socket per call, with a
receive timeout, is simpler than a socket in the event loop and costs well under a millisecond.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ipvsd.config.schema import ROUTING_DAEMON_PROTOCOLS, Announce

NETLINK_ROUTE = 0
NETLINK_GET_STRICT_CHK = 12  # Linux 4.20+: dumps honour the header's filters
SOL_NETLINK = 270
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RT_SCOPE_LINK, RTN_UNICAST = 253, 1
RT_TABLE_UNSPEC = 0
TIMEOUT = 5.0  # seconds for the kernel to answer one request: it answers at once, unless something is very wrong
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")


@dataclass(frozen=True, order=True)
class Route:
    """A route as read back from the table: its destination, protocol and device index."""

    dst: str  # "192.0.2.10/32"
    protocol: int
    oif: int = 0


class RouteTable:
    """Reads and writes ipvsd's routes in one kernel table (`table`, `protocol`, `device`)."""

    def __init__(self, table: int, protocol: int, device: str, *,
                 open_socket: Callable[[], socket.socket] | None = None) -> None:
        self.table = table
        self.protocol = protocol
        self.device = device
        self.open_socket = open_socket or _netlink_socket  # tests open theirs in a namespace of their own
        self._seq = 0

    @classmethod
    def of(cls, announce: Announce) -> RouteTable:
        """The table an [announce] section names."""
        return cls(announce.table, announce.protocol, announce.device)

    def conflict(self) -> str | None:
        """Why this table is not ipvsd's to use (another protocol's routes are in it, the device is missing), or
        None. Raises OSError when the table cannot be read."""
        try:
            socket.if_nametoindex(self.device)
        except OSError:
            return f"announce.device: there is no interface {self.device!r}"
        others = sorted(r for r in self.dump() if r.protocol != self.protocol)
        if not others:
            return None
        names = sorted({ROUTING_DAEMON_PROTOCOLS.get(r.protocol, str(r.protocol)) for r in others})
        shown = ", ".join(r.dst for r in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return (f"announce.table: table {self.table} holds routes of protocol {', '.join(names)} ({shown}): ipvsd "
                f"keeps its routes in a table no other program writes to; choose another table")

    def read(self) -> set[str]:
        """The destinations of ipvsd's routes in the table (protocol ours)."""
        return {r.dst for r in self.dump() if r.protocol == self.protocol}

    def dump(self) -> list[Route]:
        """Every route of the table, whatever its protocol (`foreign` tells whose they are)."""
        out: list[Route] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            out.extend(self._dump(family))
        return out

    def add(self, route: str) -> None:
        """Add `route` (`192.0.2.10/32`); one that is there already is left alone."""
        with contextlib.suppress(FileExistsError):
            self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route)

    def delete(self, route: str) -> None:
        """Delete `route`, ours only (the request names our protocol); a missing one is fine."""
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # ESRCH: no such route
            self._request(RTM_DELROUTE, 0, route)

    # --- the wire ---------------------------------------------------------------------------------------------

    def _next(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _request(self, kind: int, flags: int, route: str) -> None:
        net = ipaddress.ip_network(route)
        a = net.network_address
        family = socket.AF_INET if a.version == 4 else socket.AF_INET6
        try:
            oif = socket.if_nametoindex(self.device)
        except OSError:
            raise OSError(f"device {self.device!r} does not exist") from None
        body = _RTMSG.pack(family, net.prefixlen, 0, 0, self._table_byte(), self.protocol, RT_SCOPE_LINK,
                           RTN_UNICAST, 0)
        body += _attr(RTA_DST, a.packed) + _attr(RTA_OIF, struct.pack("=I", oif)) \
            + _attr(RTA_TABLE, struct.pack("=I", self.table))
        with self._socket() as sock:
            seq = self._next()
            sock.send(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body)
            while True:
                for mtype, mseq, payload in _messages(sock.recv(1 << 16)):
                    if mseq != seq or mtype != NLMSG_ERROR:
                        continue
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return

    def _dump(self, family: int) -> Iterator[Route]:
        body = _RTMSG.pack(family, 0, 0, 0, self._table_byte(), 0, 0, 0, 0)
        body += _attr(RTA_TABLE, struct.pack("=I", self.table))
        with self._socket() as sock:
            with contextlib.suppress(OSError):  # an old kernel: it dumps every table, filtered below
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            seq = self._next()
            sock.send(_HEADER.pack(_HEADER.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
            while True:
                for mtype, mseq, payload in _messages(sock.recv(1 << 16)):
                    if mseq != seq:
                        continue
                    if mtype == NLMSG_DONE:
                        return
                    if mtype == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", payload)[0]
                        if err:
                            raise OSError(err, os.strerror(err))
                        return
                    if mtype == RTM_NEWROUTE and (route := _route(payload, self.table)) is not None:
                        yield route

    def _socket(self) -> socket.socket:
        sock = self.open_socket()
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        return sock

    def _table_byte(self) -> int:
        return self.table if self.table < 256 else RT_TABLE_UNSPEC  # the table is in RTA_TABLE either way


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)


def _attr(kind: int, value: bytes) -> bytes:
    length = _ATTR.size + len(value)
    return _ATTR.pack(length, kind) + value + bytes((4 - length % 4) % 4)


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, payload) of each message of one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, seq, _port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        yield kind, seq, data[offset + _HEADER.size:offset + length]
        offset += (length + 3) & ~3


def _route(payload: bytes, table: int) -> Route | None:
    """Decode one RTM_NEWROUTE of a dump; None when it is not in `table` (a kernel that did not filter)."""
    if len(payload) < _RTMSG.size:
        return None
    family, dst_len, _src, _tos, tbyte, protocol, _scope, _type, _flags = _RTMSG.unpack_from(payload)
    dst: bytes = b""
    oif = 0
    rtable = tbyte
    offset = _RTMSG.size
    while offset + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, offset)
        if length < _ATTR.size:
            break
        value = payload[offset + _ATTR.size:offset + length]
        if kind == RTA_DST:
            dst = value
        elif kind == RTA_OIF and len(value) >= 4:
            oif = struct.unpack_from("=I", value)[0]
        elif kind == RTA_TABLE and len(value) >= 4:
            rtable = struct.unpack_from("=I", value)[0]
        offset += (length + 3) & ~3
    if rtable != table:
        return None
    if family == socket.AF_INET:
        addr = str(ipaddress.IPv4Address(dst)) if len(dst) == 4 else "0.0.0.0"
    elif family == socket.AF_INET6:
        addr = str(ipaddress.IPv6Address(dst)) if len(dst) == 16 else "::"
    else:
        return None
    return Route(f"{addr}/{dst_len}", protocol, oif)


class MemoryRouteTable(RouteTable):
    """A route table in memory, for unit tests: the same interface, with the routes of other protocols in
    `others` and `fail` set to an errno to make the next requests fail."""

    def __init__(self, table: int, protocol: int, device: str) -> None:
        super().__init__(table, protocol, device)
        self.routes: set[str] = set()
        self.others: list[Route] = []
        self.fail: int = 0
        self.log: list[tuple[str, str]] = []

    def dump(self) -> list[Route]:
        self._check()
        return [Route(r, self.protocol) for r in sorted(self.routes)] + list(self.others)

    def add(self, route: str) -> None:
        self._check()
        self.log.append(("add", route))
        self.routes.add(route)

    def delete(self, route: str) -> None:
        self._check()
        self.log.append(("delete", route))
        self.routes.discard(route)

    def _check(self) -> None:
        if self.fail:
            raise OSError(self.fail, os.strerror(self.fail))
