"""The net.ipv4.vs.* sysctls of `[sysctl]`: written at start and at every reload, read back at each resync.

A value that already matches is not written; a change is logged as `net.ipv4.vs.NAME: OLD -> NEW`. Values are
compared as the kernel prints them, whitespace-normalised (`sync_threshold` reads back as "3\t50").

Drift (the kernel's value differs from what ipvsd set) is reported once per change, as a warning, a metric
and an event, and is *not* rewritten until the next reload or start. A sysctl changed by hand is usually an
operator at work (`sysctl -w` while debugging, a tuning tried live); undoing it every resync_interval would
fight them silently. The reload that follows a decision makes ipvsd's value win again.

A write that fails (a read-only /proc/sys under a sandbox, a file the kernel lacks because it is older or a
module is not loaded, EINVAL for a value out of range) is said once per distinct error; ipvsd keeps working
and a reload is never refused for it. The files are those of ipvsd's own network namespace.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ipvsd.config.schema import SysctlValue
from ipvsd.config.sysctls import proc_text
from ipvsd.core.view import SysctlStatus
from ipvsd.shell.bus import SysctlChanged

log = logging.getLogger("ipvsd.sysctl")
ROOT = Path("/proc/sys/net/ipv4/vs")
PREFIX = "net.ipv4.vs."


def _norm(text: str) -> str:
    return " ".join(text.split())


class Sysctls:
    """The sysctls ipvsd set in this namespace, what the kernel has now, and what was already said."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.wanted: dict[str, str] = {}  # name -> text ipvsd set (or found matching)
        self.current: dict[str, str] = {}  # name -> the kernel's text at the last read
        self.errors: dict[str, str] = {}  # name -> the error said (the write failed)
        self.drifted: dict[str, str] = {}  # name -> the drifted value already reported

    def apply(self, wanted: Mapping[str, SysctlValue]) -> list[SysctlChanged]:
        """Write every configured sysctl whose value differs (start, reload); return what changed or failed."""
        self.wanted = {name: proc_text(v) for name, v in wanted.items()}
        for gone in [n for n in self.current if n not in self.wanted]:
            self.current.pop(gone, None)
        self.drifted.clear()  # a reload makes ipvsd's values win again: drift is news from here on
        self.errors = {n: e for n, e in self.errors.items() if n in self.wanted}
        out: list[SysctlChanged] = []
        for name, text in sorted(self.wanted.items()):
            path = self.root / name
            old: str | None = None
            try:
                old = path.read_text().strip()
                if _norm(old) == _norm(text):
                    self.current[name] = old
                    self.errors.pop(name, None)
                    continue
                _write(path, text)
                now = path.read_text().strip()
            except OSError as e:
                why = _why(e)
                if self.errors.get(name) != why:
                    log.error("cannot set %s%s = %s: %s; it keeps its value%s", PREFIX, name, text, why,
                              "" if old is None else f" ({old})")
                    out.append(SysctlChanged(name, "failed", old, text, why))
                self.errors[name] = why
                if old is not None:
                    self.current[name] = old
                continue
            self.errors.pop(name, None)
            self.current[name] = now
            log.info("%s%s: %s -> %s", PREFIX, name, _norm(old), _norm(now))
            out.append(SysctlChanged(name, "set", old, now))
        return out

    def check(self) -> list[SysctlChanged]:
        """Read every set sysctl back (each resync); report a drift once per change, rewrite nothing."""
        out: list[SysctlChanged] = []
        for name, text in sorted(self.wanted.items()):
            if name in self.errors:
                continue  # never set: nothing to drift from
            try:
                now = (self.root / name).read_text().strip()
            except OSError:
                continue  # gone with its module: the next reload says so
            self.current[name] = now
            if _norm(now) == _norm(text):
                if self.drifted.pop(name, None) is not None:
                    log.info("%s%s is back to %s", PREFIX, name, _norm(now))
                    out.append(SysctlChanged(name, "restored", None, now))
            elif self.drifted.get(name) != _norm(now):
                log.warning("%s%s drifted: %s, ipvsd set %s; left as it is until the next reload or restart",
                            PREFIX, name, _norm(now), _norm(text))
                self.drifted[name] = _norm(now)
                out.append(SysctlChanged(name, "drift", _norm(text), now))
        return out

    def status(self) -> tuple[SysctlStatus, ...]:
        """Each configured sysctl: wanted, current, and ok / drift / error."""
        rows = []
        for name, text in sorted(self.wanted.items()):
            now = self.current.get(name)
            state = ("error" if name in self.errors else "drift" if name in self.drifted
                     else "ok" if now is not None and _norm(now) == _norm(text) else "unknown")
            rows.append(SysctlStatus(name=name, wanted=_norm(text), current=None if now is None else _norm(now),
                                     state=state, error=self.errors.get(name)))
        return tuple(rows)


def _write(path: Path, text: str) -> None:
    """One write(2) of the whole value: the kernel parses each write on its own."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _why(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "the kernel has no such setting (too old, or its module is not loaded)"
    if e.errno == errno.EROFS:
        return "/proc/sys is read-only here (a sandbox: see ReadWritePaths= in the systemd unit)"
    if e.errno in (errno.EACCES, errno.EPERM):
        # the kernel lets a process write its network namespace's net.* sysctls with CAP_NET_ADMIN there
        return "permission denied (writing net.ipv4.vs.* needs CAP_NET_ADMIN in ipvsd's network namespace)"
    if e.errno == errno.EINVAL:
        return "the kernel refused the value (EINVAL: out of range or malformed)"
    return f"{e.strerror or e} ({errno.errorcode.get(e.errno or 0, e.errno)})"
