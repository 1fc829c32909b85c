"""Issue 17's scale-out lab built from network namespaces: three active directors behind an ECMP router (BGP).

     so-sw holds two bridges (nothing is added to the namespace the tests run in):
     so-client 198.51.100.1 ──br-ext── eth1 [so-router] eth0 203.0.113.254 ──br-lan── so-d1 .11, so-d2 .12, so-d3 .13
                                                                                     so-rs1 .21, so-rs2 .22, so-rs3 .23
     VIP 192.0.2.10 on lo of every director and every real server (direct routing).

client → router → a director (ECMP over the BGP next hops, hashed on the ports) → a real server (DR: same VIP,
the real's MAC) → back to the client through the router, skipping the directors. Each director runs ipvsd with
etc/scaleout/ipvsd.toml (it keeps 192.0.2.10/32 in table 200 while the service has quorum) and BIRD with
etc/scaleout/bird-director.conf (it learns table 200 and announces it); the router runs BIRD with
etc/scaleout/bird-router.conf (merge paths: one next hop per announcing director). The sysctl samples are applied
with `sysctl -p`. Every sample is used verbatim: the addresses above are the samples' own, read from them.

Each real server runs nginx serving its name (`rs1`); its keep-alive connections are the long-lived flows, probed
by a request and its answer (`Flows`), and every new connection a GET on a fresh one (`new_connections`). Every
client socket binds a port of its own, never reused in a run: a reused port would follow the old IPVS connection
entry (conn_reuse_mode) instead of being scheduled afresh. A director's crash is its cable pulled (its port on the
bridge down): its processes keep running, cut off, as a frozen machine's would, and its BGP session ends on the
router's hold time.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ipvsd.cli import main as ipvsd_main
from ipvsd.config import load
from ipvsd.shell.routes import RouteTable
from tests.kernel.daemon import Ipvsd, keepalive_request
from tests.kernel.lab import NGINX_CONF, Lab, RealHost, parse_proc_ip_vs, wait_until
from tests.netns import Wiring, join_netns, run_in, sh

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "etc" / "scaleout"
SWITCH, ROUTER, CLIENT_NS = "so-sw", "so-router", "so-client"
CLIENT, ROUTER_EXT = "198.51.100.1", "198.51.100.254"

# The addresses come from the samples, so the lab runs what they say.
_CONFIG, _ = load(str(SAMPLES / "ipvsd.toml"))
_SERVICE = _CONFIG.services[0]
VIP = str(_SERVICE.address)
PORT = int(_SERVICE.port or 80)
REALS = [str(r.address) for r in _SERVICE.reals]
assert _CONFIG.announce is not None
TABLE, PROTOCOL = _CONFIG.announce.table, _CONFIG.announce.protocol
WITHDRAW_DELAY = _CONFIG.announce.withdraw_delay
CHECK = _CONFIG.check_defaults
ROUTER_LAN = re.findall(r"^\s*neighbor (\S+) as \d+;", (SAMPLES / "bird-director.conf").read_text(), re.M)[0]
DIRECTORS = re.findall(r"^protocol bgp \w+ from director \{ neighbor (\S+) as \d+; \}",
                       (SAMPLES / "bird-router.conf").read_text(), re.M)
HOLD_TIME = float(re.findall(r"^\s*hold time (\d+);", (SAMPLES / "bird-router.conf").read_text(), re.M)[0])
PREFIX = 24  # the two networks' prefix length
_PORTS = itertools.count(20000)  # below the ephemeral range (32768-60999): never a kernel-chosen port


def fresh_port() -> int:
    """A client port not used before in this run (itertools.count is atomic under the GIL)."""
    return next(_PORTS)


def with_scheduler(toml: str, scheduler: str) -> str:
    """The director sample with another scheduler and without scheduler flags (the rr comparison)."""
    toml = re.sub(r'^scheduler = "\w+"', f'scheduler = "{scheduler}"', toml, count=1, flags=re.M)
    return re.sub(r"^sched_flags = \[.*\]\n", "", toml, count=1, flags=re.M)


def _hex_ip(addr: str) -> str:
    return "".join(f"{int(p):02X}" for p in addr.split("."))


def _read_proc(ns: str, name: str) -> str:
    """/proc/net/NAME of namespace `ns`, read without a fork (a thread joins the namespace)."""
    return run_in(ns, lambda: Path(f"/proc/thread-self/net/{name}").read_text())


def client_ports(ns: str) -> dict[int, str]:
    """The client's ports that have an IPVS connection entry for the VIP in namespace `ns`, with the real."""
    prefix = f"TCP {_hex_ip(CLIENT)} "
    vip = f" {_hex_ip(VIP)} {PORT:04X} "
    out: dict[int, str] = {}
    for line in _read_proc(ns, "ip_vs_conn").splitlines()[1:]:
        if line.startswith(prefix) and vip in line:
            parts = line.split()
            out[int(parts[2], 16)] = ".".join(str(int(parts[5][i:i + 2], 16)) for i in range(0, 8, 2))
    return out


