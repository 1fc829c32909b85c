"""Seed 000's two-node ssh cluster built from network namespaces: each node is a director and an ssh server.

     s0-client 192.168.2.210 ──br0── enp2s0 [ha0 192.168.2.230], enp2s0 [ha1 192.168.2.231]
     VIP 192.168.2.232: on enp2s0 of the node keepalived (--vrrp, nopreempt) makes master, and on lo of both.

The hosts, addresses and pinned MAC addresses are vagrant/topology.json's "two-node"; each node is set up by
vagrant/roles/node.sh as the Vagrant VMs are (without systemd and package installation): it installs the samples
(etc/seed000/: ipvsd.toml on both nodes, keepalived-ha0.conf with the node's priority, iptables-ha0.rules with the
peer's MAC: fwmark 22 for packets to VIP:22 not from the peer; sysctl.conf: arp_ignore/arp_announce), puts the
VIP on lo, and starts `keepalived --vrrp` and `ipvsd run`. Each node's sshd listens on 0.0.0.0:22 and
names its node in its banner (VersionAddendum), so a connection tells which node answered.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.kernel import topology
from tests.kernel.daemon import Ipvsd
from tests.kernel.lab import Lab, parse_proc_ip_vs, wait_until
from tests.kernel.pair import Keepalived, addresses, set_links, stop_pidfile
from tests.netns import Wiring, run_in, sh

SWITCH = "s0-sw"
CLIENT_NS = "s0-client"
TOPOLOGY = topology.load("two-node")
CLIENT = topology.host(TOPOLOGY, "client")["addresses"]["lan"]  # the seed's client, from its haproxy log
VIP = TOPOLOGY["vips"]["lan"]
SERVICE = "FWM 22"

# UsePAM: without PAM sshd refuses root, whose password is locked ("*") on the lab's Debian root filesystem.
SSHD_CONFIG = """ListenAddress 0.0.0.0
Port 22
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {keys}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
StrictModes no
PrintMotd no
PrintLastLog no
LogLevel ERROR
VersionAddendum {name}
"""


def banner(addr: str, *, timeout: float = 5.0) -> str:
    """Connect from the client to addr:22 and return the node its sshd names in its banner ("ha0")."""
    def read() -> str:
        with socket.create_connection((addr, 22), timeout=timeout) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace").split()[-1] if data.startswith(b"SSH-") else ""
    return run_in(CLIENT_NS, read, timeout=timeout + 5)


class Session:
    """A real ssh login from the client, running `cat`: each line sent comes back while the session lives.

    The remote command first prints the node's own address, so the session knows which node serves it."""

    def __init__(self, key: Path, addr: str) -> None:
        remote = "ip -4 -o addr show dev enp2s0 | grep -o '192\\.168\\.2\\.23[01]' | head -n1; exec cat"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT_NS, "ssh", "-i", str(key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             "-o", "ConnectTimeout=10", f"root@{addr}", remote],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addr = addr
        served = self._line(timeout=60)
        assert served in ("192.168.2.230", "192.168.2.231"), (served, self._stderr())
        self.node = f"ha{served[-1]}"
        self._n = 0

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def _line(self, *, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else ""

    def alive(self, *, timeout: float = 30.0) -> bool:
        """Send a line and read it back (the round trip may wait out TCP retransmissions after a failover)."""
        assert self.proc.stdin is not None
        self._n += 1
        line = f"ping {self._n}"
        try:
            self.proc.stdin.write(f"{line}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return False
        return self._line(timeout=timeout) == line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@dataclass
class Node:
    """One node: director (keepalived, ipvsd) and ssh server."""

    name: str
    addr: str
    mac: str
    dir: Path
    keepalived: Keepalived = field(init=False)
    ipvsd: Ipvsd = field(init=False)
    sshd: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keepalived = Keepalived(self.dir / "run")
        # node.sh starts ipvsd with --state-dir RUN/state, logging to RUN/ipvsd.log; the Lab value is never
        # brought up: it only names the namespace
        self.ipvsd = Ipvsd(Lab(root=self.dir, n=0, lb=self.name), self.dir / "etc" / "ipvsd" / "ipvsd.toml",
                           self.dir / "run" / "state")

    def setup(self) -> None:
        """Run node.sh in this node's namespace: VIP on lo, ARP sysctls, the fwmark rule, keepalived and ipvsd."""
        topology.run_role(self.name, TOPOLOGY, self.name, self.dir)

    def holds(self) -> bool:
        return VIP in addresses(self.name, "enp2s0")

    def crash(self) -> None:
        set_links(self.name, ("enp2s0",), up=False)

    def restore(self) -> None:
        set_links(self.name, ("enp2s0",), up=True)

    def weights(self) -> dict[str, int]:
        table = run_in(self.name, lambda: parse_proc_ip_vs(Path("/proc/thread-self/net/ip_vs").read_text()))
        return table.get(SERVICE, {})

    def start_sshd(self, keys: Path) -> None:
        (self.dir / "sshd_config").write_text(SSHD_CONFIG.format(d=self.dir, keys=keys, name=self.name))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key"))
        # -D: foreground, -e: log to stderr, -r: no re-exec per connection (under the lab's emulated CPU a
        # re-exec delays the banner past the check's 2 s timeout)
        self.sshd = subprocess.Popen(["ip", "netns", "exec", self.name, "/usr/sbin/sshd", "-D", "-e", "-r",
                                      "-f", str(self.dir / "sshd_config")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=(self.dir / "sshd.log").open("w"))

    def stop(self) -> None:
        stop_pidfile(self.dir / "run" / "ipvsd.pid")
        self.keepalived.stop()
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.send_signal(signal.SIGTERM)
            self.sshd.wait(timeout=30)
        self.sshd = None


@dataclass
class Cluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return [SWITCH, CLIENT_NS, "ha0", "ha1"]

    @property
    def key(self) -> Path:
        return self.root / "client_key"

    def up(self) -> Cluster:
        self.down()
        sh("modprobe", "-a", "ip_vs", "ip_vs_rr", "veth", "bridge")
        self.nodes = [Node(h["name"], h["addresses"]["lan"], h["mac"], self.root / h["name"])
                      for h in TOPOLOGY["hosts"] if h["role"] == "node"]
        net = Wiring(SWITCH, [ns for ns in self.namespaces if ns != SWITCH], ("br0",))
        net.attach(CLIENT_NS, "eth0", "br0", "p-client", f"{CLIENT}/24")
        for n in self.nodes:
            net.attach(n.name, "enp2s0", "br0", f"p-{n.name}", f"{n.addr}/24", mac=n.mac)
        net.apply()
        topology.run_role(CLIENT_NS, TOPOLOGY, "client", self.root / "client")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        keys = self.root / "authorized_keys"
        keys.write_text(self.key.with_suffix(".pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for n in self.nodes:
            n.start_sshd(keys)
        ha0, ha1 = self.nodes
        # ha0 first, alone: both start BACKUP (nopreempt), the first to time out takes the VIP
        ha0.setup()
        wait_until(ha0.holds, timeout=30, what="ha0 to take the VIP")
        ha1.setup()
        # Until the fwmark service exists, marked packets reach the local sshd: ready = both reals in both tables
        both = {"192.168.2.230:22": 1, "192.168.2.231:22": 1}
        for n in self.nodes:
            wait_until(lambda n=n: n.weights() == both, timeout=240, what=f"both nodes in {n.name}'s table")
        return self

    def down(self) -> None:
        for n in self.nodes:
            n.stop()
        existing = set(sh("ip", "netns", "list").stdout.split())
        for ns in self.namespaces:
            if ns in existing:
                sh("ip", "netns", "del", ns, check=False)

    def holder(self) -> Node:
        found = wait_until(lambda: next((n for n in self.nodes if n.holds()), None), timeout=30,
                           what="a node holding the VIP")
        assert isinstance(found, Node)
        return found

    def other(self, n: Node) -> Node:
        return self.nodes[1] if n is self.nodes[0] else self.nodes[0]

    def session(self, addr: str) -> Session:
        return Session(self.key, addr)

    def first_banner(self, since: float, *, timeout: float) -> tuple[float, str]:
        """Try a new connection to the VIP every ~0.3 s until a banner comes; (seconds since `since`, node)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                node = banner(VIP, timeout=0.3)
                if node:
                    return time.monotonic() - since, node
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no new connection to {VIP} within {timeout}s")

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n.name} keepalived:\n{n.keepalived.log()[-2000:]}\n--- {n.name} ipvsd:\n"
                         f"{n.ipvsd.log()[-3000:]}\n--- {n.name} sshd:\n{(n.dir / 'sshd.log').read_text()[-1000:]}"
                         for n in self.nodes)
