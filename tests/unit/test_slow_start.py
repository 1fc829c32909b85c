"""Slow start: the pure rules (`ipvsd.core.slowstart` through `ipvsd.core.decide`, passes on virtual time over a
table patched with each pass's ops), then `ipvsd run` over the fake kernel on virtual time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ipvsd import config as configmod
from ipvsd.commands.status import render
from ipvsd.config.schema import Config
from ipvsd.core import decide, mirror, slowstart
from ipvsd.core.probes import RealHealth
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import AddDest, DelDest, DestAttrs, DestKey, EditDest, Op, Proto, Service, ServiceKey
from ipvsd.shell import statefile
from ipvsd.shell.control_api import ControlApi
from ipvsd.shell.daemon import Daemon, Options
from tests.support import vtime
from tests.support.daemon import VirtualRun
from tests.support.probes import Scripted

WEB = ServiceKey.inet(Proto.TCP, "192.0.2.10", 80)
A, B, C = (DestKey.of(f"10.0.1.{i}", 80) for i in (1, 2, 3))
T0 = 1_700_000_000.0


def config(reals: int = 2, *, slow_start: float = 4.0, b: dict[str, Any] | None = None, **service: Any) -> Config:
    """One service of `reals` reals (A, B, C) at weight 100, each with a tcp check; `b` overrides B's keys."""
    rs = [{"address": f"10.0.1.{i}", "port": 80, "forward": "route", "weight": 100} for i in range(1, reals + 1)]
    if reals >= 2:
        rs[1].update(b or {})
    return Config.model_validate({"services": [{"address": "192.0.2.10", "port": 80, "scheduler": "wrr",
                                                "slow_start": slow_start, "checks": [{"type": "tcp"}],
                                                "reals": rs, **service}]})


class Passes:
    """What the reconciler does, without I/O: decide, persist, apply every op to the table it keeps."""

    def __init__(self, cfg: Config, *, memory: decide.Memory | None = None,
                 table: list[Service] | None = None) -> None:
        self.config = cfg
        self.memory = memory or decide.Memory()
        self.table: list[Service] = table or []
        self.up: dict[DestKey, bool] = {}
        self.unsettled: set[DestKey] = set()  # no check result yet (a restart): KEEP
        self.last: decide.Decision | None = None

    def run(self, t: float) -> list[Op]:
        """One pass at T0 + t; the ops it applied."""
        health = {(WEB, d): RealHealth(up=self.up.get(d, True), settled=d not in self.unsettled) for d in (A, B, C)}
        d = decide.decide(self.config, health, self.table, self.memory, now=T0 + t)
        self.memory = decide.applied(decide.planned(self.memory, d), d)
        self.table = mirror.patched(self.table, d.plan.ops)
        self.last = d
        return list(d.plan.ops)

    def weights(self) -> dict[DestKey, int]:
        svc = next((s for s in self.table if s.key == WEB), None)
        return {} if svc is None else {x.key: x.attrs.weight for x in svc.dests}

    def due(self) -> float | None:
        assert self.last is not None
        return None if self.last.due is None else round(self.last.due - T0, 6)


def weights_of(ops: list[Op]) -> list[tuple[str, str, int]]:
    """The dest ops as (op, real, weight), what the kernel tests compare too."""
    out = []
    for op in ops:
        if isinstance(op, AddDest | EditDest):
            out.append(("-a" if isinstance(op, AddDest) else "-e", op.key.addr, op.attrs.weight))
        elif isinstance(op, DelDest):
            out.append(("-d", op.key.addr, 0))
    return out


def started(cfg: Config) -> Passes:
    """Both reals serving at full weight, then B down (removed) at t=10."""
    p = Passes(cfg)
    p.run(0)
    p.up[B] = False
    assert weights_of(p.run(10)) == [("-d", "10.0.1.2", 0)]
    p.up[B] = True
    return p


# --- the pure rules ------------------------------------------------------------------------------------------


