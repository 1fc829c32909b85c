"""Seed 003's director pair built from network namespaces: keepalived moves the VIPs, ipvsd runs on both directors.

     pair-sw holds two bridges (nothing is added to the namespace the tests run in):
     ha-client 10.2.0.1 ──br-ext── ens3 [lb1 .240 / lb2 .241] ens4 ──br-int── ha-rs1 10.2.1.242, ha-rs2 10.2.1.243
     VIPs (keepalived --vrrp, vrrp_sync_group VG1): 10.2.0.254 on ens3 (VI_EXT), 10.2.1.254 on ens4 (VI_INT).
     The client's default route is 10.2.0.254, the real servers' the floating 10.2.1.254 (NAT replies must reach
     whichever director holds the VIPs; seed 003 keeps lb1's own 10.2.1.240, which cannot survive a failover).

The directors' interfaces are named as in the seed (ens3, ens4), so the samples etc/ha/keepalived-lb1.conf,
keepalived-lb2.conf and ipvsd.toml run verbatim. A crash is a power cut: the director's links go down (a killed
keepalived would leave its VIPs configured); its processes keep running, cut off, as a frozen machine's would.
"""

from __future__ import annotations

import itertools
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.kernel.daemon import Ipvsd, keepalive_request
from tests.kernel.lab import NGINX_CONF, RECEIVE, Lab, RealHost, http_get, parse_proc_ip_vs, wait_until
from tests.netns import ip_batch, ipvsadm, run_in, sh

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "etc" / "ha"
SWITCH = "pair-sw"
CLIENT_NS = "ha-client"
CLIENT = "10.2.0.1"
VIP = "10.2.0.254"  # VI_EXT, the service address
GATEWAY = "10.2.1.254"  # VI_INT, the real servers' default route



