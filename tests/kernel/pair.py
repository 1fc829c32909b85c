"""Seed 003's director pair built from network namespaces: keepalived moves the VIPs, ipvsd runs on both directors.

     pair-sw holds two bridges (nothing is added to the namespace the tests run in):
     ha-client 10.2.0.1 ──br-ext── ens3 [lb1 .240 / lb2 .241] ens4 ──br-int── ha-rs1 10.2.1.242, ha-rs2 10.2.1.243
     VIPs (keepalived --vrrp, vrrp_sync_group VG1): 10.2.0.254 on ens3 (VI_EXT), 10.2.1.254 on ens4 (VI_INT).
     The client's default route is 10.2.0.254, the real servers' the floating 10.2.1.254 (NAT replies must reach
     whichever director holds the VIPs; seed 003 keeps lb1's own 10.2.1.240, which cannot survive a failover).

The hosts and addresses are vagrant/topology.json's "pair", and each host is set up by its role script
(vagrant/roles/: director.sh, realserver.sh, client.sh) as the Vagrant VMs are, without systemd and package
installation: director.sh installs the samples etc/ha/keepalived-lb1.conf and ipvsd.toml with the priority and
interfaces of its director, and starts `keepalived --vrrp` and `ipvsd run`. The directors' interfaces are named
as in the seed (ens3, ens4). A crash is a power cut: the director's links go down (a killed keepalived would
leave its VIPs configured); its processes keep running, cut off, as a frozen machine's would.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.kernel import topology
from tests.kernel.daemon import Ipvsd, keepalive_request
from tests.kernel.lab import NGINX_CONF, RECEIVE, Lab, RealHost, http_get, parse_proc_ip_vs, wait_until
from tests.netns import Wiring, ip_batch, ipvsadm, run_in, sh

ROOT = Path(__file__).resolve().parents[2]
SWITCH = "pair-sw"
CLIENT_NS = "ha-client"
TOPOLOGY = topology.load("pair")
CLIENT = topology.host(TOPOLOGY, "client")["addresses"]["ext"]
VIP = TOPOLOGY["vips"]["ext"]  # VI_EXT, the service address
GATEWAY = TOPOLOGY["vips"]["int"]  # VI_INT, the real servers' route back to the clients



def stop_pidfile(pid_file: Path, *, timeout: float = 30.0) -> None:
    """SIGTERM the process a role script started (its pid in `pid_file`) and wait until it is gone."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid), timeout=timeout,
               what=f"process {pid} ({pid_file.name}) to exit")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "zombie"


class Keepalived:
    """The `keepalived --vrrp` a role script started (foreground, its own pid files): its log and pid in `run`."""

    def __init__(self, run: Path) -> None:
        self.log_path = run / "keepalived.log"
        self.pid_file = run / "keepalived.pid"

    def stop(self) -> None:
        stop_pidfile(self.pid_file)

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
    installed: str = ""  # the configuration director.sh installed

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "etc" / "ipvsd" / "ipvsd.toml"  # where director.sh installs the sample
        self.keepalived = Keepalived(self.dir / "run")
        # director.sh starts ipvsd with --state-dir RUN/state, logging to RUN/ipvsd.log (what Ipvsd reads); the
        # Lab value is never brought up: it only names the namespace
        self.ipvsd = Ipvsd(Lab(root=self.dir, n=0, lb=self.name), self.config, self.dir / "run" / "state")

    def setup(self) -> None:
        """Run director.sh in this director's namespace: the samples, ip_forward, ipvsd and keepalived started."""
        topology.run_role(self.name, TOPOLOGY, self.name, self.dir)
        self.installed = self.config.read_text()

    def stop(self) -> None:
        stop_pidfile(self.dir / "run" / "ipvsd.pid")
        self.keepalived.stop()

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
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(self.installed if on else without_sync(self.installed))
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
        hosts = TOPOLOGY["hosts"]
        self.reals = [RealHost(f"ha-{h['name']}", h["addresses"]["int"], self.root / h["name"])
                      for h in hosts if h["role"] == "realserver"]
        self.directors = [Director(h["name"], h["addresses"]["ext"], h["addresses"]["int"], self.root / h["name"])
                          for h in hosts if h["role"] == "director"]
        net = Wiring(SWITCH, [ns for ns in self.namespaces if ns != SWITCH], ("br-ext", "br-int"))
        net.attach(CLIENT_NS, "eth0", "br-ext", "p-client", f"{CLIENT}/24")
        for d in self.directors:
            net.attach(d.name, "ens3", "br-ext", f"p-{d.name}ext", f"{d.ext}/24")
            net.attach(d.name, "ens4", "br-int", f"p-{d.name}int", f"{d.int}/24")
        for r in self.reals:
            net.attach(r.name, "eth0", "br-int", f"p-{r.name}", f"{r.addr}/24")
        net.apply()
        # The role scripts, as on the VMs: the client's; each real server's (its route back to the clients via
        # the floating VI_INT address; nginx is the lab's own, below); then the directors'
        topology.run_role(CLIENT_NS, TOPOLOGY, "client", self.root / "client")
        for r in self.reals:
            topology.run_role(r.name, TOPOLOGY, r.name.removeprefix("ha-"), r.dir)
        for r in self.reals:
            (r.dir / "www").mkdir(parents=True, exist_ok=True)
            (r.dir / "tmp").mkdir(exist_ok=True)
            (r.dir / "nginx.conf").write_text(NGINX_CONF.format(d=r.dir, port=r.port))
            r.set_page(f"{RECEIVE}-{r.name.removeprefix('ha-')}\n")
            r.start()
        # lb1 first, alone: both instances start BACKUP (nopreempt), so the first to time out takes the VIPs
        self.lb1.setup()
        wait_until(self.lb1.holds, timeout=30, what="lb1 to take the VIPs")
        self.lb2.setup()
        want = {f"{r.addr}:80": 1 for r in self.reals}
        for d in self.directors:  # ipvsd's Python start takes a minute or two under the lab's emulated CPU
            wait_until(lambda d=d: d.weights() == want, timeout=240, what=f"both reals up in {d.name}'s table")
        return self

    def down(self) -> None:
        for d in self.directors:
            d.stop()
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