def test_the_steps_of_a_ramp_rounded_up_and_never_0() -> None:
    r = slowstart.Ramp(since=100.0, period=4.0, target=100)
    assert [r.weight(100 + t) for t in (0, 0.5, 1, 1.99, 1.9995, 2, 3, 3.99)] == [25, 25, 50, 50, 75, 75, 100, 100]
    assert [r.next_change(100 + t) for t in (0, 1, 2.5, 3)] == [101, 102, 103, 104]
    assert r.until == 104
    assert [slowstart.Ramp(0, 4, 3).weight(t) for t in (0, 1, 2, 3)] == [1, 2, 3, 3]
    assert [slowstart.Ramp(0, 4, 1).weight(t) for t in (0, 1, 2, 3)] == [1, 1, 1, 1]
    assert slowstart.Ramp(0, 2, 10).weight(0.4995) == 5  # a timer a little early still gets its step


def test_a_real_that_comes_back_ramps_in_four_steps_and_the_daemon_wakes_for_each() -> None:
    p = started(config())
    assert weights_of(p.run(20)) == [("-a", "10.0.1.2", 25)]
    assert p.memory.ramps == {(WEB, B): T0 + 20} and p.due() == 21
    seen = []
    for t in (20.5, 21, 21.7, 22, 23, 23.5, 24):  # passes between the steps change nothing
        seen.append((t, weights_of(p.run(t)), p.due()))
    assert seen == [(20.5, [], 21), (21, [("-e", "10.0.1.2", 50)], 22), (21.7, [], 22),
                    (22, [("-e", "10.0.1.2", 75)], 23), (23, [("-e", "10.0.1.2", 100)], 24), (23.5, [], 24),
                    (24, [], None)]
    assert p.memory.ramps == {} and p.weights() == {A: 100, B: 100}  # over: forgotten, no drift after it
    assert weights_of(p.run(30)) == []


def test_no_ramp_when_no_other_real_serves() -> None:
    p = started(config())
    p.up[A] = False
    assert weights_of(p.run(20)) == [("-a", "10.0.1.2", 100), ("-d", "10.0.1.1", 0)]  # A leaves as B comes
    assert p.memory.ramps == {} and p.due() is None
    p.up[B] = False
    p.run(30)
    assert p.weights() == {}
    p.up.update({A: True, B: True})  # both back at once: neither has another that serves
    assert weights_of(p.run(40)) == [("-a", "10.0.1.1", 100), ("-a", "10.0.1.2", 100)]
    assert p.memory.ramps == {}


def test_a_ramp_ends_when_the_others_stop_serving() -> None:
    p = started(config())
    p.run(20)
    p.up[A] = False
    assert weights_of(p.run(21.5)) == [("-e", "10.0.1.2", 100), ("-d", "10.0.1.1", 0)]
    assert p.memory.ramps == {}


def test_no_ramp_at_start() -> None:
    p = Passes(config(3))
    assert weights_of(p.run(0)) == [("-a", "10.0.1.1", 100), ("-a", "10.0.1.2", 100), ("-a", "10.0.1.3", 100)]
    assert p.memory.ramps == {} and p.due() is None
    # a restart that adopts a table where A serves and B is absent: the first pass puts B in at full weight too
    table = p.table
    p = Passes(config(2), memory=decide.Memory(owned=frozenset({WEB})),
               table=mirror.patched(table, [DelDest(WEB, B), DelDest(WEB, C)]))
    assert weights_of(p.run(100)) == [("-a", "10.0.1.2", 100)]
    assert p.memory.ramps == {}


def test_a_real_added_by_a_reload_ramps() -> None:
    p = Passes(config(1))
    p.run(0)
    p.config = config(2)
    assert weights_of(p.run(5)) == [("-a", "10.0.1.2", 25)]
    assert p.last is not None and p.last.ramps[(WEB, B)] == slowstart.Ramp(T0 + 5, 4.0, 100)
    p.run(6)
    assert p.weights() == {A: 100, B: 50}


