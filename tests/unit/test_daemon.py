"""The daemon end to end against the fake kernel and real loopback HTTP servers: failover, reload, stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipvsd import config as configmod
from ipvsd.core import roles
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import DestAttrs, DestKey, Proto, ServiceAttrs, ServiceKey
from ipvsd.shell import daemon as daemon_module
from ipvsd.shell import gcpolicy
from ipvsd.shell.daemon import Daemon, Options
from tests.support.pages import Pages, until

VIP = ServiceKey.inet(Proto.TCP, "10.2.0.240", 80)
FOREIGN = ServiceKey.inet(Proto.TCP, "10.9.9.9", 80)


CONFIG = """
[settings]
state_dir = "{state}"
metrics_listen = ""
clean_stop = false

[check_defaults]
interval = 0.2
timeout = 0.5
rise = 1
fall = 1
alpha = true

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"
on_failure = "{on_failure}"

[[services.checks]]
type = "http"
path = "/index.html"
receive = "debian11"
sentinel = false
{reals}
"""


def write_config(path: Path, ports: list[int], *, on_failure: str = "remove") -> None:
    reals = "".join(f'\n[[services.reals]]\naddress = "127.0.0.1"\nport = {p}\n' for p in ports)
    path.write_text(CONFIG.format(state=path.parent / "state", reals=reals, on_failure=on_failure))


@dataclass
class Running:
    daemon: Daemon
    kernel: FakeKernel
    pages: Pages
    ports: list[int]
    path: Path

    async def weights(self) -> dict[int, int]:
        svc = await self.kernel.service(VIP)
        return {} if svc is None else {d.key.port: d.attrs.weight for d in svc.dests}

    def has(self, want: dict[int, int]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await self.weights() == want
        return check


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    pages = Pages()
    ports = [await pages.start() for _ in range(3)]
    path = tmp_path / "ipvsd.toml"
    write_config(path, ports[:2])
    kernel = FakeKernel()
    await kernel.add_service(FOREIGN, ServiceAttrs(scheduler="wlc"))
    await kernel.add_dest(FOREIGN, DestKey.of("10.9.9.10", 80), DestAttrs())
    config, _ = configmod.load(str(path))
    daemon = Daemon(Options(config_path=str(path), watch=False), config, lambda: kernel)
    task = asyncio.create_task(daemon.run())
    r = Running(daemon, kernel, pages, ports, path)
    try:
        yield r
    finally:
        daemon.stopping.set()
        assert await asyncio.wait_for(task, 10) == 0
        pages.close()


async def test_reals_come_in_fail_out_and_come_back(running: Running) -> None:
    p1, p2 = running.ports[:2]
    await until(running.has({p1: 1, p2: 1}), "both reals in")
    running.pages.body[p1] = "debian10"
    await until(running.has({p2: 1}), "rs1 removed after its page lost the receive string")
    running.pages.body[p1] = "debian11-back"
    await until(running.has({p1: 1, p2: 1}), "rs1 back")
    # the foreign service was never touched
    foreign = await running.kernel.service(FOREIGN)
    assert foreign is not None
    assert [d.key for d in foreign.dests] == [DestKey.of("10.9.9.10", 80)]


async def test_reload_adds_and_removes_and_rejects_bad_config(running: Running) -> None:
    p1, p2, p3 = running.ports
    await until(running.has({p1: 1, p2: 1}), "both reals in")
    write_config(running.path, [p1, p2, p3])
    await running.daemon.reload("test")
    await until(running.has({p1: 1, p2: 1, p3: 1}), "rs3 added by the reload")
    before = await running.kernel.services()
    running.path.write_text(running.path.read_text().replace('scheduler = "rr"', 'schedulr = "rr"'))
    await running.daemon.reload("test")
    assert running.daemon.reloads["error"] == 1
    # a full pass after the rejected reload changes nothing
    assert running.daemon.reconciler is not None
    passes = running.daemon.reconciler.passes
    running.daemon.dirty.set()

    async def passed() -> bool:
        assert running.daemon.reconciler is not None
        return running.daemon.reconciler.passes > passes

    await until(passed, "a reconcile pass")
    assert await running.kernel.services() == before
    write_config(running.path, [p1, p3])
    await running.daemon.reload("test")
    await until(running.has({p1: 1, p3: 1}), "rs2 drained and deleted (drain_timeout 0)")


async def test_the_file_watch_reloads_a_renamed_or_rewritten_file(tmp_path: Path) -> None:
    """With watch on, a file renamed into place (as tools write) and one rewritten in place (as editors do) are
    each reloaded without a SIGHUP."""
    pages = Pages()
    p1, p2, p3 = [await pages.start() for _ in range(3)]
    path = tmp_path / "conf" / "ipvsd.toml"
    path.parent.mkdir()
    write_config(path, [p1])
    kernel = FakeKernel()
    config, _ = configmod.load(str(path))
    daemon = Daemon(Options(config_path=str(path), watch=True), config, lambda: kernel)
    task = asyncio.create_task(daemon.run())
    r = Running(daemon, kernel, pages, [p1, p2, p3], path)
    try:
        await until(r.has({p1: 1}), "rs1 in")
        beside = path.parent / "ipvsd.toml.new"
        write_config(beside, [p1, p2])
        beside.rename(path)
        await until(r.has({p1: 1, p2: 1}), "rs2 in after the rename, no SIGHUP")
        write_config(path, [p1, p2, p3])
        await until(r.has({p1: 1, p2: 1, p3: 1}), "rs3 in after the rewrite in place")
        assert daemon.reloads["error"] == 0
    finally:
        daemon.stopping.set()
        assert await asyncio.wait_for(task, 10) == 0
        pages.close()


async def test_vip_roles_are_assessed_again_when_the_vips_or_the_addresses_change_not_at_every_reload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload that keeps every VIP needs no new assessment (sorting 1,000 VIPs cost 3 ms before the pass that
    applies it); one that adds a VIP, or new addresses, is assessed."""
    pages = Pages()
    p1 = await pages.start()
    path = tmp_path / "ipvsd.toml"
    write_config(path, [p1])
    eth0 = roles.Link(2, "eth0", up=True, loopback=False)
    observed = roles.Observed({2: eth0}, frozenset({roles.Address(2, "10.2.0.240", 24)}))
    follower: list[Callable[[roles.Observed], None]] = []

    async def follow(callback: Callable[[roles.Observed], None]) -> None:
        follower.append(callback)
        callback(observed)
        await asyncio.Event().wait()

    assessed: list[frozenset[str]] = []
    update = roles.update

    def counted(old: Any, vips: Any, seen: Any, now: float) -> Any:
        assessed.append(frozenset(vips))
        return update(old, vips, seen, now)

    monkeypatch.setattr(daemon_module.roles, "update", counted)
    config, _ = configmod.load(str(path))
    daemon = Daemon(Options(config_path=str(path), watch=False), config, FakeKernel, addresses=follow)
    task = asyncio.create_task(daemon.run())

    async def assessed_once() -> bool:
        return daemon.roles is not None

    try:
        await until(assessed_once, "the first assessment")
        assert daemon.roles is not None and daemon.roles["10.2.0.240"].held
        count = len(assessed)
        write_config(path, [p1, p1 + 1])  # another real, the same VIP
        assert (await daemon.reload("test")).outcome == "ok"
        assert len(assessed) == count
        path.write_text(path.read_text().replace('address = "10.2.0.240"', 'address = "10.2.0.241"', 1))
        assert (await daemon.reload("test")).outcome == "ok"
        assert assessed[-1] == {"10.2.0.241"} and not daemon.roles["10.2.0.241"].held
        count = len(assessed)
        follower[0](roles.Observed({2: eth0}, frozenset({roles.Address(2, "10.2.0.241", 24)})))
        assert len(assessed) == count + 1 and daemon.roles["10.2.0.241"].held
    finally:
        daemon.stopping.set()
        assert await asyncio.wait_for(task, 10) == 0
        pages.close()


