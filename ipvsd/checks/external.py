"""External command check (ldirectord external, keepalived MISC_CHECK): exit status 0 means up.

Executed without a shell, in its own session so a timeout kills the whole process group, with ldirectord's
arguments `vip vport rip rport` appended. Only the tail of its output is kept, for the reason string.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget, register
from ipvsd.config.schema import ExternalCheck

_TAIL = 512
# The command sees none of the daemon's environment (a secret or a setting in it is not the check's business,
# and a check then behaves the same under systemd, a shell or a test): a fixed PATH, run from /.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _last_line(tail: bytes) -> str:
    lines = tail.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:120] if lines else ""


@register("external")
class ExternalProbe:
    """Run `command args... [vip vport rip rport]`; exit 0 is up, anything else (or the timeout) is down."""

    def __init__(self, spec: ExternalCheck) -> None:
        self.spec = spec

    def argv(self, target: ProbeTarget) -> list[str]:
        extra = [target.vip, str(target.vport), target.addr, str(target.port)] if self.spec.pass_target else []
        return [self.spec.command, *self.spec.args, *extra]

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        name = os.path.basename(self.spec.command)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(target), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, user=self.spec.user, env=ENV, cwd="/")
        except OSError as e:
            return ProbeResult.down(Kind.ERROR, f"cannot run {name}: {e.strerror}", loop.time() - start)
        tail = b""
        try:
            async with asyncio.timeout(max(0.0, timeout - (loop.time() - start))):
                assert proc.stdout is not None
                while chunk := await proc.stdout.read(4096):
                    tail = (tail + chunk)[-_TAIL:]
                code = await proc.wait()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            return ProbeResult.down(Kind.TIMEOUT, f"{name} killed after {timeout:g}s", loop.time() - start)
        except BaseException:
            _kill_group(proc.pid)
            raise
        latency = loop.time() - start
        said = _last_line(tail)
        said = f": {said}" if said else ""
        if code == 0:
            return ProbeResult.up(f"{name} exited 0{said}", latency)
        if code < 0:
            return ProbeResult.down(Kind.EXIT_CODE, f"{name} killed by signal {-code}{said}", latency)
        return ProbeResult.down(Kind.EXIT_CODE, f"{name} exited {code}{said}", latency)