def next_hops(out: str) -> list[str]:
    """The gateways of `ip -j route show VIP`'s answer: one per next hop of a multipath route, or the one."""
    routes = json.loads(out or "[]")
    hops: list[str] = []
    for r in routes:
        hops += [h["gateway"] for h in r.get("nexthops", [])] or ([r["gateway"]] if "gateway" in r else [])
    return sorted(hops)


@dataclass
class Bird:
    """One BIRD in a namespace: foreground (`-f`), its own control socket and log."""

    ns: str
    config: Path
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "bird.log"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "bird", "-f", "-c", str(self.config), "-s",
                 str(self.dir / "bird.ctl"), "-P", str(self.dir / "bird.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@dataclass
class Director:
    """One director: its namespace, its ipvsd (the sample, copied so a test may change it) and its BIRD."""

    name: str
    addr: str
    dir: Path
    ipvsd: Ipvsd = field(init=False)
    bird: Bird = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "ipvsd.toml"
        (self.dir / "state").mkdir(exist_ok=True)
        # the Lab value is never brought up: it only names the namespace Ipvsd runs in
        self.ipvsd = Ipvsd(Lab(root=self.dir, n=0, lb=self.name), self.config, self.dir / "state")
        self.bird = Bird(self.name, SAMPLES / "bird-director.conf", self.dir / "bird")

    @property
    def port(self) -> str:
        """Its port on the LAN bridge: its cable."""
        return f"p-{self.name}"

    def set_config(self, text: str) -> None:
        """Replace ipvsd's configuration atomically (the sample leaves watch_config on: ipvsd reloads by itself;
        an `ipvsd reload` client would cost a Python start, seconds under the emulated CPU)."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(self.config)

    def routes(self) -> set[str]:
        """ipvsd's routes in table 200 (its protocol), read over rtnetlink from a thread in the namespace."""
        return run_in(self.name, lambda: RouteTable(TABLE, PROTOCOL, "lo").read())

    def announces(self) -> bool:
        return f"{VIP}/32" in self.routes()

    def weights(self) -> dict[str, int]:
        return parse_proc_ip_vs(_read_proc(self.name, "ip_vs")).get(f"TCP {VIP}:{PORT}", {})

    def scheduler(self) -> str:
        """The scheduler of the VIP's service in the kernel ("mh", "rr"), "" without the service."""
        needle = f"TCP  {_hex_ip(VIP)}:{PORT:04X} "
        line = next((ln for ln in _read_proc(self.name, "ip_vs").splitlines() if ln.startswith(needle)), "")
        return line.split()[2] if line else ""

    def ports(self) -> dict[int, str]:
        return client_ports(self.name)

    def blind(self, on: bool) -> None:
        """Reject (TCP reset) this director's own connections to the reals' port, its health checks: every real
        looks down from here. Traffic it forwards is untouched: direct routing keeps the VIP as destination."""
        sh("iptables", "-I" if on else "-D", "OUTPUT", "-p", "tcp", "-d", ",".join(REALS), "--dport",
           str(PORT), "-j", "REJECT", "--reject-with", "tcp-reset", ns=self.name)

    def drain(self, on: bool) -> str:
        """`ipvsd drain --director` (or undrain) through its control socket; run in this process, since a Python
        start costs seconds under the emulated CPU. Returns what the command printed."""
        argv = ["drain" if on else "undrain", "--director", "--state-dir", str(self.ipvsd.state_dir)]
        if on:
            argv += ["--reason", "lab: operator drain"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = ipvsd_main(argv)
        assert rc == 0, f"ipvsd {' '.join(argv)} exited {rc}: {out.getvalue()}{err.getvalue()}"
        return out.getvalue() + err.getvalue()

    def stop(self) -> None:
        if self.ipvsd.proc is not None and self.ipvsd.proc.poll() is None:
            self.ipvsd.stop()
        self.bird.stop()


@dataclass
class Flow:
    """One long-lived connection: a keep-alive HTTP connection, probed by a request and its answer."""

    sock: socket.socket
    port: int
    real: str  # the page of the first answer: the real server's name
    answers: list[float] = field(default_factory=list)  # when each answer came
    sent_at: float | None = None  # the request waiting for its answer
    next_at: float = 0.0
    buf: bytes = b""
    broken_at: float | None = None
    error: str = ""

    @property
    def broken(self) -> bool:
        return self.broken_at is not None

    def answered_since(self, t: float) -> int:
        return sum(1 for at in self.answers if at > t)

    def longest_gap(self, since: float) -> float:
        """The longest wait between two answers, of those ending after `since`."""
        return max((b - a for a, b in itertools.pairwise(self.answers) if b > since), default=0.0)


class Flows:
    """N long-lived connections from the client to the VIP, each probed every `period` s by one thread.

    One thread and a selector for all of them (50 threads would cost the emulated CPU more than the probes). A flow
    is broken at a reset, an end of stream, a wrong answer, or no answer within `patience` s (a TCP
    retransmission waits out a director's BGP hold time, a few seconds: `patience` is well above that)."""

    REQUEST = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"

    def __init__(self, n: int, *, period: float = 0.5, patience: float = 20.0) -> None:
        self.period, self.patience = period, patience
        self.flows: list[Flow] = run_in(CLIENT_NS, lambda: [self._open() for _ in range(n)], timeout=300)
        # Each flow's probe at its own phase of the period, in an order unrelated to the order they opened in. A
        # director's rr gave the flows their reals in the order they opened; were they probed in that order, a
        # crash would move them to another director's rr in that order too, and whether the two agree would
        # come in long runs, not flow by flow. A fixed seed: the same schedule every run.
        start = time.monotonic()
        for rank, f in enumerate(random.Random(n).sample(self.flows, n)):
            f.next_at = start + period * rank / n
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flows", daemon=True)
        self._thread.start()

    @staticmethod
    def _open() -> Flow:
        port = fresh_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((CLIENT, port))
        s.settimeout(10)
        s.connect((VIP, PORT))
        real = keepalive_request(s)
        s.setblocking(False)
        return Flow(s, port, real, answers=[time.monotonic()])

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        for f in self.flows:
            sel.register(f.sock, selectors.EVENT_READ, f)
        while not self._stop.is_set():
            now = time.monotonic()
            for f in self.flows:
                if f.broken:
                    continue
                if f.sent_at is None and now >= f.next_at:
                    try:
                        f.sock.send(self.REQUEST)
                        f.sent_at = now
                    except OSError as e:
                        self._break(sel, f, now, repr(e))
                elif f.sent_at is not None and now - f.sent_at > self.patience:
                    self._break(sel, f, now, f"no answer within {self.patience}s")
            idle = [f.next_at for f in self.flows if not f.broken and f.sent_at is None]
            for key, _ in sel.select(timeout=min([0.1, *(t - now for t in idle)]) if idle else 0.1):
                self._read(sel, key.data)

    def _read(self, sel: selectors.BaseSelector, f: Flow) -> None:
        now = time.monotonic()
        try:
            data = f.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._break(sel, f, now, repr(e))
            return
        if not data:
            self._break(sel, f, now, "closed by the peer")
            return
        f.buf += data
        head, sep, rest = f.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                       if h.lower().startswith(b"content-length:")), 0)
        if len(rest) < length:
            return
        body, f.buf = rest[:length].decode(errors="replace").strip(), rest[length:]
        if body != f.real:  # TCP cannot change its peer: this would be a bug of the test
            self._break(sel, f, now, f"answered by {body}, not {f.real}")
            return
        f.answers.append(now)
        f.sent_at, f.next_at = None, now + self.period

    def _break(self, sel: selectors.BaseSelector, f: Flow, now: float, why: str) -> None:
        f.broken_at, f.error = now, why
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(f.sock)

    def broken(self, among: Iterable[Flow] | None = None) -> list[Flow]:
        return [f for f in (self.flows if among is None else among) if f.broken]

    def settled(self, since: float, among: Iterable[Flow] | None = None, *, answers: int = 2) -> bool:
        """Every flow (of `among`) is broken or has `answers` answers after `since`."""
        return all(f.broken or f.answered_since(since) >= answers for f in (self.flows if among is None else among))

    def by_director(self, directors: list[Director]) -> dict[str, list[Flow]]:
        """The flows of each director, from the connection entries (each flow must be on exactly one)."""
        where = {d.name: set(d.ports()) for d in directors}
        out: dict[str, list[Flow]] = {d.name: [] for d in directors}
        for f in self.flows:
            on = [name for name, ports in where.items() if f.port in ports]
            assert len(on) == 1, f"flow {f.port} has entries on {on or 'no director'}"
            out[on[0]].append(f)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for f in self.flows:
            f.sock.close()


