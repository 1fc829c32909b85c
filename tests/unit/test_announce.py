"""BGP scale-out's VIP routes ([announce]): the pure rules, then `ipvsd run` over the fake kernel and an in-memory
route table on virtual time — announced after the table, withdrawn before the weights go (quorum lost, director
drain, stop), a table that is not ipvsd's refused, and ops in the same order on every director."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from ipvsd import config as configmod
from ipvsd.config.schema import Announce, Config
from ipvsd.core import announce, desired, plan
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import AddDest, Proto, ServiceKey
from ipvsd.shell import bus
from ipvsd.shell.control_api import ControlApi
from ipvsd.shell.daemon import Daemon, Options
from ipvsd.shell.routes import MemoryRouteTable, Route
from tests.support import vtime
from tests.support.probes import Scripted

WEB = ServiceKey.inet(Proto.TCP, "192.0.2.10", 80)
TLS = ServiceKey.inet(Proto.TCP, "192.0.2.10", 443)
ROUTE = "192.0.2.10/32"


def _config(text: str) -> Config:
    return Config.model_validate(__import__("tomllib").loads(text))


TWO = """
[announce]
table = 200
[[services]]
address = "192.0.2.10"
port = 80
[[services]]
address = "192.0.2.10"
port = 443
[[services]]
address = "2001:db8::10"
port = 80
announce = false
[[services]]
fwmark = 7
announce = ["192.0.2.20"]
"""


def test_a_vip_is_announced_while_every_service_on_it_has_quorum() -> None:
    c = _config(TWO)
    fwm = ServiceKey.mark(7, 2)
    assert announce.announcers(c) == {ROUTE: (WEB, TLS), "192.0.2.20/32": (fwm,)}
    p = announce.plan(c, {WEB: True, TLS: True, fwm: True}, [])
    assert p.announce == ((ROUTE, "quorum"), ("192.0.2.20/32", "quorum")) and p.withdraw == ()
    p = announce.plan(c, {WEB: True, TLS: False, fwm: True}, [ROUTE, "192.0.2.20/32", "198.51.100.1/32"])
    assert p.withdraw == (("192.0.2.10/32", "TCP 192.0.2.10:443 has no quorum"),
                          ("198.51.100.1/32", "no longer configured"))
    assert announce.plan(c, {WEB: True, TLS: True, fwm: True}, [ROUTE], drained=True).withdraw == (
        (ROUTE, "the director is drained"),)
    assert announce.plan(c, {WEB: True, TLS: True, fwm: True}, [ROUTE], stopping=True).withdraw == (
        (ROUTE, "ipvsd is stopping"),)
    no = _config(TWO.replace("[announce]\ntable = 200", ""))
    assert announce.plan(no, {WEB: True}, [ROUTE]).withdraw == ((ROUTE, "no longer configured"),)


def test_a_service_that_loses_quorum_keeps_its_reals_for_the_withdraw_delay() -> None:
    c = _config(TWO + '[[services.reals]]\naddress = "192.0.2.31"\nforward = "route"\n'
                '[[services.checks]]\ntype = "tcp"\nport = 80\n'.replace("[[services.reals]]", "[[services.reals]]", 1))
    fwm = ServiceKey.mark(7, 2)
    grace = announce.grace(c, {fwm: True}, {}, now=100.0)
    assert grace == {fwm: 102.0}  # only announced services that had quorum
    lost = announce.lost({fwm: True}, {fwm: False}, {}, now=100.0)
    assert lost == {fwm: 100.0}
    assert announce.grace(c, {fwm: False}, lost, now=101.0) == {fwm: 102.0}
    assert announce.due(c, lost, None, now=101.0) == 102.0
    assert announce.due(c, lost, None, now=102.5) is None
    assert announce.lost({fwm: False}, {fwm: True}, lost, now=103.0) == {}  # regained


def test_dest_adds_come_in_the_same_order_whatever_the_config_order() -> None:
    """mh fills its lookup table in the order of the kernel's list: every director must add reals alike."""
    def adds(order: list[int]) -> list[str]:
        reals = "".join(f'[[services.reals]]\naddress = "10.0.0.{n}"\nport = 80\nforward = "route"\n' for n in order)
        c = _config(f'[[services]]\naddress = "192.0.2.10"\nport = 80\nscheduler = "mh"\n{reals}')
        built = desired.build(c, {})
        p = plan.plan(built.table, [], owned=frozenset(), now=0.0, limits=desired.limits(c), drains={})
        return [str(op.key) for op in p.ops if isinstance(op, AddDest)]

    first = adds([3, 1, 12, 2])
    assert first == adds([12, 2, 3, 1]) == adds([1, 2, 3, 12])
    assert first == ["10.0.0.1:80", "10.0.0.12:80", "10.0.0.2:80", "10.0.0.3:80"]  # by key, as the planner sorts


