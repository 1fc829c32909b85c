"""The director's interfaces and addresses, followed through rtnetlink: the input of VIP roles (`ipvsd.core.roles`).

One NETLINK_ROUTE socket in ipvsd's own network namespace joins the link and IPv4/IPv6 address groups first,
then dumps links and addresses; the events that arrive meanwhile are applied after the dump, in order, so the
table ends right whatever raced the dump (each event states what is, not what changed). The socket is read in
the daemon's event loop (no thread, no polling) and pyroute2's message classes decode what it reads; a plain
socket rather than pyroute2's AsyncIPRSocket because that one sorts replies from events by sequence number
alone (an event caused by `ip` carries ip's sequence number, which may match a dump's) and imports pyroute2's
whole IPRoute. An error on the socket (ENOBUFS after an event storm overflowed its buffer, say) is logged
once; the socket is opened again and everything dumped again, at once the first time and backing off while
it keeps failing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsg
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from ipvsd.core.roles import Address, Link, Observed, canonical

log = logging.getLogger("ipvsd.addresses")

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
NETLINK_ROUTE = 0
RCVBUF = 1 << 20  # what pyroute2 asks for its own sockets; the kernel caps it at net.core.rmem_max
RECV = 1 << 16  # a dump datagram holds up to 32 KiB
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
BACKOFF = 0.5  # seconds before the second attempt in a row; doubled each time up to BACKOFF_MAX
BACKOFF_MAX = 30.0
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence number, port id


class linkmsg(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """struct ifinfomsg and the one link attribute ipvsd reads, its name; the others are skipped undecoded.

    pyroute2's own ifinfmsg decodes every link attribute and imports a plugin per link kind as it is itself
    imported: 13 ms of a start natively (5 % of `ipvsd run`'s imports), for fields ipvsd never reads.
    """

    prefix = "IFLA_"
    fields = (("family", "B"), ("__align", "x"), ("ifi_type", "H"), ("index", "i"), ("flags", "I"), ("change", "I"))
    nla_map = (("IFLA_UNSPEC", "none"), ("IFLA_ADDRESS", "hex"), ("IFLA_BROADCAST", "hex"),
               ("IFLA_IFNAME", "asciiz"))


_DECODERS: dict[int, Any] = {RTM_NEWLINK: linkmsg, RTM_DELLINK: linkmsg, RTM_NEWADDR: ifaddrmsg,
                             RTM_DELADDR: ifaddrmsg}


def route_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the calling thread's network namespace (ipvsd's own)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    return sock


class Interrupted(Exception):
    """The kernel flagged a dump as inconsistent (the table changed while it was read): read it again."""


class Table:
    """Links and addresses as the dump and the events since have told them."""

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.addresses: dict[tuple[int, str, int], Address] = {}  # by interface, address and prefix length

    def observed(self) -> Observed:
        return Observed(dict(self.links), frozenset(self.addresses.values()))

    def apply(self, msg: Any) -> bool:
        """Apply one rtnetlink message; True when it changed the table."""
        kind = msg["header"]["type"]
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            if msg["family"] != socket.AF_UNSPEC:  # AF_BRIDGE: a port joined or left a bridge, not a link event
                return False
            index = msg["index"]
            if kind == RTM_DELLINK:
                gone = [k for k in self.addresses if k[0] == index]
                for k in gone:
                    del self.addresses[k]
                return self.links.pop(index, None) is not None or bool(gone)
            flags = msg["flags"]
            link = Link(index, msg.get("IFLA_IFNAME") or str(index), bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK))
            if self.links.get(index) == link:
                return False
            self.links[index] = link
            return True
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            # IFA_LOCAL is the local address; IFA_ADDRESS is the peer's on a point-to-point link (IPv4) and the
            # local one otherwise (IPv6 sends IFA_ADDRESS only).
            text = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if not text:
                return False
            flags = msg.get("IFA_FLAGS") or msg["flags"]  # IFA_FLAGS holds all 32 bits; the header byte 8
            key = (msg["index"], canonical(text), msg["prefixlen"])
            if kind == RTM_DELADDR:
                return self.addresses.pop(key, None) is not None
            new = Address(*key, usable=not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))
            old, self.addresses[key] = self.addresses.get(key), new
            return old != new
        return False


class AddressWatcher:
    """Follows links and addresses and calls `on_change` with the whole picture after each change.

    `on_change` also runs after every (re-)dump, so a consumer never misses what a lost event said.
    """

    def __init__(self, on_change: Callable[[Observed], None], *,
                 open_socket: Callable[[], socket.socket] = route_socket, backoff: float = BACKOFF) -> None:
        self.on_change = on_change
        self.open_socket = open_socket
        self.backoff = backoff
        self.table = Table()
        self.dumps = 0  # complete dumps so far (the first, and one after every error)
        self._seq = itertools.count(1)

    async def run(self) -> None:
        """Follow until cancelled; never raises anything else."""
        failing = False
        delay = 0.0
        while True:
            sock: socket.socket | None = None
            try:
                sock = self.open_socket()
                sock.setblocking(False)
                sock.bind((0, GROUPS))
                await self._dump(sock)
                if failing:
                    log.info("addresses read again after the error; VIP roles are current")
                failing, delay = False, 0.0
                self.on_change(self.table.observed())
                loop = asyncio.get_running_loop()
                while True:
                    if self._apply(_messages(await loop.sock_recv(sock, RECV))):
                        self.on_change(self.table.observed())
            except asyncio.CancelledError:
                raise
            except Interrupted:
                log.debug("rtnetlink dump interrupted by a change; reading again")
            except Exception as e:  # whatever broke the socket, read everything again on a new one
                if not failing:
                    log.error("following interface addresses: %s; reading them again (VIP roles may be stale "
                              "meanwhile)", _describe(e))
                else:
                    log.debug("following interface addresses, again: %s", _describe(e))
                delay = min(BACKOFF_MAX, delay * 2 or self.backoff) if failing else 0.0
                failing = True
            finally:
                if sock is not None:
                    sock.close()
            if delay:
                await asyncio.sleep(delay)

    def _apply(self, messages: Iterator[Any] | list[Any]) -> bool:
        changed = False
        for msg in messages:
            changed = self.table.apply(msg) or changed
        return changed

    async def _dump(self, sock: socket.socket) -> None:
        """Dump links then addresses into a new table, then apply the events that arrived meanwhile, in order."""
        loop = asyncio.get_running_loop()
        port = sock.getsockname()[0]
        table = Table()
        events: list[Any] = []
        for kind, body in ((RTM_GETLINK, 16), (RTM_GETADDR, 8)):  # struct ifinfomsg / ifaddrmsg, all zero: any
            seq = next(self._seq)
            await loop.sock_sendall(sock, _HEADER.pack(_HEADER.size + body, kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                                    + bytes(body))
            done = False
            while not done:
                for msg in _messages(await loop.sock_recv(sock, RECV), keep=True):
                    header = msg["header"]
                    if header["sequence_number"] != seq or header["pid"] != port:
                        if header["type"] in _DECODERS:
                            events.append(msg)  # an event: its sequence number and port are its sender's
                        continue
                    if header["flags"] & NLM_F_DUMP_INTR:  # on any reply, NLMSG_DONE included
                        raise Interrupted
                    if header["type"] == NLMSG_ERROR:
                        raise OSError(-msg["error"], f"rtnetlink dump: {os.strerror(-msg['error'])}")
                    if header["type"] == NLMSG_DONE:
                        done = True
                        break
                    table.apply(msg)
        for msg in events:
            table.apply(msg)
        self.table = table
        self.dumps += 1


def _messages(data: bytes, *, keep: bool = False) -> Iterator[Any]:
    """The messages of one datagram, decoded; `keep`: also NLMSG_DONE and NLMSG_ERROR (as their header)."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, seq, port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        decoder = _DECODERS.get(kind)
        if decoder is not None:
            msg = decoder(data[offset:offset + length])
            msg.decode()
            yield msg
        elif keep and kind in (NLMSG_DONE, NLMSG_ERROR):
            error = struct.unpack_from("=i", data, offset + _HEADER.size)[0] if kind == NLMSG_ERROR else 0
            yield {"header": {"type": kind, "flags": flags, "sequence_number": seq, "pid": port}, "error": error}
        offset += (length + 3) & ~3


def _describe(e: Exception) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return f"{e.strerror or os.strerror(e.errno)} (errno {e.errno})"
    return f"{type(e).__name__}: {e}"  # a message pyroute2 could not decode, say
