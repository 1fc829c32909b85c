"""The seed 003 topology built from network namespaces: a client, the director `lb`, and N real servers.

     lab-sw holds two bridges (so nothing is added to the namespace the tests run in):
     client 10.2.0.1 ──br-ext── 10.2.0.240 [lb] 10.2.1.240 ──br-int── rs1 10.2.1.242, rs2 10.2.1.243, ...
     client's default route is the VIP side of lb; real servers' default route is lb (NAT/masq), lb forwards.

Each real server runs nginx (one event-driven process, no fork per request: the cheapest real HTTP server
under the lab's emulated CPU) serving index.html = "debian11-<name>", the seed's hostname page whose
"debian11" its ldirectord.cf and keepalived.conf check for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns import Wiring, ipvsadm, run_in, sh

VIP = "10.2.0.240"
LB_INT = "10.2.1.240"
CLIENT = "10.2.0.1"
RECEIVE = "debian11"  # seed 003: ldirectord/keepalived look for it; index.html is the hostname
SWITCH = "lab-sw"

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type text/html;
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    keepalive_timeout 600;  # long-lived connections must outlive a daemon restart under TCG
    keepalive_requests 1000000;  # nginx closes a connection after 1000 requests by default: a client
                                 # asking once a second would see it "break" after 17 minutes
    server {{
        listen {port} backlog=4096;
        root {d}/www;
        add_header X-Server $server_addr;
    }}
}}
"""


def wait_until(cond: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05) -> object:
    """Return cond()'s first truthy value; fail naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_get(ns: str, addr: str, port: int = 80, path: str = "/", *, timeout: float = 5.0) -> tuple[int, str]:
    """GET http://addr:port/path from namespace `ns` on a fresh connection; return (status, body)."""

    def get() -> tuple[int, str]:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace")

    return run_in(ns, get, timeout=timeout + 5)


@dataclass
class RealHost:
    """One real server namespace and its nginx."""

    name: str
    addr: str
    dir: Path
    port: int = 80
    proc: subprocess.Popen[bytes] | None = None

    @property
    def page(self) -> Path:
        return self.dir / "www" / "index.html"

    def set_page(self, text: str) -> None:
        tmp = self.page.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(self.page)

    def start(self) -> None:
        """Start nginx and return once its socket listens."""
        if self.proc and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "nginx", "-e", str(self.dir / "error.log"),
             "-c", str(self.dir / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = self.proc.pid  # `ip netns exec` execs nginx, so this is nginx's pid
        needle = f":{self.port:04X} 00000000:0000 0A"
        wait_until(lambda: self.proc is not None and self.proc.poll() is None and _listening(pid, needle),
                   timeout=30, what=f"nginx in {self.name} to listen")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop nginx (SIGTERM: it closes its sockets; SIGKILL: the kernel does) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


def _hexaddr(text: str) -> str:
    host, port = text.split(":")
    return f"{'.'.join(str(int(host[i:i + 2], 16)) for i in range(0, 8, 2))}:{int(port, 16)}"


def parse_proc_ip_vs(text: str) -> dict[str, dict[str, int]]:
    """Parse the kernel's /proc/net/ip_vs (IPv4 services and fwmarks; hex addresses) into service -> dest weights."""
    table: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines()[3:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "->":
            if current is not None:
                current[_hexaddr(parts[1])] = int(parts[3])
        elif parts[0] == "FWM":
            current = table.setdefault(f"FWM {int(parts[1], 16)}", {})
        else:
            current = table.setdefault(f"{parts[0]} {_hexaddr(parts[1])}", {})
    return table


def _listening(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False


@dataclass
class Lab:
    """The running topology. `reals[i]` is rs{i+1} at 10.2.1.{242+i}."""

    root: Path
    n: int
    reals: list[RealHost] = field(default_factory=list)
    client: str = "client"
    lb: str = "lb"
    vip: str = VIP

    @property
    def namespaces(self) -> list[str]:
        return [SWITCH, self.client, self.lb, *(r.name for r in self.reals)]

    def up(self) -> Lab:
        self.reals = [RealHost(f"rs{i + 1}", f"10.2.1.{242 + i}", self.root / f"rs{i + 1}") for i in range(self.n)]
        self.down()  # leftovers of an interrupted run
        sh("modprobe", "-a", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "veth", "bridge")
        net = Wiring(SWITCH, [self.client, self.lb, *(r.name for r in self.reals)], ("br-ext", "br-int"))
        net.attach(self.client, "eth0", "br-ext", "p-client", f"{CLIENT}/24")
        net.attach(self.lb, "ext", "br-ext", "p-lbext", f"{self.vip}/24")
        net.attach(self.lb, "int", "br-int", "p-lbint", f"{LB_INT}/24")
        for r in self.reals:
            net.attach(r.name, "eth0", "br-int", f"p-{r.name}", f"{r.addr}/24")
        net.per_ns[self.client].append(f"route add default via {self.vip}")
        for r in self.reals:
            net.per_ns[r.name].append(f"route add default via {LB_INT}")
        net.apply()
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.lb)
        for r in self.reals:
            (r.dir / "www").mkdir(parents=True, exist_ok=True)
            (r.dir / "tmp").mkdir(exist_ok=True)
            (r.dir / "nginx.conf").write_text(NGINX_CONF.format(d=r.dir, port=r.port))
            r.set_page(f"{RECEIVE}-{r.name}\n")
            r.start()
        return self

    def down(self) -> None:
        for r in self.reals:
            r.stop(signal.SIGKILL)
        existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        for ns in self.namespaces:
            if ns in existing:
                sh("ip", "netns", "del", ns, check=False)

    def real(self, name: str) -> RealHost:
        return next(r for r in self.reals if r.name == name)

    def ipvsadm(self, *args: str, check: bool = True) -> str:
        return ipvsadm(self.lb, *args, check=check)

    def table(self) -> dict[str, dict[str, int]]:
        """The director's IPVS table as {"TCP 10.2.0.240:80": {"10.2.1.242:80": weight}}, read without a fork."""
        return run_in(self.lb, lambda: parse_proc_ip_vs(Path("/proc/thread-self/net/ip_vs").read_text()))

    def weights(self, service: str | None = None) -> dict[str, int]:
        """Dest weights of one service (default: the VIP's TCP port 80 service)."""
        return self.table().get(service or f"TCP {self.vip}:80", {})

    def get(self, path: str = "/", *, timeout: float = 5.0) -> tuple[int, str]:
        """One HTTP GET from the client to the VIP."""
        return http_get(self.client, self.vip, 80, path, timeout=timeout)
