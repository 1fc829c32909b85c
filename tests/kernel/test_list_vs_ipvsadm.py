"""`ipvsd list` against the real `ipvsadm` on a real IPVS table: byte-identical in every listing mode.

Random tables are programmed with `ipvsadm -R` (one call) and listed by both tools; the same tables programmed
through ipvsd's netlink adapter must show in `ipvsadm -Ln` exactly as asked; connections made from the lab's
client through the VIP must list identically with `-c`; and the parser must fail where ipvsadm fails, with the
same message and exit status.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ipvsd import render
from ipvsd.commands import list as listcmd
from ipvsd.errors import KernelError
from ipvsd.kernel.netlink import NetlinkKernel
from ipvsd.model import (
    AF_INET,
    AF_INET6,
    Dest,
    DestAttrs,
    DestKey,
    Fwd,
    Proto,
    Service,
    ServiceAttrs,
    ServiceKey,
    SvcFlag,
    TunFlags,
    TunType,
    full_netmask,
)
from tests.kernel.lab import Lab, wait_until
from tests.netns import run_in, sh

pytestmark = pytest.mark.kernel

SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"]
MODES = [["-n"], ["-n", "--stats"], ["-n", "--rate"], ["-n", "--thresholds"], ["-n", "--persistent-conn"],
         ["-n", "--tun-info"], ["-n", "--nosort"], ["-n", "--stats", "--exact"], ["-n", "--sort", "--rate", "-X"],
         ["-n", "--thresholds", "--nosort"]]
PROC_CONN = "/proc/thread-self/net/ip_vs_conn"  # the calling thread's namespace (run_in setns's one thread)


# --- running both tools -----------------------------------------------------------------------------------


def ipvsadm_run(ns: str, *args: str) -> tuple[str, str, int]:
    p = sh("ipvsadm", *args, ns=ns, check=False)
    return p.stdout, p.stderr, p.returncode


def ipvsd_run(ns: str, argv: list[str]) -> tuple[str, str, int]:
    """`ipvsd list ARGV` in-process, against namespace `ns` (its conn file read from inside it)."""
    try:
        req = listcmd.parse(argv)
    except listcmd.UsageError as e:
        return "", e.message, e.status
    if req.has("connection"):
        return run_in(ns, lambda: listcmd.execute(req, conn_file=PROC_CONN))
    return listcmd.execute(req, lambda: NetlinkKernel(netns=ns))


def assert_same(ns: str, argv: list[str]) -> None:
    expected = ipvsadm_run(ns, "-L", *argv)
    assert ipvsd_run(ns, argv) == expected, f"ipvsd list {' '.join(argv)}"


# --- random tables ----------------------------------------------------------------------------------------

# Address pools chosen so that sorting crosses the 2^31 wrap of ipvsadm's comparators.
V4 = st.sampled_from(["10.0.0.", "10.200.1.", "100.64.0.", "172.16.5.", "192.168.0.", "203.0.113.", "1.2.3."]).flatmap(
    lambda p: st.integers(1, 254).map(lambda n: p + str(n)))
V6 = st.sampled_from(["2001:db8::", "2001:db8:1::", "fd00::", "fe80::1:", "::ffff:10.0.0.", "ff00::"]).flatmap(
    lambda p: st.integers(1, 254).map(lambda n: p + str(n)))
V6_UNICAST = V6.filter(lambda a: not a.startswith(("ff00", "fe80")))
V6_DEST = V6_UNICAST.filter(lambda a: not a.startswith("::ffff:"))  # the kernel refuses mapped dests: EINVAL
MARKS = st.sampled_from([1, 7, 100, 2**31 - 1, 2**31, 2**31 + 1, 3000000000, 2**32 - 1])
PORTS = st.sampled_from([80, 443, 53, 8080, 5060, 1, 65535])


@st.composite
def services(draw: st.DrawFn) -> Service:
    kind = draw(st.sampled_from(["tcp", "udp", "sctp", "tcp6", "udp6", "fwm", "fwm6"]))
    af = AF_INET6 if kind.endswith("6") else AF_INET
    if kind.startswith("fwm"):
        key = ServiceKey.mark(draw(MARKS), af)
    else:
        proto = {"tcp": Proto.TCP, "udp": Proto.UDP, "sctp": Proto.SCTP}[kind.rstrip("6")]
        key = ServiceKey.inet(proto, draw(V6_UNICAST if af == AF_INET6 else V4), draw(PORTS))
    sched = draw(st.sampled_from(SCHEDULERS))
    flags = 0
    if draw(st.booleans()):
        bits = draw(st.sets(st.sampled_from([SvcFlag.SCHED1, SvcFlag.SCHED2, SvcFlag.SCHED3]), min_size=1))
        flags |= sum(bits)  # SCHED3 with sh/mh is the " ()" quirk
    timeout, netmask, pe = 0, full_netmask(af), ""
    if draw(st.booleans()):
        flags |= SvcFlag.PERSISTENT
        timeout = draw(st.sampled_from([1, 300, 360, 2678400]))
        if draw(st.booleans()):
            netmask = draw(st.sampled_from([0xFFFFFF00, 0xFFFF0000, 0x80000000])) if af == AF_INET else \
                draw(st.sampled_from([1, 48, 64, 127]))
        if key.protocol == Proto.UDP and draw(st.integers(0, 3)) == 0:
            pe = "sip"
    if (key.protocol == Proto.UDP or key.is_fwmark) and draw(st.booleans()):
        flags |= SvcFlag.ONEPACKET
    dests: list[Dest] = []
    seen: set[str] = set()
    for _ in range(draw(st.integers(0, 6))):
        fwd = draw(st.sampled_from([Fwd.MASQ, Fwd.ROUTE, Fwd.TUNNEL]))
        daf = af if fwd != Fwd.TUNNEL or draw(st.integers(0, 3)) else (AF_INET if af == AF_INET6 else AF_INET6)
        addr = draw(V6_DEST if daf == AF_INET6 else V4)
        if addr in seen:
            continue
        seen.add(addr)
        port = draw(PORTS) if fwd == Fwd.MASQ or key.is_fwmark else key.port  # ipvsadm forces it for -g/-i
        u = draw(st.sampled_from([0, 10, 1000, 2**31 - 1]))
        tun = draw(st.sampled_from([(TunType.IPIP, 0, TunFlags.NOCSUM), (TunType.GUE, 6080, TunFlags.CSUM),
                                    (TunType.GUE, 5555, TunFlags.REMCSUM), (TunType.GRE, 0, TunFlags.NOCSUM),
                                    (TunType.GRE, 0, TunFlags.CSUM)]))
        if fwd != Fwd.TUNNEL:
            tun = (TunType.IPIP, 0, TunFlags.NOCSUM)
        dests.append(Dest(DestKey.of(addr, port), DestAttrs(
            fwd=fwd, weight=draw(st.sampled_from([0, 1, 5, 100, 65535, 2**31 - 1])), u_thresh=u,
            l_thresh=draw(st.integers(0, u)) if u else 0, tun_type=tun[0], tun_port=tun[1], tun_flags=tun[2])))
    return Service(key, ServiceAttrs(sched, flags, timeout, netmask, pe), tuple(dests))


def tables() -> st.SearchStrategy[list[Service]]:
    return st.lists(services(), min_size=0, max_size=7, unique_by=lambda s: s.key)


def restore_text(table: list[Service]) -> str:
    """The table as `ipvsadm -R` input (ServiceAttrs/DestAttrs print themselves in ipvsadm notation)."""
    lines = []
    for s in table:
        attrs = s.attrs.notation(s.key.af)
        if s.attrs.scheduler in ("sh", "mh"):  # -b spelled with the scheduler's own flag names
            attrs = attrs.replace("flag-1", f"{s.attrs.scheduler}-fallback").replace("flag-2",
                                                                                      f"{s.attrs.scheduler}-port")
        lines.append(f"-A {s.key} {attrs}")
        lines.extend(f"-a {s.key} -r {d.key} {d.attrs.notation()}" for d in s.dests)
    return "\n".join(lines) + "\n"


def blocks(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """A listing as (service line, its dest lines) blocks, order-free (the kernel's dump order is a hash's)."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines()[3:]:
        if line.startswith("  -> "):
            out[-1][1].append(line)
        else:
            out.append((line, []))
    return sorted((s, tuple(sorted(d))) for s, d in out)


