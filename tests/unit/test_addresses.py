"""Following addresses through a real rtnetlink, in a private network namespace (root only; no IPVS, no traffic):
the watcher's dump and events, recovery from an overflowed socket, and the daemon reporting VIP roles through
`status`, the metrics, the event log and its own log, across a reload."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipvsd import config as configmod
from ipvsd.commands.status import render
from ipvsd.core import roles
from ipvsd.kernel.fake import FakeKernel
from ipvsd.shell import control
from ipvsd.shell.addresses import AddressWatcher
from ipvsd.shell.daemon import Daemon, Options
from tests.support.private_netns import PrivateNetns, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")
VIP = "10.9.0.1"
NETLINK_ROUTE = 0


@pytest.fixture
def ns() -> Iterator[PrivateNetns]:
    """A private namespace with `lo` up and a veth pair v0/v1 up (dummy interfaces may not exist on the host)."""
    with PrivateNetns() as n:
        n.ip("link set lo up", "link add v0 type veth peer name v1", "link set v0 up", "link set v1 up")
        yield n


def route_socket(ns: PrivateNetns, rcvbuf: int | None = None) -> Callable[[], socket.socket]:
    def make() -> socket.socket:
        sock = ns.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock
    return make


class Seen:
    """Every observation the watcher hands over, and a wait for one that satisfies a condition."""

    def __init__(self) -> None:
        self.all: list[roles.Observed] = []
        self.changed = asyncio.Event()

    def __call__(self, observed: roles.Observed) -> None:
        self.all.append(observed)
        self.changed.set()

    async def until(self, cond: Callable[[roles.Observed], bool], what: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not (self.all and cond(self.all[-1])):
                self.changed.clear()
                await self.changed.wait()
        assert self.all and cond(self.all[-1]), f"timed out waiting for {what}"


def where(vip: str) -> Callable[[roles.Observed], tuple[str, ...]]:
    return lambda o: roles.holders([vip], o)[vip]


async def test_the_watcher_follows_addresses_links_and_dad(ns: PrivateNetns) -> None:
    ns.ip(f"addr add {VIP}/32 dev lo")
    seen = Seen()
    watcher = AddressWatcher(seen, open_socket=route_socket(ns))
    task = asyncio.create_task(watcher.run())
    held = where(VIP)
    try:
        await seen.until(lambda o: {link.name for link in o.links.values()} >= {"lo", "v0", "v1"}, "the dump")
        first = seen.all[0]
        assert any(a.addr == VIP and first.links[a.index].loopback for a in first.addresses), "dumped on lo"
        assert held(first) == ()

        ns.ip(f"addr add {VIP}/32 dev v0")
        await seen.until(lambda o: held(o) == ("v0",), "the VIP on v0")
        ns.ip("link set v0 down")
        await seen.until(lambda o: held(o) == (), "v0 down")
        ns.ip("link set v0 up", f"addr add {VIP}/24 dev v1")
        await seen.until(lambda o: held(o) == ("v0", "v1"), "v0 up again, the VIP on v1 too")
        # a port that joins and leaves a bridge: link events of family AF_BRIDGE, v1 itself stays
        ns.ip("link add br0 type bridge", "link set v1 master br0", "link set v1 nomaster", "link del br0",
              "addr add 10.9.9.9/32 dev lo")
        await seen.until(lambda o: any(a.addr == "10.9.9.9" for a in o.addresses), "the bridge's events")
        assert held(seen.all[-1]) == ("v0", "v1")
        ns.ip(f"addr del {VIP}/32 dev v0", "link del v1")  # deleting v1 deletes v0, its peer, too
        await seen.until(lambda o: held(o) == () and {link.name for link in o.links.values()} == {"lo"},
                         "the veth pair gone")

        ns.ip("link add v2 type veth peer name v3", "link set v3 up", "link set v2 up", "addr add fd00::1/128 dev v2",
              "addr add fd00::2/128 dev v2 nodad")
        await seen.until(lambda o: where("fd00::2")(o) == ("v2",), "an IPv6 VIP without DAD")
        # fd00::1 waits for duplicate address detection (a second or so): seen, but not usable, meanwhile
        assert any(a.addr == "fd00::1" and not a.usable for o in seen.all for a in o.addresses)
        assert watcher.dumps == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_change_during_the_dump_is_applied_after_it(ns: PrivateNetns) -> None:
    many = [f"10.7.{i // 200}.{i % 200 + 1}" for i in range(600)]  # a dump of several datagrams
    ns.ip(*(f"addr add {a}/32 dev v0" for a in many))
    first = socket.inet_aton(many[0])

    class Racing(socket.socket):
        """Deletes the first address right after the dump has delivered it: the kernel sends the event
        while the rest of the dump is still to be read."""

        fired = False

        def recv(self, size: int, flags: int = 0) -> bytes:
            data = super().recv(size, flags)
            if not self.fired and first in data:
                self.fired = True
                ns.ip(f"addr del {many[0]}/32 dev v0")
            return data

    def open_socket() -> socket.socket:
        return Racing(fileno=route_socket(ns)().detach())

    seen = Seen()
    watcher = AddressWatcher(seen, open_socket=open_socket)
    task = asyncio.create_task(watcher.run())
    try:
        await seen.until(lambda o: any(a.addr == many[-1] for a in o.addresses), "the dump")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert watcher.dumps == 1 and seen.all[0] == seen.all[-1], "one reading, the event applied before it was told"
    assert {a.addr for a in seen.all[0].addresses if a.addr.startswith("10.7.")} == set(many[1:])


async def test_an_overflowed_socket_is_logged_once_read_again_and_followed_on(
        ns: PrivateNetns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    seen = Seen()
    watcher = AddressWatcher(seen, open_socket=route_socket(ns, rcvbuf=1))  # the kernel's minimum, ~2 KiB
    task = asyncio.create_task(watcher.run())
    many = [f"10.8.{i // 200}.{i % 200 + 1}" for i in range(400)]
    try:
        await seen.until(lambda o: bool(o.links), "the dump")
        # ip runs while this loop is blocked: 400 events into a 2 KiB buffer overflow it (ENOBUFS)
        ns.ip(*(f"addr add {a}/32 dev v0" for a in many))
        await seen.until(lambda o: {a.addr for a in o.addresses} >= set(many), "all 400 addresses")
        assert watcher.dumps >= 2, "read again after the overflow"
        ns.ip(f"addr add {VIP}/32 dev v0")
        await seen.until(lambda o: where(VIP)(o) == ("v0",), "an address added after the recovery")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No buffer space available" in errors[0], errors
    assert any("read again after the error" in r.getMessage() for r in caplog.records)


async def test_a_socket_that_cannot_be_opened_is_logged_once_and_tried_again(
        ns: PrivateNetns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    attempts = 0
    works = route_socket(ns)

    def flaky() -> socket.socket:
        nonlocal attempts
        attempts += 1
        if attempts <= 4:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return works()

    seen = Seen()
    watcher = AddressWatcher(seen, open_socket=flaky, backoff=0.01)
    task = asyncio.create_task(watcher.run())
    try:
        await seen.until(lambda o: bool(o.links), "the dump after four failures")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert attempts == 5 and watcher.dumps == 1
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert logged == [("ERROR", "following interface addresses: Operation not permitted (errno 1); reading them "
                                "again (VIP roles may be stale meanwhile)"),
                      ("INFO", "addresses read again after the error; VIP roles are current")]


CONFIG = """
[settings]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"
metrics_listen = "127.0.0.1:0"
clean_stop = false
vips = [{vips}]