def test_a_weight_changed_mid_ramp_is_where_the_ramp_goes() -> None:
    p = started(config())
    p.run(20)
    p.run(21)
    assert p.weights()[B] == 50
    p.config = config(b={"weight": 200})
    assert weights_of(p.run(21.5)) == [("-e", "10.0.1.2", 100)]  # step 2 of 200
    assert p.memory.ramps == {(WEB, B): T0 + 20}  # the same ramp, from the same start
    assert weights_of(p.run(22)) == [("-e", "10.0.1.2", 150)]
    assert weights_of(p.run(23)) == [("-e", "10.0.1.2", 200)]
    p.config = config(b={"weight": 200, "slow_start": 0.0})
    assert weights_of(p.run(23.5)) == [] and p.memory.ramps == {}  # slow_start 0 on the real: the ramp ends


def test_a_real_down_mid_ramp_forgets_its_ramp_and_ramps_again_when_back() -> None:
    p = started(config())
    p.run(20)
    p.run(22)
    assert p.weights()[B] == 75
    p.up[B] = False
    assert weights_of(p.run(22.5)) == [("-d", "10.0.1.2", 0)]
    assert p.memory.ramps == {} and p.due() is None
    p.up[B] = True
    assert weights_of(p.run(30)) == [("-a", "10.0.1.2", 25)]  # from the start again
    assert p.memory.ramps == {(WEB, B): T0 + 30}


def test_a_quiesced_real_ramps_from_weight_0_and_an_override_of_0_disables() -> None:
    p = Passes(config(on_failure="quiesce"))
    p.run(0)
    p.up[B] = False
    assert weights_of(p.run(10)) == [("-e", "10.0.1.2", 0)]
    p.up[B] = True
    assert weights_of(p.run(20)) == [("-e", "10.0.1.2", 25)]
    p = started(config(b={"slow_start": 0.0}))
    assert weights_of(p.run(20)) == [("-a", "10.0.1.2", 100)]


def test_a_restart_mid_ramp_goes_on_with_the_persisted_ramp(tmp_path: Path) -> None:
    p = started(config())
    p.run(20)
    p.run(21)
    path = tmp_path / "state.json"
    statefile.save(path, p.memory)
    again = Passes(config(), memory=statefile.load(path), table=p.table)  # `previous` is gone: a new daemon
    assert again.memory.ramps == {(WEB, B): T0 + 20}
    assert weights_of(again.run(22.2)) == [("-e", "10.0.1.2", 75)]  # the step it is at, not the full weight
    assert again.due() == 23
    # the checks have no result yet after a restart: the kernel keeps the step it has, the ramp its start
    again = Passes(config(), memory=statefile.load(path), table=p.table)
    again.unsettled = {A, B}
    assert weights_of(again.run(22.2)) == [] and again.memory.ramps == {(WEB, B): T0 + 20}
    again.unsettled = set()
    assert weights_of(again.run(23.1)) == [("-e", "10.0.1.2", 100)]
    assert weights_of(again.run(24)) == [] and again.memory.ramps == {}


# --- `ipvsd run` over the fake kernel, on virtual time ---------------------------------------------------------

CONFIG = """
[settings]
state_dir = "{tmp}/state"
metrics_listen = ""
control_socket = "{tmp}/control.sock"
watch_config = false
resync_interval = 30

[check_defaults]
interval = 0.5
timeout = 0.2
alpha = false

[[services]]
address = "192.0.2.10"
port = 80
scheduler = "wrr"
slow_start = 4.0

[[services.checks]]
type = "tcp"

[[services.reals]]
address = "127.0.0.1"
port = 1
forward = "route"
weight = 100

[[services.reals]]
address = "127.0.0.2"
port = 2
forward = "route"
weight = 100
"""


class Noting(FakeKernel):
    """The fake kernel, noting each dest op it carried out with the (virtual) time."""

    ops: list[tuple[float, Op]]

    async def add_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        await super().add_dest(service, key, attrs)
        self.ops.append((asyncio.get_running_loop().time(), AddDest(service, key, attrs)))

    async def edit_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        await super().edit_dest(service, key, attrs)
        self.ops.append((asyncio.get_running_loop().time(), EditDest(service, key, attrs)))

    async def del_dest(self, service: ServiceKey, key: DestKey) -> None:
        await super().del_dest(service, key)
        self.ops.append((asyncio.get_running_loop().time(), DelDest(service, key)))


