"""Many real servers cheaply: one namespace holding N /32 addresses on lo, one nginx listening on all of them.

     lb 10.2.1.240 ──br-int── rsmany 10.2.1.250, and 10.2.16.1, .2, … (250 per /24) on lo
     lb routes 10.2.16.0/20 via 10.2.1.250; rsmany's default route is lb (NAT replies go back through it).

nginx logs every request as "<msec> <server address>", which is how the scale scenario counts checks and the
gaps between two checks of one real.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.kernel.lab import LB_INT, SWITCH, wait_until
from tests.netns import ip_batch, sh

MAX = 4000
NGINX = """daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    default_type text/html;
    log_format checks '$msec $server_addr';
    access_log {d}/access.log checks buffer=256k flush=1s;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    keepalive_timeout 600;
    server {{
        listen 80 backlog=4096;
        root {d}/www;
    }}
}}
"""


def addresses(n: int) -> list[str]:
    """The first n many-server addresses: 10.2.16.1 … 10.2.16.250, 10.2.17.1 …"""
    if n > MAX:
        raise ValueError(f"at most {MAX} many-servers")
    return [f"10.2.{16 + i // 250}.{1 + i % 250}" for i in range(n)]


@dataclass
class Many:
    """The rsmany namespace with `n` addresses and its nginx; `lb` is the director's namespace."""

    root: Path
    n: int
    lb: str = "lb"
    ns: str = "rsmany"
    addr: str = "10.2.1.250"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    def up(self) -> Many:
        self.down()
        sh("ip", "netns", "add", self.ns)
        ip_batch([f"link add eth0 netns {self.ns} type veth peer name p-{self.ns} netns {SWITCH}"])
        ip_batch([f"link set p-{self.ns} master br-int up"], ns=SWITCH)
        ip_batch(["link set lo up", f"addr add {self.addr}/24 dev eth0", "link set eth0 up",
                  f"route add default via {LB_INT}", *(f"addr add {a}/32 dev lo" for a in addresses(self.n))],
                 ns=self.ns)
        ip_batch([f"route replace 10.2.16.0/20 via {self.addr}"], ns=self.lb)
        for sub in ("www", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "www" / "index.html").write_text("debian11-many\n")
        (self.root / "nginx.conf").write_text(NGINX.format(d=self.root))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "nginx", "-e", str(self.root / "error.log"), "-c",
             str(self.root / "nginx.conf")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        pid = self.proc.pid
        wait_until(lambda: ":0050 00000000:0000 0A" in Path(f"/proc/{pid}/net/tcp").read_text(), timeout=30,
                   what="many-servers' nginx to listen")
        return self

    def down(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        sh("ip", "netns", "del", self.ns, check=False)
        sh("ip", "-n", self.lb, "route", "del", "10.2.16.0/20", check=False)

    def log_size(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def checks(self, t0: float, t1: float, offset: int = 0) -> dict[str, list[float]]:
        """Request times (epoch seconds) per server address in [t0, t1), from nginx's access log at `offset`."""
        out: dict[str, list[float]] = {}
        with self.access_log.open() as f:
            f.seek(offset)
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    t = float(parts[0])
                    if t0 <= t < t1:
                        out.setdefault(parts[1], []).append(t)
        return out