[[services]]
address = "{vip}"
port = 80

[[services.reals]]
address = "10.9.1.1"
port = 80
"""


async def test_the_daemon_reports_which_vips_it_holds(ns: PrivateNetns, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "ipvsd.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, vip=VIP, vips='"10.9.0.2", "fd00::254"'))
    events = tmp_path / "events.jsonl"
    ns.ip(f"addr add {VIP}/32 dev lo", "addr add 10.9.0.2/32 dev v0")
    config, _ = configmod.load(str(path))
    daemon = Daemon(Options(config_path=str(path), watch=False, events_file=str(events)), config, FakeKernel,
                    addresses=lambda changed: AddressWatcher(changed, open_socket=route_socket(ns)).run())
    task = asyncio.create_task(daemon.run())
    sock = str(tmp_path / "control.sock")

    async def vips() -> dict[str, tuple[bool, list[str]]]:
        async with asyncio.timeout(10):
            while True:
                answer = await control.request(sock, "status") if daemon.control is not None else {}
                if answer.get("vips") is not None:
                    return {v["vip"]: (v["held"], v["interfaces"]) for v in answer["vips"]}
                await asyncio.sleep(0.02)

    async def until(want: dict[str, tuple[bool, list[str]]], what: str) -> None:
        async with asyncio.timeout(10):
            while await vips() != want:
                await asyncio.sleep(0.02)

    def metric(vip: str) -> str | None:
        assert daemon.metrics is not None
        for line in daemon.metrics.exposition().decode().splitlines():
            if line.startswith(f'ipvsd_vip_held{{vip="{vip}"}} '):
                return line.rsplit(" ", 1)[1]
        return None

    try:
        await until({VIP: (False, []), "10.9.0.2": (True, ["v0"]), "fd00::254": (False, [])}, "the first reading")
        assert "this director holds 1 of its 3 VIPs: 10.9.0.2 (on v0)" in caplog.text
        assert (metric(VIP), metric("10.9.0.2")) == ("0.0", "1.0")

        ns.ip(f"addr add {VIP}/32 dev v0", "addr add fd00::254/128 dev v1 nodad", "addr del 10.9.0.2/32 dev v0")
        await until({VIP: (True, ["v0"]), "10.9.0.2": (False, []), "fd00::254": (True, ["v1"])}, "the changes")
        assert f"{VIP} is now held by this director (on v0)" in caplog.text
        assert "10.9.0.2 is no longer held by this director (it was on v0)" in caplog.text
        assert (metric(VIP), metric("10.9.0.2"), metric("fd00::254")) == ("1.0", "0.0", "1.0")
        text = render(await control.request(sock, "status"), now=daemon.wall())
        rows = [re.sub(r"  \d+s  ", "  Ns  ", line) for line in text.splitlines()[:5]]  # a slow machine: 1s
        assert rows == ["VIP        ROLE      SINCE  ON",
                        "10.9.0.1   held      Ns     v0",
                        "10.9.0.2   not held  Ns     -",
                        "fd00::254  held      Ns     v1",
                        ""], text

        path.write_text(CONFIG.format(tmp=tmp_path, vip=VIP, vips=""))
        assert (await daemon.reload("test")).outcome == "ok"
        assert await vips() == {VIP: (True, ["v0"])}, "the swap itself assesses the VIPs of the new configuration"
        assert metric("10.9.0.2") is None, "a VIP no longer configured has no series"
    finally:
        daemon.stopping.set()
        assert await asyncio.wait_for(task, 10) == 0
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    vip_events = [(e["vip"], e["held"], e["first"]) for e in logged if e["type"] == "vip"]
    assert vip_events[:3] == [(VIP, False, True), ("10.9.0.2", True, True), ("fd00::254", False, True)]
    # the three changes come in one datagram or several: in the kernel's order, or in address order within one
    assert sorted(vip_events[3:]) == [(VIP, True, False), ("10.9.0.2", False, False), ("fd00::254", True, False)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