CONFIG = """
[settings]
state_dir = "{tmp}/state"
metrics_listen = ""
control_socket = "{tmp}/control.sock"
watch_config = false
resync_interval = 5
clean_stop = {clean}

[announce]
table = 200
withdraw_delay = 2

[sysctl]
sloppy_tcp = 1

[check_defaults]
interval = 0.5
timeout = 0.2
alpha = false

[[services]]
address = "192.0.2.10"
port = 80
scheduler = "mh"
on_failure = "quiesce"

[[services.checks]]
type = "tcp"

[[services.reals]]
address = "127.0.0.1"
port = 1
forward = "route"

[[services.reals]]
address = "127.0.0.2"
port = 2
forward = "route"
"""


class Routes(MemoryRouteTable):
    """The in-memory table, noting the kernel's weights of the service at each change (route first, then?)."""

    kernel: FakeKernel

    def add(self, route: str) -> None:
        super().add(route)
        self.seen.append(("add", route, _weights(self.kernel)))

    def delete(self, route: str) -> None:
        super().delete(route)
        self.seen.append(("delete", route, _weights(self.kernel)))

    seen: list[tuple[str, str, tuple[int, ...]]]


def _weights(kernel: FakeKernel) -> tuple[int, ...]:
    svc = kernel._inet.get(WEB)
    return () if svc is None else tuple(sorted(d.attrs.weight for d in svc.dests))


class Run:
    def __init__(self, tmp: Path, *, clean: bool = False) -> None:
        self.tmp = tmp
        self.kernel = FakeKernel()
        self.probes = Scripted()
        self.path = tmp / "ipvsd.toml"
        self.path.write_text(CONFIG.format(tmp=tmp, clean=str(clean).lower()))
        (tmp / "vs").mkdir()
        (tmp / "vs" / "sloppy_tcp").write_text("0\n")
        self.routes = Routes(200, 99, "lo")
        self.routes.kernel = self.kernel
        self.routes.seen = []
        self.events: list[bus.Event] = []
        self.task: asyncio.Task[int] | None = None

    def factory(self, a: Announce) -> Routes:
        assert (a.table, a.protocol, a.device) == (200, 99, "lo")
        return self.routes

    async def start(self) -> Daemon:
        config, _ = configmod.load(str(self.path))
        loop = asyncio.get_running_loop()
        self.daemon = Daemon(Options(config_path=str(self.path), watch=False), config, lambda: self.kernel,
                             probe_factory=self.probes, sysctl_root=self.tmp / "vs", route_factory=self.factory,
                             wall=lambda: 1.7e9 + loop.time())  # graces are wall-clock: virtual here too
        self.daemon.bus.subscribe(self.events.append)
        self.task = asyncio.create_task(self.daemon.run())
        return self.daemon

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not cond():
            assert self.task is not None and not self.task.done(), f"the daemon ended: {self.task}"
            if loop.time() - t0 > timeout:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)
        return loop.time() - t0

    async def stop(self) -> int:
        assert self.task is not None
        self.daemon.stopping.set()
        return await asyncio.wait_for(self.task, 30)