class Run(VirtualRun):
    """`ipvsd run` on the fake kernel with scripted probes; the kernel's dest ops noted with their virtual time."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "ipvsd.toml"
        self.path.write_text(CONFIG.format(tmp=tmp))
        self.kernel = Noting()
        self.kernel.ops = self.ops = []
        self.probes = Scripted()

    async def start(self) -> Daemon:
        loop = asyncio.get_running_loop()
        config, _ = configmod.load(str(self.path))
        return self.launch(Daemon(Options(config_path=str(self.path), watch=False), config, lambda: self.kernel,
                                  probe_factory=self.probes, wall=lambda: T0 + loop.time()))  # ramps: wall-clock

    def weights(self) -> dict[int, int]:
        svc = self.kernel._inet.get(ServiceKey.inet(Proto.TCP, "192.0.2.10", 80))
        return {} if svc is None else {d.key.port: d.attrs.weight for d in svc.dests}


def test_ipvsd_run_ramps_a_real_that_comes_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    r = Run(tmp_path)

    async def go() -> tuple[dict[str, Any], Mapping[Any, float]]:
        d = await r.start()
        await r.until(lambda: r.weights() == {1: 100, 2: 100}, "both reals in at full weight")
        assert [weights_of([op])[0][2] for _, op in r.ops] == [100, 100]  # no ramp at start
        r.probes.ok[2] = False
        await r.until(lambda: 2 not in r.weights(), "real 2 out")
        r.probes.ok[2] = True
        await r.until(lambda: 2 in r.weights(), "real 2 back")
        await asyncio.sleep(1.5)
        assert d.view is not None
        status = await ControlApi(d.view, d, config_path=str(r.path), wall=d.wall).status({})
        assert d.metrics is not None
        labels = {"service": "TCP 192.0.2.10:80", "real": "127.0.0.2:2"}
        assert d.metrics.registry.get_sample_value("ipvsd_real_slow_start_weight", labels) == 50
        end = d.metrics.registry.get_sample_value("ipvsd_real_slow_start_end_seconds", labels)
        assert end == pytest.approx(d.wall() + 2.5, abs=0.02)  # noticed up to one poll (10 ms) late
        persisted = statefile.load(tmp_path / "state" / "state.json").ramps
        await asyncio.sleep(40)  # the ramp is over, then a resync: nothing moves
        assert await r.stop() == 0
        return status, persisted

    status, persisted = vtime.run(go())
    back = r.ops[3][0]  # when real 2 came back in
    dest_ops = [(round(t - back, 6), weights_of([op])[0]) for t, op in r.ops[2:]]
    assert dest_ops == [(dest_ops[0][0], ("-d", "127.0.0.2", 0)),
                        (0.0, ("-a", "127.0.0.2", 25)), (1.0, ("-e", "127.0.0.2", 50)),
                        (2.0, ("-e", "127.0.0.2", 75)), (3.0, ("-e", "127.0.0.2", 100))], dest_ops
    assert r.weights() == {1: 100, 2: 100}
    real = next(x for x in status["services"][0]["reals"] if x["real"] == "127.0.0.2:2")
    assert real["slow_start"] == {"weight": 50, "target": 100, "since": T0 + back, "until": T0 + back + 4}
    assert real["kernel_weight"] == 50
    text = render({"services": status["services"]}, now=T0 + back + 1.5)
    row = next(x for x in text.splitlines() if "127.0.0.2:2" in x).split()
    assert row[:4] == ["127.0.0.2:2", "up", "50/100", "50"], text
    assert text.rstrip().endswith("s left)") and "(slow start until " in text and " 2s left)" in text, text
    assert list(persisted.values()) == [T0 + back]
    notes = [x.getMessage() for x in caplog.records if "slow start" in x.getMessage()]
    assert notes[0].startswith("slow start: real 127.0.0.2:2 in TCP 192.0.2.10:80 ramps to weight 100 over 4s")
    assert notes[1].endswith("-w 25   (slow start 1/4 to 100)") and notes[4].endswith("(slow start 4/4 to 100)")