class Keepalived:
    """`keepalived --vrrp` in one namespace, in the foreground, with its own pid files and log (in `dir`)."""

    def __init__(self, ns: str, config: Path, dir: Path) -> None:
        self.ns, self.config, self.dir = ns, config, dir
        self.log_path = dir / "keepalived.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Keepalived:
        d = self.dir
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "keepalived", "--vrrp", "--dont-fork", "--log-console",
                 "--log-detail", "-f", str(self.config), "-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid"),
                 "-c", str(d / "checkers.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def addresses(ns: str, ifname: str) -> set[str]:
    """The IPv4 addresses on interface `ifname` of namespace `ns`."""
    out = sh("ip", "-n", ns, "-4", "-o", "addr", "show", "dev", ifname).stdout
    return set(re.findall(r"inet (\S+?)/", out))


def set_links(ns: str, ifnames: tuple[str, ...], up: bool) -> None:
    ip_batch([f"link set {i} {'up' if up else 'down'}" for i in ifnames], ns=ns)


def sync_daemons(ns: str) -> list[tuple[str, str, int]]:
    """The namespace's IPVS sync daemons as (role, interface, syncid), from `ipvsadm -L --daemon`."""
    out = ipvsadm(ns, "-L", "--daemon")
    return sorted((role, ifn, int(sid))
                  for role, ifn, sid in re.findall(r"(master|backup) sync daemon \(mcast=(\S+?), syncid=(\d+)", out))


def _hex_ip(addr: str) -> str:
    return "".join(f"{int(p):02X}" for p in addr.split("."))


def conn_entry(ns: str, client: str, port: int) -> str | None:
    """The IPVS connection entry of client:port in namespace `ns` ("ESTABLISHED to 10.2.1.242:80"), or None."""
    def read() -> str:
        return Path("/proc/thread-self/net/ip_vs_conn").read_text()
    needle = f" {_hex_ip(client)} {port:04X} "
    for line in run_in(ns, read).splitlines():
        if needle in line:
            parts = line.split()
            dest = ".".join(str(int(parts[5][i:i + 2], 16)) for i in range(0, 8, 2))
            return f"{parts[7]} to {dest}:{int(parts[6], 16)}"
    return None


class KeepAlive:
    """One HTTP keep-alive connection from `ns` to addr:80, a request every `period` s from a thread.

    `answers` holds (time answered, body) per request; the first request that fails ends the loop and is kept
    in `error`. The socket's timeout (`patience`) must outlast a failover: TCP's retransmissions back off to
    seconds while the VIP moves."""

    def __init__(self, ns: str, addr: str, *, period: float = 0.2, patience: float = 30.0) -> None:
        self.period = period
        self.sock: socket.socket = run_in(ns, lambda: socket.create_connection((addr, 80), timeout=10))
        self.sock.settimeout(patience)
        self.port: int = self.sock.getsockname()[1]
        self.opened = time.monotonic()
        self.real = keepalive_request(self.sock)  # the page names the real server
        self.answers: list[tuple[float, str]] = [(time.monotonic(), self.real)]
        self.error: BaseException | None = None
        self.failed_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"keepalive-{self.port}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self.period
            try:
                body = keepalive_request(self.sock)
            except (OSError, AssertionError) as e:
                self.failed_at, self.error = time.monotonic(), e
                return
            self.answers.append((time.monotonic(), body))
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def failed(self) -> int:
        """Failed requests: the connection is dead after the first one."""
        return 1 if self.error is not None else 0

    def answered_since(self, t: float) -> int:
        return sum(1 for at, _ in self.answers if at > t)

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest wait between two answers, of those ending after `since`."""
        times = [at for at, _ in self.answers]
        return max((b - a for a, b in itertools.pairwise(times) if b > since), default=0.0)

    def wait_answers_since(self, t: float, n: int, *, timeout: float) -> None:
        def enough() -> bool:
            assert self.error is None, f"the keep-alive connection failed: {self.error!r}"
            return self.answered_since(t) >= n
        wait_until(enough, timeout=timeout, what=f"{n} answers on the keep-alive connection")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.sock.close()


def first_new_connection(ns: str, addr: str, since: float, *, timeout: float) -> tuple[float, str]:
    """Try a fresh HTTP GET every ~0.3 s until one answers; return (seconds since `since`, the body)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, body = http_get(ns, addr, 80, timeout=0.3)
            return time.monotonic() - since, body.strip()
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no new connection to {addr} within {timeout}s") from None


@dataclass
class Director:
    """One director: its namespace, keepalived and ipvsd."""

    name: str
    ext: str
    int: str
    dir: Path
    keepalived: Keepalived = field(init=False)
    ipvsd: Ipvsd = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "ipvsd.toml"
        self.keepalived = Keepalived(self.name, SAMPLES / f"keepalived-{self.name}.conf", self.dir)
        # Ipvsd runs its process in `lab.lb`: a Lab value that is never brought up only names the namespace
        self.ipvsd = Ipvsd(Lab(root=self.dir, n=0, lb=self.name), self.config, self.dir / "state", resync=5.0)

    def holds(self) -> bool:
        """True when this director holds both VIPs."""
        return VIP in addresses(self.name, "ens3") and GATEWAY in addresses(self.name, "ens4")

    def crash(self) -> None:
        """Power cut: both links down (keepalived, ipvsd and the kernel's state stay, cut off)."""
        set_links(self.name, ("ens3", "ens4"), up=False)

    def restore(self) -> None:
        set_links(self.name, ("ens3", "ens4"), up=True)

    def table(self) -> dict[str, dict[str, int]]:
        return run_in(self.name, lambda: parse_proc_ip_vs(Path("/proc/thread-self/net/ip_vs").read_text()))

    def weights(self) -> dict[str, int]:
        return self.table().get(f"TCP {VIP}:80", {})

    def daemons(self) -> list[tuple[str, str, int]]:
        return sync_daemons(self.name)

    def set_sync(self, on: bool) -> None:
        """Run the sample's configuration, or the same without [sync]: ipvsd then stops the daemons it ran.

        ipvsd reloads by itself (the sample leaves watch_config on): an `ipvsd reload` client would cost a Python
        start, seconds under the lab's emulated CPU."""
        sample = (SAMPLES / "ipvsd.toml").read_text()
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(sample if on else without_sync(sample))
        tmp.rename(self.config)


def without_sync(toml: str) -> str:
    """The sample without its [sync] section (ipvsd then stops the daemons it ran)."""
    return re.sub(r"^\[sync\]\n(?:(?!\[).*\n)*", "", toml, flags=re.M)


@dataclass
class Pair:
    """The running topology: `lb1` (priority 105) and `lb2` (95), the client, and the real servers."""

    root: Path
    reals: list[RealHost] = field(default_factory=list)
    directors: list[Director] = field(default_factory=list)

    @property
    def lb1(self) -> Director:
        return self.directors[0]

    @property
    def lb2(self) -> Director:
        return self.directors[1]

    @property
    def namespaces(self) -> list[str]:
        return [SWITCH, CLIENT_NS, "lb1", "lb2", "ha-rs1", "ha-rs2"]

    def up(self) -> Pair:
        self.down()  # leftovers of an interrupted run
        sh("modprobe", "-a", "ip_vs", "ip_vs_rr", "veth", "bridge")
        self.reals = [RealHost(f"ha-rs{i}", f"10.2.1.{241 + i}", self.root / f"rs{i}") for i in (1, 2)]
        self.directors = [Director(f"lb{i}", f"10.2.0.{239 + i}", f"10.2.1.{239 + i}", self.root / f"lb{i}")
                          for i in (1, 2)]
        ip_batch([f"netns add {ns}" for ns in self.namespaces])
        per_ns: dict[str, list[str]] = {ns: ["link set lo up"] for ns in self.namespaces}
        per_ns[SWITCH] += [f"link add {br} type bridge" for br in ("br-ext", "br-int")]
        per_ns[SWITCH] += [f"link set {br} up" for br in ("br-ext", "br-int")]
        veths: list[str] = []

        def attach(ns: str, ifname: str, bridge: str, port: str, addr: str) -> None:
            veths.append(f"link add {ifname} netns {ns} type veth peer name {port} netns {SWITCH}")
            per_ns[SWITCH].append(f"link set {port} master {bridge} up")
            per_ns[ns] += [f"addr add {addr} dev {ifname}", f"link set {ifname} up"]

        attach(CLIENT_NS, "eth0", "br-ext", "p-client", f"{CLIENT}/24")
        for d in self.directors:
            attach(d.name, "ens3", "br-ext", f"p-{d.name}ext", f"{d.ext}/24")
            attach(d.name, "ens4", "br-int", f"p-{d.name}int", f"{d.int}/24")
        for r in self.reals:
            attach(r.name, "eth0", "br-int", f"p-{r.name}", f"{r.addr}/24")
        per_ns[CLIENT_NS].append(f"route add default via {VIP}")
        for r in self.reals:
            per_ns[r.name].append(f"route add default via {GATEWAY}")
        ip_batch(veths)
        for ns, lines in per_ns.items():
            ip_batch(lines, ns=ns)
        for d in self.directors:
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=d.name)
            d.set_sync(True)  # ipvsd runs the master and backup sync daemons from the sample's [sync]
            d.ipvsd.start()  # first: a Python start takes a minute or two under the lab's emulated CPU
        for i, r in enumerate(self.reals, 1):
            (r.dir / "www").mkdir(parents=True, exist_ok=True)
            (r.dir / "tmp").mkdir(exist_ok=True)
            (r.dir / "nginx.conf").write_text(NGINX_CONF.format(d=r.dir, port=r.port))
            r.set_page(f"{RECEIVE}-rs{i}\n")
            r.start()
        # lb1 first, alone: both instances start BACKUP (nopreempt), so the first to time out takes the VIPs
        self.lb1.keepalived.start()
        wait_until(self.lb1.holds, timeout=30, what="lb1 to take the VIPs")
        self.lb2.keepalived.start()
        for d in self.directors:
            wait_until(lambda d=d: d.weights() == {"10.2.1.242:80": 1, "10.2.1.243:80": 1}, timeout=240,
                       what=f"both reals up in {d.name}'s table")
        return self

    def down(self) -> None:
        for d in self.directors:
            if d.ipvsd.proc is not None:
                d.ipvsd.stop()
            d.keepalived.stop()
        for r in self.reals:
            r.stop(signal.SIGKILL)
        existing = set(sh("ip", "netns", "list").stdout.split())
        for ns in self.namespaces:
            if ns in existing:
                sh("ip", "netns", "del", ns, check=False)

    def holder(self) -> Director:
        """The director that holds the VIPs now (waiting while they move)."""
        found = wait_until(lambda: next((d for d in self.directors if d.holds()), None), timeout=30,
                           what="a director holding the VIPs")
        assert isinstance(found, Director)
        return found

    def other(self, d: Director) -> Director:
        return self.lb2 if d is self.lb1 else self.lb1

    def get(self, *, timeout: float = 5.0) -> str:
        """One HTTP GET from the client to the VIP on a fresh connection; the page (names the real)."""
        return http_get(CLIENT_NS, VIP, 80, timeout=timeout)[1].strip()

    def keepalive(self) -> KeepAlive:
        return KeepAlive(CLIENT_NS, VIP)

    def entry(self, d: Director, conn: KeepAlive) -> str | None:
        return conn_entry(d.name, CLIENT, conn.port)

    def diagnostics(self) -> str:
        """What each director logged, for a failing assertion."""
        return "\n".join(f"--- {d.name} keepalived:\n{d.keepalived.log()[-3000:]}\n--- {d.name} ipvsd:\n"
                         f"{d.ipvsd.log()[-3000:]}" for d in self.directors)
