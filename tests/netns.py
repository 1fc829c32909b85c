"""Test helpers for network namespaces: run a command or a Python callable inside a named netns.

Python code runs in a namespace through a short-lived thread that calls setns(2): the network namespace is a
per-thread attribute, so the test process itself never leaves its own namespace. Under the lab's emulated CPU
a fork+exec costs ~60 ms, which is why HTTP clients and socket checks here avoid subprocesses.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def join_netns(ns: str) -> None:
    """Move the calling thread into network namespace `ns` (the rest of the process stays where it is)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(ns: str, fn: Callable[[], T], *, timeout: float = 60.0) -> T:
    """Return fn() evaluated in a thread that has joined network namespace `ns`."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            join_netns(ns)
            box["value"] = fn()
        except BaseException as e:  # handed back to the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"call in netns {ns} did not finish within {timeout}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def sh(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 60.0,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (in namespace `ns` when given); raise with its stderr when it fails and check is set."""
    argv: Sequence[str] = (["ip", "netns", "exec", ns, *cmd] if ns else list(cmd))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def ipvsadm(ns: str, *args: str, check: bool = True) -> str:
    """Return the stdout of the real `ipvsadm` run in namespace `ns`."""
    return sh("ipvsadm", *args, ns=ns, check=check).stdout


def ip_batch(lines: Sequence[str], *, ns: str | None = None) -> None:
    """Run many `ip` commands (in namespace `ns`) in one process: one fork instead of one per command."""
    if lines:
        sh("ip", *(["-n", ns] if ns else []), "-batch", "-", input="\n".join(lines) + "\n")


def ipvs_available() -> bool:
    """True when this kernel has IPVS (loading the module if needed) and we may use it."""
    if os.geteuid() != 0:
        return False
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    return os.path.exists("/proc/net/ip_vs")


@dataclass
class Wiring:
    """Namespaces cabled to bridges that live in a switch namespace of their own (nothing is added to the
    namespace the tests run in); `apply` builds it all with one `ip -batch` per namespace.

    `ip -batch` cannot switch namespace per line: one batch makes the namespaces, one the veth pairs, then one per
    namespace configures its side."""

    switch: str
    namespaces: Sequence[str]
    bridges: Sequence[str]
    per_ns: dict[str, list[str]] = field(init=False)
    veths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.per_ns = {ns: ["link set lo up"] for ns in (self.switch, *self.namespaces)}
        self.per_ns[self.switch] += [f"link add {br} type bridge" for br in self.bridges]
        self.per_ns[self.switch] += [f"link set {br} up" for br in self.bridges]

    def attach(self, ns: str, ifname: str, bridge: str, port: str, addr: str, *, mac: str | None = None) -> None:
        """A veth `ifname` in `ns` with `addr` (and `mac`), its peer `port` on `bridge`."""
        address = f" address {mac}" if mac else ""
        self.veths.append(f"link add {ifname} netns {ns}{address} type veth peer name {port} netns {self.switch}")
        self.per_ns[self.switch].append(f"link set {port} master {bridge} up")
        self.per_ns[ns] += [f"addr add {addr} dev {ifname}", f"link set {ifname} up"]

    def apply(self) -> None:
        ip_batch([f"netns add {ns}" for ns in self.per_ns])
        ip_batch(self.veths)
        for ns, lines in self.per_ns.items():
            ip_batch(lines, ns=ns)


class Topology(Protocol):
    """What a lab topology of namespaces offers a module's tests."""

    def up(self) -> None: ...

    def down(self) -> None: ...

    def diagnostics(self) -> str: ...


Topo = TypeVar("Topo", bound=Topology)


def running(topo: Topo, say: Callable[[str], None], what: str) -> Iterator[Topo]:
    """A module fixture's body: bring `topo` up (printing its diagnostics if that fails), say how long it took
    as `what in N s`, yield it, and take it down whatever happened."""
    try:
        t0 = time.monotonic()
        try:
            topo.up()
        except BaseException:
            print(topo.diagnostics())
            raise
        say(f"{what} in {time.monotonic() - t0:.1f}s")
        yield topo
    finally:
        topo.down()