def _settings() -> Callable[[Callable[..., None]], Callable[..., None]]:
    # No shrinking: each example costs seconds of ipvsadm calls under the VM's emulated CPU; a failing table is
    # printed as it was drawn (they are small).
    return settings(max_examples=int(os.environ.get("IPVSD_LIST_EXAMPLES", "18")), deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# --- the property tests -----------------------------------------------------------------------------------


@_settings()
@given(table=tables(), pick=st.integers(0, 1000))
def test_every_listing_mode_is_byte_identical(netns: str, table: list[Service], pick: int) -> None:
    sh("ipvsadm", "-C", ns=netns)
    p = sh("ipvsadm", "-R", ns=netns, input=restore_text(table), check=False)
    # ipvsadm -R exits 0 even when a line fails: its stderr tells
    assert p.returncode == 0 and not p.stderr, f"ipvsadm -R refused:\n{restore_text(table)}\n{p.stderr}"
    for mode in MODES:
        assert_same(netns, mode)
    if table:
        key = table[pick % len(table)].key
        assert_same(netns, ["-n", *str(key).split()])
        assert_same(netns, ["-n", "--stats", *str(key).split()])
    assert_same(netns, ["-n", "-t", "192.0.2.1:9"])  # No such service


@_settings()
@given(table=tables())
def test_tables_programmed_by_the_adapter_show_as_asked(netns: str, table: list[Service]) -> None:
    sh("ipvsadm", "-C", ns=netns)

    async def program() -> None:
        k = NetlinkKernel(netns=netns)
        try:
            for s in table:
                await k.add_service(s.key, s.attrs)
                for d in s.dests:
                    await k.add_dest(s.key, d.key, d.attrs)
        finally:
            await k.close()

    try:
        asyncio.run(program())
    except KernelError as e:
        # what ipvsadm makes of the same table tells whether the adapter or the table is at fault
        p = sh("ipvsadm", "-R", ns=netns, input="-C\n" + restore_text(table), check=False)
        pytest.fail(f"adapter: {e}\nipvsadm -R of the same table: exit {p.returncode} {p.stderr.strip()!r}\n"
                    f"{restore_text(table)}", pytrace=False)
    shown = sh("ipvsadm", "-Ln", ns=netns).stdout
    info = asyncio.run(_info(netns))
    assert blocks(shown) == blocks(render.render_all(info, table, render.ListFormat(numeric=True)))
    assert ipvsd_run(netns, ["-n"])[0] == shown
    shown_tun = sh("ipvsadm", "-Ln", "--tun-info", ns=netns).stdout
    assert blocks(shown_tun) == blocks(render.render_all(info, table, render.ListFormat(numeric=True,
                                                                                        tun_info=True)))


async def _info(ns: str) -> render.Info:
    k = NetlinkKernel(netns=ns)
    try:
        return await k.info()
    finally:
        await k.close()


def test_names_timeouts_daemons_and_the_cli(netns: str) -> None:
    """Name resolution (loopback names from /etc/hosts and services), --timeout, --daemon, the real CLI."""
    sh("ipvsadm", "-R", ns=netns, input="-A -t 127.0.0.1:80 -s rr\n-a -t 127.0.0.1:80 -r 127.0.0.1:22 -m\n"
                                        "-A -u 127.0.0.1:53\n-A -f 5 -s rr\n-a -f 5 -r 127.0.0.1:80 -g\n"
                                        "-A -t [::1]:443 -s wlc\n-a -t [::1]:443 -r [::1]:443 -m\n"
                                        "--set 901 121 301\n")
    for argv in ([], ["--stats"], ["--persistent-conn"], ["-t", "localhost:http"], ["-f", "5"],
                 ["--timeout"], ["--daemon"]):
        assert_same(netns, argv)
    sh("ipvsadm", "--start-daemon", "master", "--mcast-interface", "lo", "--syncid", "7", ns=netns, check=False)
    assert_same(netns, ["--daemon"])
    cli = [sys.executable, "-m", "ipvsd", "list"]
    for argv in (["-n"], ["-n", "--stats", "-f", "5"], ["-n", "-c", "--stats"], ["--bogus"],
                 ["-n", "-t", "10.9.9.9:1"]):
        p = subprocess.run(["ip", "netns", "exec", netns, *cli, *argv], capture_output=True, text=True, timeout=120,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert (p.stdout, p.stderr, p.returncode) == ipvsadm_run(netns, "-L", *argv), argv


PARSE_CASES = [
    ["--stats=1"], ["-t"], ["--bogus"], ["-nQ"], ["-nL"], ["-A"], ["-h"], ["--help"], ["-v"],
    ["--start-daemon", "master"], ["-6"], ["-f", "7", "-6", "-n"], ["-p"], ["-p", "abc"], ["-p", "5"],
    ["-w", "70000"], ["-w", "2147483648"], ["--syncid", "300"], ["--syncid", "3", "-n"], ["-b", "sh-port"],
    ["-b", "flag-1"], ["-s", "sh", "-b", "sh-port"], ["-M", "255.255.255.0"], ["-M", "no.such.host.invalid"],
    ["-f", "7", "-6", "-M", "200"], ["-n", "extra"], ["-", "-n"], ["--", "-n"], ["-t=10.0.0.1:80", "-n"],
    ["-t", "10.0.0.1:http", "-n"], ["-t", "[2001:db8::1]:80"], ["-t", "[1.2.3.4]:80"], ["-t", "80"],
    ["--mcast-group", "10.0.0.1"], ["--mcast-group", "ff02::1"], ["--tun-port", "0"], ["--tun-type", "foo"],
    ["-c", "--stats"], ["--daemon", "--timeout"], ["-o", "-c", "--timeout"], ["-x", "5"], ["-r", "10.0.0.1"],
    ["-r", "nohost.invalid:80"], ["-f", "0"], ["-f", "-5"], ["-f", " 7"], ["-f", "4294967296"],
    ["-n", "-n", "--bogus"], ["-nc", "-n"], ["--timeout", "--persistent-conn"], ["-cn", "--nosort", "-X"],
    ["--tun-info", "--tun-nocsum"], ["-g", "-m"], ["--pe", "sip"], ["--stop-daemon"], ["-Ln"], ["-l"],
    ["--sort", "--sort", "-n"], ["-n", "--json"],
]


@pytest.mark.parametrize("argv", PARSE_CASES, ids=lambda a: " ".join(a) or "none")
def test_parser_fails_where_ipvsadm_fails(netns: str, argv: list[str]) -> None:
    expected = ipvsadm_run(netns, "-L", *argv)
    got = ipvsd_run(netns, argv)
    if argv == ["-n", "--json"]:  # ours: ipvsadm rejects it, ipvsd prints JSON
        assert expected[2] == 255 and got[2] == 0
        return
    assert got == expected


# --- connections through the VIP --------------------------------------------------------------------------


def _eventually_same(ns: str, argv: list[str], attempts: int = 6) -> None:
    """Compare outputs that tick (expiry seconds, rates): equal to ipvsadm's read just before or after."""
    last: tuple[object, ...] = ()
    for _ in range(attempts):
        before = ipvsd_run(ns, argv)
        theirs = ipvsadm_run(ns, "-L", *argv)
        after = ipvsd_run(ns, argv)
        if theirs in (before, after):
            return
        last = (theirs, before, after)
    raise AssertionError(f"ipvsd list {' '.join(argv)} never matched ipvsadm: {last!r}")


def test_connections_made_through_the_vip_list_identically(lab: Lab) -> None:
    lab.ipvsadm("-A", "-t", f"{lab.vip}:80", "-s", "rr")
    lab.ipvsadm("-A", "-t", f"{lab.vip}:81", "-s", "wlc", "-p", "120")
    for r in lab.reals:
        lab.ipvsadm("-a", "-t", f"{lab.vip}:80", "-r", f"{r.addr}:80", "-m")
        lab.ipvsadm("-a", "-t", f"{lab.vip}:81", "-r", f"{r.addr}:80", "-m", "-w", "3")
    for _ in range(6):
        status, _body = lab.get()
        assert status == 200
    run_in(lab.client, lambda: _connect_81(lab.vip))
    wait_until(lambda: ipvsd_run(lab.lb, ["-c", "-n"])[0].count("\n") >= 2 + 6, timeout=30,
               what="connection entries")
    for argv in (["-c", "-n"], ["-c"], ["-c", "-n", "--persistent-conn"]):
        _eventually_same(lab.lb, argv)
    for argv in (["-n", "--stats"], ["-n", "--stats", "-X"], ["-n", "--persistent-conn"], ["-n"]):
        _eventually_same(lab.lb, argv)
    _eventually_same(lab.lb, ["-n", "--rate"], attempts=10)


def _connect_81(vip: str) -> None:
    import socket

    with socket.create_connection((vip, 81), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(65536):
            pass
