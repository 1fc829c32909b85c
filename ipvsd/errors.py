"""The project's exceptions: a bad config, a refused kernel operation, a refused plan."""

from __future__ import annotations

import errno as _errno
import os


class IpvsdError(Exception):
    """Root of every error ipvsd reports to an operator."""


class ConfigError(IpvsdError):
    """A configuration that cannot be used, located at `path:line` and the key when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class KernelError(IpvsdError):
    """A kernel IPVS operation that failed; `op` is in ipvsadm notation (`-a -t 10.0.0.1:80 -r ...`)."""

    def __init__(self, op: str, err: int) -> None:
        self.op = op
        self.errno = err
        name = _errno.errorcode.get(err, str(err))
        super().__init__(f"ipvs {op}: {os.strerror(err)} ({name})")


class IpvsMissing(KernelError):
    """The kernel has no IPVS netlink family, and loading ip_vs did not give it one."""

    def __init__(self, err: int) -> None:
        super().__init__("(open the IPVS netlink family)", err)
        self.args = ("the kernel has no IPVS (the ip_vs module is not loaded and could not be loaded: "
                     "run `modprobe ip_vs` as root, or load it at boot)",)

    def __str__(self) -> str:
        return str(self.args[0])
