"""ipvsd's VIP routes on the host's real kernel, in a private network namespace: added, read, deleted, ours only
(the protocol number), in tables above 255 too, and a table another protocol writes to reported."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from ipvsd.shell.routes import NETLINK_ROUTE, Route, RouteTable
from tests.support.private_netns import PrivateNetns, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")


@pytest.fixture
def ns() -> Iterator[PrivateNetns]:
    with PrivateNetns() as n:
        n.ip("link set lo up")
        yield n


def table(ns: PrivateNetns, number: int = 200, protocol: int = 99) -> RouteTable:
    return RouteTable(number, protocol, "lo", open_socket=lambda: ns.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                                                            NETLINK_ROUTE))


def shown(ns: PrivateNetns, *args: str) -> str:
    return subprocess.run(["nsenter", f"--net={ns.path}", "ip", *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_routes_are_added_read_and_deleted_as_ip_route_shows_them(ns: PrivateNetns) -> None:
    t = table(ns)
    t.add("192.0.2.10/32")
    t.add("192.0.2.10/32")  # there already: fine
    t.add("2001:db8::10/128")
    assert t.read() == {"192.0.2.10/32", "2001:db8::10/128"}
    assert shown(ns, "route", "show", "table", "200").split() == ["192.0.2.10", "dev", "lo", "proto", "openr",
                                                                 "scope", "link"]
    assert "2001:db8::10 dev lo proto openr" in shown(ns, "-6", "route", "show", "table", "200")
    assert shown(ns, "route", "show", "table", "main") == ""  # nothing outside the table
    t.delete("192.0.2.10/32")
    t.delete("192.0.2.99/32")  # not there: fine
    assert t.read() == {"2001:db8::10/128"}
    big = table(ns, 300000)
    big.add("192.0.2.11/32")
    assert big.read() == {"192.0.2.11/32"} and t.read() == {"2001:db8::10/128"}


def test_only_ipvsd_s_protocol_is_touched_and_others_are_a_conflict(ns: PrivateNetns) -> None:
    ns.ip("route add 198.51.100.7/32 dev lo table 200 proto bird")
    t = table(ns)
    assert t.read() == set()
    assert t.dump() == [Route("198.51.100.7/32", 12, 1)]
    t.delete("198.51.100.7/32")  # the request names protocol 99: the kernel keeps bird's route
    assert "198.51.100.7 dev lo proto bird" in shown(ns, "route", "show", "table", "200")
    conflict = t.conflict()
    assert conflict is not None and conflict.startswith("announce.table: table 200 holds routes of protocol bird "
                                                        "(198.51.100.7/32)")
    assert table(ns, 201).conflict() is None
    missing = RouteTable(201, 99, "nosuch0", open_socket=t.open_socket)
    assert missing.conflict() == "announce.device: there is no interface 'nosuch0'"
    with pytest.raises(OSError, match="nosuch0"):
        missing.add("192.0.2.10/32")
