"""External command check (ldirectord external, keepalived MISC_CHECK): exit status 0 means up.

Executed without a shell, in its own session so a timeout kills the whole process group, with ldirectord's
arguments `vip vport rip rport` appended. Only the tail of its output is kept, for the reason string. With
`user`, it runs as that user with that user's group and no supplementary groups (keepalived's MISC_CHECK user):
that takes CAP_SETUID and CAP_SETGID, which the shipped unit does not grant, so `user_problem` says so when a
configuration is loaded rather than each check failing with EPERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import pwd
import signal
from typing import Any

from ipvsd import privileges
from ipvsd.checks.base import Kind, ProbeResult, ProbeTarget, register
from ipvsd.config.schema import Config, ExternalCheck

_TAIL = 512
# The command sees none of the daemon's environment (a secret or a setting in it is not the check's business,
# and a check then behaves the same under systemd, a shell or a test): a fixed PATH, run from /.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def user_problem(name: str, *, privileged: bool = True) -> str | None:
    """Why `user = name` cannot work for this process, or None; `privileged`: also ask whether this process may
    switch to that user (the daemon does; `ipvsd check`, run by root for a daemon that may not be, does not)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return f"external check user = {name!r}: no such user on this host"
    if not privileged or (pw.pw_uid, pw.pw_gid) == (os.geteuid(), os.getegid()):
        return None
    if not privileges.has(privileges.CAP_SETUID, privileges.CAP_SETGID):
        return (f"external check user = {name!r}: running a command as another user needs CAP_SETUID and "
                f"CAP_SETGID, and ipvsd runs as {privileges.whoami()} without them (drop `user`, or "
                f"{privileges.UNIT_HINT.replace('add it', 'add both')})")
    return None


def users_of(config: Config) -> set[str]:
    """The `user`s of the configuration's external checks (a service's, or a real's own)."""
    return set().union(*map(operator.attrgetter("external_users"), config.services))


def _identity(name: str | None) -> dict[str, Any]:
    """The Popen arguments that run the command as `name`: its uid, its group, no supplementary groups (the
    daemon's groups are not the check's business). Nothing when `name` is the daemon's own user."""
    if name is None:
        return {}
    pw = pwd.getpwnam(name)
    if (pw.pw_uid, pw.pw_gid) == (os.geteuid(), os.getegid()):
        return {}
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


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
            identity = _identity(self.spec.user)
            proc = await asyncio.create_subprocess_exec(
                *self.argv(target), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=ENV, cwd="/", **identity)
        except KeyError:  # the user was removed since the configuration was loaded
            return ProbeResult.down(Kind.ERROR, f"cannot run {name}: no user {self.spec.user!r}", loop.time() - start)
        except PermissionError as e:
            # EPERM from setuid/setgid in the child: say the capability, not only the errno
            why = user_problem(self.spec.user) if self.spec.user else None
            return ProbeResult.down(Kind.ERROR, f"cannot run {name}: {why or e.strerror}", loop.time() - start)
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
