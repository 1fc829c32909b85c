"""`ipvsd plan`: probes once, then prints what a pass would apply; the kernel is never written."""

from __future__ import annotations

from pathlib import Path

from ipvsd import config as configmod
from ipvsd.commands.plan import compute
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