@dataclass
class NewConnections:
    """A thread in the client's namespace opening a fresh connection every `period` s until stopped: GET / on a
    fresh port, the answer read to its end. `failed` holds each failure (when, why)."""

    period: float = 0.1
    timeout: float = 5.0
    ok: int = 0
    failed: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> NewConnections:
        self._thread = threading.Thread(target=self._loop, name="new-connections", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        join_netns(CLIENT_NS)
        while not self._stop.is_set():
            try:
                get(self.timeout)
                self.ok += 1
            except OSError as e:
                self.failed.append((time.monotonic(), repr(e)))
            self._stop.wait(self.period)

    def stop(self) -> NewConnections:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        return self


def get(timeout: float = 5.0) -> tuple[int, str]:
    """One GET of the VIP on a fresh connection from a fresh port (call it in the client's namespace); the port and
    the page."""
    port = fresh_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((CLIENT, port))
        s.settimeout(timeout)
        s.connect((VIP, PORT))
        s.sendall(f"GET / HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"unexpected answer {head[:40]!r}")
    return port, body.decode(errors="replace").strip()


def timed(conds: dict[str, Callable[[], bool]], *, since: float, timeout: float, what: str,
          interval: float = 0.05) -> dict[str, float]:
    """Poll every condition until each has held once; return, for each, the seconds from `since` to the first poll
    that saw it hold. Fails naming `what` and those still pending after `timeout`."""
    got: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        for name, cond in conds.items():
            if name not in got and cond():
                got[name] = time.monotonic() - since
        if len(got) == len(conds):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                                 f"{sorted(set(conds) - set(got))} still pending (done: {got})")
        time.sleep(interval)


@dataclass
class ScaleOut:
    """The running topology."""

    root: Path
    directors: list[Director] = field(default_factory=list)
    reals: list[RealHost] = field(default_factory=list)
    router_bird: Bird | None = None
    started: float = 0.0  # when the ipvsd processes were started
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        return [SWITCH, ROUTER, CLIENT_NS, *(f"so-d{i + 1}" for i in range(len(DIRECTORS))),
                *(f"so-rs{i + 1}" for i in range(len(REALS)))]

    def up(self) -> ScaleOut:
        self.down()  # leftovers of an interrupted run
        sh("modprobe", "-a", "ip_vs", "ip_vs_mh", "ip_vs_rr", "veth", "bridge")
        self.directors = [Director(f"so-d{i + 1}", a, self.root / f"d{i + 1}") for i, a in enumerate(DIRECTORS)]
        self.reals = [RealHost(f"so-rs{i + 1}", a, self.root / f"rs{i + 1}", port=PORT) for i, a in enumerate(REALS)]
        net = Wiring(SWITCH, [ns for ns in self.namespaces if ns != SWITCH], ("br-ext", "br-lan"))
        net.attach(CLIENT_NS, "eth0", "br-ext", "p-client", f"{CLIENT}/{PREFIX}")
        net.attach(ROUTER, "eth1", "br-ext", "p-router-ext", f"{ROUTER_EXT}/{PREFIX}")
        net.attach(ROUTER, "eth0", "br-lan", "p-router", f"{ROUTER_LAN}/{PREFIX}")
        for host in (*self.directors, *self.reals):
            net.attach(host.name, "eth0", "br-lan", f"p-{host.name}", f"{host.addr}/{PREFIX}")
            # the VIP on lo (direct routing); every reply and every packet to the clients goes via the router
            net.per_ns[host.name] += [f"addr add {VIP}/32 dev lo", f"route add default via {ROUTER_LAN}"]
        net.per_ns[CLIENT_NS].append(f"route add default via {ROUTER_EXT}")
        net.apply()
        for ns, sample in ((ROUTER, "sysctl-router.conf"), *((d.name, "sysctl-director.conf") for d in self.directors),
                           *((r.name, "sysctl-real.conf") for r in self.reals)):
            sh("sysctl", "-q", "-p", str(SAMPLES / sample), ns=ns)
        for r in self.reals:
            (r.dir / "www").mkdir(parents=True, exist_ok=True)
            (r.dir / "tmp").mkdir(exist_ok=True)
            (r.dir / "nginx.conf").write_text(NGINX_CONF.format(d=r.dir, port=r.port))
            r.set_page(f"{r.name.removeprefix('so-')}\n")
            r.start()
        # BIRD first: its sessions are up long before ipvsd (a Python start under the emulated CPU) announces
        self.router_bird = Bird(ROUTER, SAMPLES / "bird-router.conf", self.root / "router")
        self.router_bird.start()
        for d in self.directors:
            d.bird.start()
        for d in self.directors:
            d.set_config((SAMPLES / "ipvsd.toml").read_text())
        self.started = time.monotonic()
        for d in self.directors:
            d.ipvsd.start()
        self._wait_announced()
        return self

    def _wait_announced(self) -> None:
        """Wait for each director's table and route, then for the router's three next hops; keep the figures."""
        want = {f"{a}:{PORT}": 1 for a in REALS}
        conds: dict[str, Callable[[], bool]] = {}
        for d in self.directors:
            conds[f"{d.name} table"] = lambda d=d: d.weights() == want
            conds[f"{d.name} route"] = d.announces
        conds["router 3 next hops"] = lambda: len(self.next_hops()) == len(self.directors)
        # ipvsd's Python start takes a minute or two under the lab's emulated CPU, three at once longer
        self.figures = timed(conds, since=self.started, timeout=420, what="the directors to announce the VIP",
                             interval=0.1)

    def down(self) -> None:
        for d in self.directors:
            d.stop()
        if self.router_bird is not None:
            self.router_bird.stop()
        for r in self.reals:
            r.stop(signal.SIGKILL)
        existing = set(sh("ip", "netns", "list").stdout.split())
        for ns in self.namespaces:
            if ns in existing:
                sh("ip", "netns", "del", ns, check=False)

    def next_hops(self) -> list[str]:
        """The router's next hops for the VIP, in its main table."""
        return next_hops(sh("ip", "-n", ROUTER, "-j", "route", "show", f"{VIP}/32").stdout)

    def director(self, name: str) -> Director:
        return next(d for d in self.directors if d.name == name)

    def real(self, name: str) -> RealHost:
        return next(r for r in self.reals if r.name == name)

    def cable(self, d: Director, up: bool) -> None:
        """Plug or pull `d`'s cable: its port on the LAN bridge (its own interface loses carrier)."""
        sh("ip", "-n", SWITCH, "link", "set", d.port, "up" if up else "down")

    def restored(self) -> None:
        """Wait until the topology serves as at the start: three next hops, every table full with weight 1."""
        want = {f"{a}:{PORT}": 1 for a in REALS}
        for d in self.directors:
            wait_until(lambda d=d: d.weights() == want and d.announces(), timeout=60,
                       what=f"{d.name} to serve and announce again")
        wait_until(lambda: self.next_hops() == sorted(DIRECTORS), timeout=30, what="the router's three next hops")

    def new_connections(self, n: int) -> list[tuple[int, str]]:
        """`n` GETs on fresh connections, one after the other; their ports and pages (a failure raises)."""
        return run_in(CLIENT_NS, lambda: [get() for _ in range(n)], timeout=600)

    def diagnostics(self) -> str:
        """What the daemons logged, for a failing assertion."""
        parts = [f"--- router bird:\n{self.router_bird.log()[-2000:] if self.router_bird else ''}"]
        for d in self.directors:
            parts.append(f"--- {d.name} bird:\n{d.bird.log()[-1500:]}\n--- {d.name} ipvsd:\n{d.ipvsd.log()[-3000:]}")
        return "\n".join(parts)

