"""A daemon over the fake kernel with its control socket, driven as an operator would (tests of the shell)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipvsd import config as configmod
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import Proto, ServiceKey
from ipvsd.shell import control
from ipvsd.shell.daemon import Daemon, Options
from tests.support.pages import Pages, until

VIP = ServiceKey.inet(Proto.TCP, "10.2.0.240", 80)

CONFIG = """
[settings]
state_dir = "{state}"
metrics_listen = "127.0.0.1:0"
clean_stop = false
drain_timeout = 60
maintenance_dir = "{mdir}"

[check_defaults]
interval = 0.2
timeout = 2
rise = 1
fall = 3  # a loaded test machine may miss one probe: only a real that keeps failing goes down
alpha = true

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"

[[services.checks]]
type = "http"
path = "/index.html"
receive = "debian11"
sentinel = false
{reals}
"""


def write_config(path: Path, ports: list[int]) -> None:
    reals = "".join(f'\n[[services.reals]]\naddress = "127.0.0.1"\nport = {p}\n' for p in ports)
    path.write_text(CONFIG.format(state=path.parent / "state", mdir=path.parent / "maint", reals=reals))


@dataclass
class Harness:
    """A running daemon over a fake kernel, its control socket at `sock`, its config at `path`."""

    tmp: Path
    pages: Pages
    ports: list[int]
    kernel: FakeKernel
    sock: str
    daemon: Daemon | None = None
    task: asyncio.Task[int] | None = None

    @property
    def path(self) -> Path:
        return self.tmp / "ipvsd.toml"

    async def start(self) -> Daemon:
        config, _ = configmod.load(str(self.path))
        self.daemon = Daemon(Options(config_path=str(self.path), watch=False, socket=self.sock), config,
                             lambda: self.kernel)
        self.task = asyncio.create_task(self.daemon.run())
        await until(self._listening, "the control socket and the metrics endpoint")
        return self.daemon

    async def _listening(self) -> bool:
        assert self.task is not None and self.daemon is not None
        assert not self.task.done(), self.task
        return self.daemon.control is not None and self.daemon.http is not None

    async def stop(self) -> None:
        assert self.daemon is not None and self.task is not None
        self.daemon.stopping.set()
        assert await asyncio.wait_for(self.task, 10) == 0
        self.daemon = self.task = None

    async def weights(self) -> dict[int, int]:
        svc = await self.kernel.service(VIP)
        return {} if svc is None else {d.key.port: d.attrs.weight for d in svc.dests}

    def has(self, want: dict[int, int]) -> Any:
        async def check() -> bool:
            return await self.weights() == want
        return check

    async def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        return await control.request(self.sock, cmd, **args)

    async def real_states(self) -> dict[int, str]:
        answer = await self.ask("status")
        return {int(r["real"].rsplit(":", 1)[1]): r["state"] for r in answer["services"][0]["reals"]}




class VirtualRun:
    """`ipvsd run` as a task on virtual time (tests.support.vtime): wait for a condition with a deadline, stop."""

    daemon: Daemon | None = None
    task: asyncio.Task[int] | None = None

    def launch(self, daemon: Daemon) -> Daemon:
        self.daemon = daemon
        self.task = asyncio.create_task(daemon.run())
        return daemon

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
        """Wait until `cond` holds (the daemon still running); return how long it took."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not cond():
            assert self.task is not None and not self.task.done(), f"the daemon ended: {self.task}"
            if loop.time() - t0 > timeout:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)
        return loop.time() - t0

    async def stop(self) -> int:
        """Stop as SIGTERM does; return the exit status."""
        assert self.daemon is not None and self.task is not None
        self.daemon.stopping.set()
        return await asyncio.wait_for(self.task, 30)
