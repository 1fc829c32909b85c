"""`ipvsd run` with [sync], [sysctl] and [lvs_timeouts] over the fake kernel, on virtual time: daemons started and
repaired within a resync, sysctls set at start and reload and their drift reported once, status and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from ipvsd import config as configmod
from ipvsd.commands.status import render
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import Proto, ServiceKey, SyncDaemon, Timeouts
from ipvsd.shell import bus
from ipvsd.shell.control_api import ControlApi
from ipvsd.shell.daemon import Daemon, Options
from ipvsd.shell.event_log import EventLog
from tests.support import vtime
from tests.support.daemon import VirtualRun
from tests.support.probes import Scripted

VIP = ServiceKey.inet(Proto.TCP, "10.2.0.240", 80)
CONFIG = """
[settings]
state_dir = "{tmp}/state"
metrics_listen = ""
control_socket = "{tmp}/control.sock"
watch_config = false
resync_interval = 2
clean_stop = {clean}

[sync]
interface = "{interface}"
syncid = 5

[sysctl]
sloppy_tcp = {sloppy}
sync_threshold = [3, 50]

[lvs_timeouts]
tcp = 1000

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"

[[services.reals]]
address = "127.0.0.1"
port = 1
"""


class Run(VirtualRun):
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.kernel = FakeKernel()
        self.events: list[bus.Event] = []
        self.proc = tmp / "vs"
        self.proc.mkdir()
        (self.proc / "sloppy_tcp").write_text("0\n")
        (self.proc / "sync_threshold").write_text("3\t50\n")
        self.path = tmp / "ipvsd.toml"

    def write(self, *, interface: str = "eth0", sloppy: int = 1, clean: bool = False) -> None:
        self.path.write_text(CONFIG.format(tmp=self.tmp, interface=interface, sloppy=sloppy,
                                           clean=str(clean).lower()))

    async def start(self) -> Daemon:
        config, _ = configmod.load(str(self.path))
        d = self.launch(Daemon(Options(config_path=str(self.path), watch=False), config, lambda: self.kernel,
                               probe_factory=Scripted(), sysctl_root=self.proc))
        d.bus.subscribe(self.events.append)
        return d

    def states(self) -> list[int]:
        return sorted(self.kernel._daemons)

    def actions(self, kind: type) -> list[tuple[str, str]]:
        return [(e.action, getattr(e, "name", "") or getattr(getattr(e, "daemon", None), "mcast_ifn", ""))
                for e in self.events if isinstance(e, kind)]


def test_daemons_start_are_repaired_within_a_resync_and_stop_at_a_clean_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    r = Run(tmp_path)
    r.write(clean=True)

    async def go() -> None:
        d = await r.start()
        await r.until(lambda: r.states() == [1, 2], "master and backup started")
        assert r.actions(bus.SyncChanged) == [("start", "eth0"), ("start", "eth0")]
        assert await r.kernel.timeouts() == Timeouts(tcp=1000, tcp_fin=120, udp=300)
        r.kernel.lose_daemon(2)  # ipvsadm --stop-daemon backup
        took = await r.until(lambda: r.states() == [1, 2], "the backup repaired")
        assert took <= 2.0 + 0.5, took  # within resync_interval
        assert r.actions(bus.SyncChanged)[-1] == ("repair", "eth0")
        assert d.metrics is not None
        sample = d.metrics.registry.get_sample_value
        assert sample("ipvsd_sync_daemon", {"state": "backup", "interface": "eth0", "syncid": "5",
                                            "owner": "ipvsd"}) == 1
        assert sample("ipvsd_sync_daemon_actions_total", {"action": "repair"}) == 1
        assert d.view is not None
        api = ControlApi(d.view, d, config_path=str(r.path))
        answer = await api.status({})
        assert [(x["role"], x["running"], x["owner"]) for x in answer["sync"]] == [
            ("master", True, "ipvsd"), ("backup", True, "ipvsd")]
        text = render(answer, now=0.0)
        assert "sync daemons" in text and "backup  running  eth0" in text
        assert await r.stop() == 0

    vtime.run(go())
    assert r.states() == []  # clean_stop stops what ipvsd owns
    assert any("backup sync daemon on eth0 (syncid 5) had disappeared: started" in x.getMessage()
               and x.levelno == logging.WARNING for x in caplog.records)


def test_sysctls_are_set_at_start_and_reload_and_drift_is_reported_once(tmp_path: Path) -> None:
    r = Run(tmp_path)
    r.write(sloppy=1)

    async def go() -> None:
        d = await r.start()
        await r.until(lambda: (r.proc / "sloppy_tcp").read_text() == "1\n", "sloppy_tcp set at start")
        assert r.actions(bus.SysctlChanged) == [("set", "sloppy_tcp")]
        (r.proc / "sloppy_tcp").write_text("0\n")  # by hand
        await r.until(lambda: ("drift", "sloppy_tcp") in r.actions(bus.SysctlChanged), "drift reported")
        await asyncio.sleep(5)  # two more resyncs: said once, not rewritten
        assert r.actions(bus.SysctlChanged).count(("drift", "sloppy_tcp")) == 1
        assert (r.proc / "sloppy_tcp").read_text() == "0\n"
        assert d.metrics is not None
        assert d.metrics.registry.get_sample_value("ipvsd_sysctl_drift", {"name": "sloppy_tcp"}) == 1
        assert (await d.reload("control socket")).outcome == "unchanged"  # the file did not change...
        assert (r.proc / "sloppy_tcp").read_text() == "1\n"  # ...but the configured value wins again
        r.write(sloppy=0)
        assert (await d.reload("SIGHUP")).outcome == "ok"
        assert (r.proc / "sloppy_tcp").read_text() == "0\n"
        assert d.metrics.registry.get_sample_value("ipvsd_sysctl_drift", {"name": "sloppy_tcp"}) == 0
        assert await r.stop() == 0

    vtime.run(go())
    assert r.states() == [1, 2]  # no clean_stop: the daemons stay


def test_a_missing_sync_interface_is_one_error_and_the_table_is_programmed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = Run(tmp_path)
    r.write(interface="eth9")

    async def go() -> None:
        d = await r.start()
        await r.until(lambda: VIP in r.kernel._inet, "the service programmed")
        await asyncio.sleep(7)  # three resyncs retry the daemons
        assert r.states() == []
        assert d.view is not None
        rows = d.view.sync()
        assert [(x.role, x.running, x.error is not None) for x in rows] == [("master", False, True),
                                                                          ("backup", False, True)]
        r.kernel.interfaces["eth9"] = 1500
        await r.until(lambda: r.states() == [1, 2], "started once the interface exists", timeout=3)
        assert await r.stop() == 0

    vtime.run(go())
    errors = [x.getMessage() for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert all("No such device (ENODEV) (is there an interface eth9?)" in e for e in errors)
    assert [e.action for e in r.events if isinstance(e, bus.SyncChanged)] == ["failed", "failed", "start", "start"]


def test_sync_and_sysctl_changes_reach_the_event_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path))
    log.record(bus.SyncChanged("repair", SyncDaemon(state=2, mcast_ifn="eth1", syncid=7), "the backup daemon had "
                                                                                           "disappeared"))
    log.record(bus.SysctlChanged("sloppy_tcp", "set", "0", "1"))
    log.close()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["type"], e["action"]) for e in events] == [("sync", "repair"), ("sysctl", "set")]
    assert events[0]["state"] == "backup" and events[0]["interface"] == "eth1" and events[0]["syncid"] == 7
    assert events[1]["reason"] == "net.ipv4.vs.sloppy_tcp: 0 -> 1"
