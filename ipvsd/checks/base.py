"""What every probe shares: the target, the result value, the Probe interface, the registry and the bound.

A probe never raises for a down backend: `run_bounded` turns timeouts, socket errors and `ProbeFailure`
into a `ProbeResult`, so a real that is down is data. Probe bodies raise `ProbeFailure(kind, reason)` for
protocol-level verdicts (wrong status, missing string) and let socket errors propagate to be classified here.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ipvsd.model import addrport


class Kind(StrEnum):
    """Why a probe ended as it did: a small, closed set usable as a metric label."""

    OK = "ok"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    RESET = "reset"
    UNREACHABLE = "unreachable"
    STATUS = "status"
    RECEIVE = "receive"
    TLS = "tls"
    DNS = "dns"
    EXIT_CODE = "exit-code"
    PROTOCOL = "protocol"
    STATIC = "static"
    ERROR = "error"
    LOCAL = "local"  # this host ran out of something (descriptors, buffers): nothing is known about the real


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict: up or down, a reason an operator understands, and how long it took (s)."""

    ok: bool
    reason: str
    latency: float
    kind: Kind

    @classmethod
    def up(cls, reason: str, latency: float = 0.0) -> ProbeResult:
        return cls(True, reason, latency, Kind.OK)

    @classmethod
    def down(cls, kind: Kind, reason: str, latency: float = 0.0) -> ProbeResult:
        return cls(False, reason, latency, kind)


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Where a probe goes: the real's address and port, plus what the data path and external checks need.

    `vip`/`vport` are the virtual service (address or fwmark as text), passed to external commands as
    ldirectord does; `source` (bindto) and `mark` (SO_MARK) let a check follow the data path.
    """

    addr: str
    port: int
    vip: str = ""
    vport: int = 0
    source: str | None = None
    mark: int | None = None

    def __str__(self) -> str:
        return addrport(self.addr, self.port)


class ProbeFailure(Exception):
    """Raised inside a probe body for a protocol-level verdict; `run_bounded` turns it into a result."""

    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Probe(Protocol):
    """A health check bound to its parameters: probe one target once, within `timeout` seconds."""

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult: ...


Report = Callable[[ProbeResult], None]


class DirectProbe(Probe, Protocol):
    """A probe that can also run without a task (the scheduler's direct probes), when its `direct` is true.

    `start` begins one probe that began at loop time `now`; `report(result)` is called once, from the loop,
    never before `start` returns; the function returned abandons the probe (no report). It never raises for
    a down backend, as `probe` does not.
    """

    direct: bool

    def start(self, target: ProbeTarget, *, timeout: float, now: float, report: Report) -> Callable[[], None]: ...


ProbeFactory = Callable[[Any], Probe]

# check type name -> factory taking that type's config model (ipvsd.config.schema). Filled by each module.
REGISTRY: dict[str, ProbeFactory] = {}


def register(*names: str) -> Callable[[ProbeFactory], ProbeFactory]:
    """Register a probe factory under one or more check type names."""

    def deco(factory: ProbeFactory) -> ProbeFactory:
        for name in names:
            REGISTRY[name] = factory
        return factory

    return deco


_ERRNO_KIND = {
    errno.ECONNREFUSED: (Kind.REFUSED, "connection refused"),
    errno.ECONNRESET: (Kind.RESET, "connection reset"),
    errno.EPIPE: (Kind.RESET, "connection reset"),
    errno.ECONNABORTED: (Kind.RESET, "connection aborted"),
    errno.EHOSTUNREACH: (Kind.UNREACHABLE, "host unreachable"),
    errno.ENETUNREACH: (Kind.UNREACHABLE, "network unreachable"),
    errno.EHOSTDOWN: (Kind.UNREACHABLE, "host down"),
    errno.ETIMEDOUT: (Kind.TIMEOUT, "connect timed out"),
    errno.EMFILE: (Kind.LOCAL, "ipvsd is out of file descriptors (too many open files)"),
    errno.ENFILE: (Kind.LOCAL, "this host is out of file descriptors"),
    errno.ENOBUFS: (Kind.LOCAL, "this host is out of socket buffers"),
    errno.ENOMEM: (Kind.LOCAL, "this host is out of memory"),
}


def classify(exc: BaseException) -> tuple[Kind, str]:
    """Return the kind and a short reason for an exception raised while probing."""
    if isinstance(exc, ProbeFailure):
        return exc.kind, exc.reason
    if isinstance(exc, TimeoutError):
        return Kind.TIMEOUT, "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Kind.TLS, f"TLS verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return Kind.TLS, f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_KIND:
        return _ERRNO_KIND[exc.errno]
    if isinstance(exc, ConnectionError):
        return Kind.RESET, "connection closed"
    if isinstance(exc, OSError):
        return Kind.ERROR, exc.strerror or str(exc)
    return Kind.ERROR, f"{type(exc).__name__}: {exc}"


async def run_bounded(body: Callable[[], Awaitable[str]], *, timeout: float, bounded: bool = False) -> ProbeResult:
    """Run a probe body (returning the reason of a success) within `timeout`; never raise for a down backend.

    `bounded`: the body enforces the timeout itself (raising TimeoutError), which saves a timer per probe.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        if bounded:
            reason = await body()
        else:
            async with asyncio.timeout(timeout):
                reason = await body()
    except VERDICTS as exc:
        return failed(exc, timeout, loop.time() - start)
    return ProbeResult.up(reason, loop.time() - start)


# What a probe body raises for a down backend (ssl.SSLError is an OSError): anything else is a probe bug.
VERDICTS = (OSError, ProbeFailure, ValueError, UnicodeError, EOFError)


def failed(exc: BaseException, timeout: float, latency: float) -> ProbeResult:
    """The down result for `exc` (one of VERDICTS) raised by a probe that had `timeout` seconds."""
    kind, why = classify(exc)
    if kind is Kind.TIMEOUT and isinstance(exc, TimeoutError):
        why = f"timed out after {timeout:g}s"
    return ProbeResult.down(kind, why, latency)