async def test_a_reload_reaches_the_kernel_before_the_collector_runs(running: Running,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The full collection and freeze after a reload (gcpolicy.settle: up to a second in the lab at 10,000 reals)
    comes after the pass that applies the new configuration, not between the swap and that pass."""
    p1, p2 = running.ports[:2]
    await until(running.has({p1: 1, p2: 1}), "both reals in")

    async def start_settled() -> bool:
        return running.daemon.ready and not running.daemon.settle_due

    await until(start_settled, "the start's settle")
    seen: list[bool] = []  # at each settle: was rs2's removal in the kernel already?
    monkeypatch.setattr(gcpolicy, "settle", lambda: seen.append(any(f":{p2}" in op for op in running.kernel.log
                                                                      if op.startswith("-d"))))
    write_config(running.path, [p1])
    await running.daemon.reload("test")

    async def settled() -> bool:
        return bool(seen)

    await until(settled, "the collector's settle after the reload")
    assert seen[0], "settled before the pass that removed rs2"
    assert await running.weights() == {p1: 1}


async def test_a_reload_after_a_slow_pass_is_applied_without_waiting_out_the_pace(
        running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a slow pass the next one is held back as long (probes get the loop), but not the pass that applies a
    new configuration. The slow pass takes an hour on the daemon's clock (the pace's cap raised to match): a
    reload that waited for it would not reach the kernel within `until`'s deadline."""
    p1, p2 = running.ports[:2]
    await until(running.has({p1: 1, p2: 1}), "both reals in")
    monkeypatch.setattr(daemon_module, "PACE_MAX", 7200.0)
    daemon = running.daemon
    loop = asyncio.get_running_loop()
    skew = [0.0]
    monkeypatch.setattr(daemon, "mono", lambda: loop.time() + skew[0])
    rec = daemon.reconciler
    assert rec is not None
    real = rec.reconcile
    slow = [True]

    async def reconcile(*args: Any, **kw: Any) -> Any:
        if slow.pop() if slow else False:
            skew[0] += 3600.0  # this pass "took" an hour
        return await real(*args, **kw)

    monkeypatch.setattr(rec, "reconcile", reconcile)
    started = daemon.passes.started
    daemon.wake()

    async def slow_pass_done() -> bool:
        return not slow and daemon.passes.done > started

    await until(slow_pass_done, "the slow pass")
    write_config(running.path, [p1])
    await daemon.reload("test")
    await until(running.has({p1: 1}), "rs2 removed by the reload, without waiting out the slow pass's pace")


async def test_unchanged_reload_is_a_no_op(running: Running) -> None:
    p1, p2 = running.ports[:2]
    await until(running.has({p1: 1, p2: 1}), "both reals in")
    running.path.write_text(running.path.read_text() + "\n# a comment\n")
    await running.daemon.reload("test")
    assert running.daemon.reloads["unchanged"] == 1


async def test_quiesce_keeps_a_failed_real_at_weight_zero(tmp_path: Path) -> None:
    pages = Pages()
    ports = [await pages.start() for _ in range(2)]
    path = tmp_path / "ipvsd.toml"
    write_config(path, ports, on_failure="quiesce")
    kernel = FakeKernel()
    config, _ = configmod.load(str(path))
    daemon = Daemon(Options(config_path=str(path), watch=False), config, lambda: kernel)
    task = asyncio.create_task(daemon.run())
    r = Running(daemon, kernel, pages, ports, path)
    try:
        await until(r.has({ports[0]: 1, ports[1]: 1}), "both reals in")
        pages.body[ports[0]] = "broken"
        await until(r.has({ports[0]: 0, ports[1]: 1}), "rs1 quiesced")
    finally:
        daemon.stopping.set()
        assert await asyncio.wait_for(task, 10) == 0
        pages.close()
    assert await r.weights() == {ports[0]: 0, ports[1]: 1}, "stop without clean_stop leaves the table as it is"