def test_routes_follow_quorum_withdrawn_before_the_weights_go(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def go() -> None:
        d = await r.start()
        await r.until(lambda: ROUTE in r.routes.routes, "the VIP announced")
        assert r.routes.seen == [("add", ROUTE, (1, 1))]  # after the reals are in: capacity before traffic
        loop = asyncio.get_running_loop()
        r.probes.ok.update({1: False, 2: False})
        t0 = loop.time()
        await r.until(lambda: ROUTE not in r.routes.routes, "the VIP withdrawn")
        assert r.routes.seen[-1] == ("delete", ROUTE, (1, 1))  # withdrawn while both still serve
        took = await r.until(lambda: _weights(r.kernel) == (0, 0), "the reals quiesced")
        assert 1.9 <= took <= 2.3, took  # withdraw_delay after the withdrawal, not before, not much later
        assert loop.time() - t0 < 5
        assert d.view is not None
        answer = await ControlApi(d.view, d, config_path=str(r.path)).status({})
        assert answer["routes"] == [{"route": ROUTE, "announced": False,
                                     "why": "TCP 192.0.2.10:80 has no quorum", "error": None}]
        assert d.metrics is not None
        assert d.metrics.registry.get_sample_value("ipvsd_vip_announced", {"route": ROUTE}) == 0
        r.probes.ok.update({1: True, 2: True})
        await r.until(lambda: ROUTE in r.routes.routes, "announced again")
        assert r.routes.seen[-1] == ("add", ROUTE, (1, 1))
        assert d.metrics.registry.get_sample_value("ipvsd_route_changes_total", {"action": "withdraw"}) == 1
        assert await r.stop() == 0

    vtime.run(go())
    assert r.routes.routes == set()  # on_stop = "withdraw"
    assert _weights(r.kernel) == (1, 1)  # without clean_stop the table stays
    actions = [(e.action, e.route) for e in r.events if isinstance(e, bus.RouteChanged)]
    assert actions == [("announce", ROUTE), ("withdraw", ROUTE), ("announce", ROUTE), ("withdraw", ROUTE)]


def test_a_director_drain_withdraws_first_and_drains_the_reals_after_the_delay(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def go() -> None:
        d = await r.start()
        await r.until(lambda: ROUTE in r.routes.routes, "the VIP announced")
        assert d.view is not None
        api = ControlApi(d.view, d, config_path=str(r.path), wall=d.wall)
        answer = await api.drain({"director": True, "reason": "kernel upgrade"})
        assert answer["applied"] and len(answer["reals"]) == 2
        assert ROUTE not in r.routes.routes
        assert r.routes.seen[-1] == ("delete", ROUTE, (1, 1))
        took = await r.until(lambda: _weights(r.kernel) in ((0, 0), ()), "the reals drained")
        assert 1.9 <= took <= 2.3, took
        status = await api.status({})
        assert status["routes"][0]["why"] == "the director is drained"
        await api.undrain({"director": True})
        await r.until(lambda: ROUTE in r.routes.routes and _weights(r.kernel) == (1, 1), "back in service")
        assert await r.stop() == 0

    vtime.run(go())


def test_a_clean_stop_withdraws_then_waits_before_deleting(tmp_path: Path) -> None:
    r = Run(tmp_path, clean=True)

    async def go() -> None:
        await r.start()
        await r.until(lambda: ROUTE in r.routes.routes, "the VIP announced")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await r.stop() == 0
        assert loop.time() - t0 >= 1.99

    vtime.run(go())
    assert r.routes.seen[-1] == ("delete", ROUTE, (1, 1)) and _weights(r.kernel) == ()


def test_a_table_with_another_protocols_routes_is_refused_at_start(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    r = Run(tmp_path)
    r.routes.others = [Route("198.51.100.0/24", 12)]

    async def go() -> int:
        await r.start()
        assert r.task is not None
        return await asyncio.wait_for(r.task, 30)

    assert vtime.run(go()) == 1
    assert r.routes.seen == [] and r.kernel._inet == {}
    assert any("announce.table: table 200 holds routes of protocol bird (198.51.100.0/24)" in x.getMessage()
               and x.levelno == logging.ERROR for x in caplog.records)


def test_a_failed_route_request_is_said_once_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = Run(tmp_path)

    async def go() -> None:
        await r.start()
        await r.until(lambda: _weights(r.kernel) == (1, 1), "the table programmed")
        r.routes.fail = 1  # EPERM
        await asyncio.sleep(12)  # passes and resyncs
        r.routes.fail = 0
        await r.until(lambda: ROUTE in r.routes.routes, "announced once it works")
        assert await r.stop() == 0

    r.routes.fail = 1
    vtime.run(go())
    errors = [x.getMessage() for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot read the routes of table 200: Operation not permitted" in errors[0], errors


def test_announce_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[announce]\ntable = 255\nprotocol = 2\n[[services]]\nfwmark = 3\nannounce = ["::1"]\n')
    with pytest.raises(configmod.ConfigErrors) as e:
        configmod.load(str(path))
    text = [str(x) for x in e.value.errors]
    assert any(":2: announce.table: table 255 is the kernel's 'local' table" in t for t in text), text
    assert any(":3: announce.protocol:" in t for t in text), text
    assert any("announce: ::1 is IPv6 but the service is IPv4" in t for t in text), text


def test_check_warns_what_breaks_flows_across_directors(tmp_path: Path) -> None:
    path = tmp_path / "ipvsd.toml"
    svc = ('[[services]]\naddress = "192.0.2.10"\nport = 80\nscheduler = "mh"\n{}\n'
           '[[services.reals]]\naddress = "10.0.0.1"\n')
    path.write_text("[announce]\ntable = 200\n" + svc.format('on_failure = "quiesce"'))
    text = [str(w) for w in configmod.load(str(path))[1]]
    assert any("sloppy_tcp = 1" in t for t in text), text
    assert any("without sched_flags mh-fallback" in t for t in text), text
    path.write_text('[announce]\ntable = 200\n[sysctl]\nsloppy_tcp = 1\n'
                    + svc.format('on_failure = "quiesce"\nsched_flags = ["mh-fallback"]'))
    assert [str(w) for w in configmod.load(str(path))[1]] == []
    path.write_text("[announce]\ntable = 200\n[sysctl]\nsloppy_tcp = 1\n"
                    + svc.format('on_failure = "remove"').replace('"mh"', '"rr"'))
    text = [str(w) for w in configmod.load(str(path))[1]]
    assert len(text) == 1 and "scheduler 'rr' on an announced service" in text[0], text
