"""`ipvsd plan`: probes once, then prints what a pass would apply; the kernel is never written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsd import config as configmod
from ipvsd.commands.plan import compute
from ipvsd.config.schema import Config, Sync
from ipvsd.kernel.fake import FakeKernel
from tests.support.daemon import write_config
from tests.support.pages import Pages


async def test_plan_adds_the_service_and_only_the_healthy_real(tmp_path: Path) -> None:
    pages = Pages()
    up, down = await pages.start(), await pages.start()
    pages.body[down] = "debian10"
    path = tmp_path / "ipvsd.toml"
    write_config(path, [up, down])
    config, _ = configmod.load(str(path))
    kernel = FakeKernel()
    try:
        p = await compute(config, kernel, tmp_path / "state.json", probe=True)
    finally:
        pages.close()
    assert [str(op) for op in p.ops] == [
        "-A -t 10.2.0.240:80 -s rr",
        f"-a -t 10.2.0.240:80 -r 127.0.0.1:{up} -m -w 1",
    ]
    assert await kernel.services() == []


async def test_plan_shows_the_sync_daemons_steps_and_writes_nothing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from ipvsd.commands.plan import compute_sync, print_sync
    from ipvsd.model import SyncDaemon

    config = Config(sync=Sync(interface="eth0", syncid=5))
    kernel = FakeKernel()
    await kernel.start_daemon(SyncDaemon(state=1, mcast_ifn="eth0", syncid=5))
    kernel.log.clear()
    sync = await compute_sync(config, kernel, tmp_path / "state.json")
    print_sync(sync)
    out, err = capsys.readouterr()
    assert out == ("ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 5"
                   "   # backup sync daemon on eth0 (syncid 5) started\n")
    assert err == "# master sync daemon on eth0 (syncid 5) adopted: it runs as configured\n"
    assert kernel.log == []
