"""Golden tests of `ipvsd list`: every output mode and quirk of ipvsadm 1.31, the conn listing, and the parser."""

from __future__ import annotations

import argparse
import ipaddress
import json
from functools import cmp_to_key

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsd import render
from ipvsd.commands import list as listcmd
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import (
    AF_INET,
    AF_INET6,
    Dest,
    DestAttrs,
    DestKey,
    Fwd,
    Info,
    Proto,
    Service,
    ServiceAttrs,
    ServiceKey,
    Stats,
    SvcFlag,
    SyncDaemon,
    Timeouts,
    TunFlags,
    TunType,
    canonical_addr,
)
from ipvsd.render import ListFormat, Names

INFO = Info(version=0x010201, conn_tab_size=4096)
N = ListFormat(numeric=True)
P = SvcFlag


def svc(key: ServiceKey, attrs: ServiceAttrs | None = None, dests: tuple[Dest, ...] | list[Dest] = (),
        stats: Stats | None = None) -> Service:
    return Service(key, attrs or ServiceAttrs(), tuple(dests), stats or Stats())


def dest(addr: str, port: int, fwd: int = Fwd.MASQ, weight: int = 1, **kw: object) -> Dest:
    attrs = {k: kw.pop(k) for k in list(kw) if k in ("u_thresh", "l_thresh", "tun_type", "tun_port", "tun_flags")}
    return Dest(DestKey.of(addr, port), DestAttrs(fwd=fwd, weight=weight, **attrs), **kw)  # type: ignore[arg-type]


def tcp(addr: str, port: int) -> ServiceKey:
    return ServiceKey.inet(Proto.TCP, addr, port)


def bars(text: str) -> str:
    """End every line with `|` so trailing spaces are visible in the goldens."""
    return text.replace("\n", "|\n")


# The table of the reference's verified example (§1.13), in a scrambled dump order.
EXAMPLE = [
    svc(tcp("10.0.0.1", 80), ServiceAttrs("wlc"),
        [dest("10.0.1.2", 80, active_conns=3, inact_conns=4), dest("10.0.1.1", 8080, Fwd.ROUTE, 5)]),
    svc(ServiceKey.mark(7), ServiceAttrs("lc"), [dest("10.0.2.1", 0, Fwd.LOCAL, 0)],
        Stats(conns=123456789, inpkts=99999999, outpkts=100000000, inbytes=1000000000, outbytes=999999999999)),
    svc(tcp("192.168.0.1", 443), ServiceAttrs("rr", P.PERSISTENT, 300, 0xFFFFFF00),
        [dest("192.168.1.5", 443, Fwd.TUNNEL, 100)]),
    svc(ServiceKey.mark(9, AF_INET6), ServiceAttrs("rr", netmask=128)),
    svc(tcp("10.0.0.1", 5060), ServiceAttrs("mh", P.SCHED1 | P.SCHED2 | P.PERSISTENT, 3600, pe_name="sip")),
    svc(ServiceKey.inet(Proto.UDP, "10.0.0.1", 53), ServiceAttrs("sh", P.SCHED1 | P.ONEPACKET)),
    svc(tcp("2001:db8::1", 80), ServiceAttrs("rr", P.PERSISTENT, 60, 64),
        [dest("2001:db8::10", 80), dest("10.9.9.9", 80, Fwd.TUNNEL)]),
    svc(ServiceKey.mark(3000000000), ServiceAttrs("wrr")),
]

EXAMPLE_LN = """\
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
FWM  -1294967296 wrr|
TCP  192.168.0.1:443 rr persistent 300 mask 255.255.255.0|
  -> 192.168.1.5:443              Tunnel  100    0          0         |
TCP  10.0.0.1:80 wlc|
  -> 10.0.1.1:8080                Route   5      0          0         |
  -> 10.0.1.2:80                  Masq    1      3          4         |
TCP  10.0.0.1:5060 mh (mh-fallback,mh-port) persistent 3600 pe sip|
UDP  10.0.0.1:53 sh (sh-fallback) ops|
TCP  [2001:db8::1]:80 rr persistent 60 mask 64|
  -> 10.9.9.9:80                  Tunnel  1      0          0         |
  -> [2001:db8::10]:80            Masq    1      0          0         |
FWM  7 lc|
  -> 10.0.2.1:0                   Local   0      0          0         |
FWM  9 IPv6 rr|
"""


def test_plain_listing_matches_the_verified_example() -> None:
    assert bars(render.render_all(INFO, EXAMPLE, N)) == EXAMPLE_LN


def test_version_and_size_come_from_info() -> None:
    out = render.render_all(Info(version=0x020304, conn_tab_size=1 << 20), [], N)
    assert out.splitlines()[0] == "IP Virtual Server version 2.3.4 (size=1048576)"


def test_empty_table_is_version_and_titles() -> None:
    assert render.render_all(INFO, [], N) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def test_stats_excerpt_with_32_bit_dest_counters() -> None:
    s = svc(ServiceKey.mark(7), ServiceAttrs("lc"),
            [dest("10.0.2.1", 0, Fwd.LOCAL, 0, stats=Stats(conns=5000000000, inpkts=2, outpkts=3,
                                                            inbytes=100000000000000, outbytes=5))],
            Stats(conns=123456789, inpkts=99999999, outpkts=100000000, inbytes=1000000000, outbytes=999999999999))
    assert bars(render.render_service(s, ListFormat(numeric=True, stats=True))) == """\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
FWM  7                             123456K 99999999  100000K    1000M     999G|
  -> 10.0.2.1:0                    705032K        2        3     100T        5|
"""
    exact = render.render_service(s, ListFormat(numeric=True, stats=True, exact=True)).splitlines()
    assert exact[2] == f"{'FWM  7':<33}" + " 123456789" + " 99999999" + " 100000000 1000000000 999999999999"
    assert exact[3] == f"  -> {'10.0.2.1:0':<28}" + " 705032704        2        3 100000000000000        5"


def test_service_stats_are_64_bit_dest_bytes_too() -> None:
    big = 2**40 + 7
    s = svc(tcp("10.0.0.1", 80), dests=[dest("10.0.0.2", 80, stats=Stats(conns=big, inbytes=big, outbytes=big))],
            stats=Stats(conns=big))
    lines = render.render_service(s, ListFormat(numeric=True, stats=True, exact=True)).splitlines()
    assert lines[2].split()[2] == str(big)
    assert lines[3].split()[2:] == ["7", "0", "0", str(big), str(big)]


def test_rate_mode_dest_pps_never_scaled_and_wrapped() -> None:
    s = svc(tcp("10.0.0.1", 80), dests=[dest("10.0.0.2", 80, stats=Stats(
        cps=123456789, inpps=2**32 + 5, outpps=6, inbps=123456789, outbps=2**32 + 1))],
        stats=Stats(cps=123456789, inpps=2**32 + 5, inbps=5))
    assert bars(render.render_service(s, ListFormat(numeric=True, rate=True))) == """\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS|
  -> RemoteAddress:Port|
TCP  10.0.0.1:80                   123456K    4294M        0        5        0|
  -> 10.0.0.2:80                  123456789        5        6  123456K        1|
"""


def test_stats_wins_over_rate_and_rate_over_thresholds() -> None:
    s = svc(tcp("10.0.0.1", 80))
    assert "Conns" in render.render_service(s, ListFormat(numeric=True, stats=True, rate=True))
    assert "CPS" in render.render_service(s, ListFormat(numeric=True, rate=True, thresholds=True))
    assert "Uthreshold" in render.render_service(s, ListFormat(numeric=True, thresholds=True, persistent_conn=True))
    assert "PersistConn" in render.render_service(s, ListFormat(numeric=True, persistent_conn=True, tun_info=True))


def test_thresholds_and_persistent_conn_have_trailing_spaces() -> None:
    s = svc(tcp("10.0.0.1", 80), dests=[dest("10.0.0.2", 80, 0, 7, u_thresh=100, l_thresh=10, active_conns=1,
                                             inact_conns=2, persist_conns=3)])
    assert bars(render.render_service(s, ListFormat(numeric=True, thresholds=True))) == """\
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn |
  -> RemoteAddress:Port|
TCP  10.0.0.1:80 wlc|
  -> 10.0.0.2:80                  100        10         1          2         |
"""
    assert bars(render.render_service(s, ListFormat(numeric=True, persistent_conn=True))) == """\
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn |
  -> RemoteAddress:Port|
TCP  10.0.0.1:80 wlc|
  -> 10.0.0.2:80                  7         3           1          2         |
"""


def test_tun_info_column() -> None:
    s = svc(tcp("10.0.0.1", 80), dests=[
        dest("10.0.0.2", 80, Fwd.TUNNEL), dest("10.0.0.3", 80, Fwd.TUNNEL, tun_type=TunType.GUE, tun_port=6080,
                                              tun_flags=TunFlags.REMCSUM),
        dest("10.0.0.4", 80, Fwd.TUNNEL, tun_type=TunType.GRE, tun_flags=TunFlags.CSUM), dest("10.0.0.5", 80)])
    assert bars(render.render_service(s, ListFormat(numeric=True, tun_info=True))) == """\
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn|
TCP  10.0.0.1:80 wlc|
  -> 10.0.0.2:80                  Tunnel  ipip          1      0          0         |
  -> 10.0.0.3:80                  Tunnel  gue:6080:r+c  1      0          0         |
  -> 10.0.0.4:80                  Tunnel  gre:+c        1      0          0         |
  -> 10.0.0.5:80                  Masq    n/a           1      0          0         |
"""


@pytest.mark.parametrize(("fwd", "text"), [(0, "Masq   "), (1, "Local  "), (2, "Tunnel "), (3, "Route  "),
                                           (4, "(null) "), (7, "(null) ")])
def test_forwarding_names_including_null(fwd: int, text: str) -> None:
    line = render.dest_line(dest("10.0.0.2", 80, fwd), 6, N, None)
    assert line == f"  -> {'10.0.0.2:80':<28} {text} 1      0          0         \n"


@pytest.mark.parametrize(("sched", "flags", "text"), [
    ("sh", P.SCHED1, " (sh-fallback)"), ("sh", P.SCHED2, " (sh-port)"), ("sh", P.SCHED1 | P.SCHED2 | P.SCHED3,
                                                                         " (sh-fallback,sh-port)"),
    ("sh", P.SCHED3, " ()"), ("mh", P.SCHED3, " ()"), ("mh", P.SCHED1 | P.SCHED2, " (mh-fallback,mh-port)"),
    ("rr", P.SCHED3, " (flag-3)"), ("wlc", P.SCHED1 | P.SCHED3, " (flag-1,flag-3)"), ("rr", 0, ""),
])
def test_scheduler_flag_texts(sched: str, flags: int, text: str) -> None:
    s = svc(ServiceKey.inet(Proto.SCTP, "10.0.0.1", 81), ServiceAttrs(sched, flags))
    assert render.service_line(s, N, None) == f"SCTP 10.0.0.1:81 {sched}{text}\n"


def test_pe_only_inside_persistence_and_masks() -> None:
    no_persist = svc(tcp("10.0.0.1", 80), ServiceAttrs("rr", 0, 0, 0xFFFFFF00, "sip"))
    assert render.service_line(no_persist, N, None) == "TCP  10.0.0.1:80 rr\n"
    full = svc(tcp("10.0.0.1", 80), ServiceAttrs("rr", P.PERSISTENT, 360))
    assert render.service_line(full, N, None) == "TCP  10.0.0.1:80 rr persistent 360\n"
    v6 = svc(tcp("2001:db8::1", 80), ServiceAttrs("rr", P.PERSISTENT | P.ONEPACKET, 5, 128, "sip"))
    assert render.service_line(v6, N, None) == "TCP  [2001:db8::1]:80 rr persistent 5 pe sip ops\n"


def test_fwmark_printed_signed() -> None:
    assert render.svc_name(svc(ServiceKey.mark(2**31)), None) == "FWM  -2147483648"
    assert render.svc_name(svc(ServiceKey.mark(2**32 - 1, AF_INET6)), None) == "FWM  -1 IPv6"
    assert render.svc_name(svc(ServiceKey.mark(2**31 - 1)), None) == "FWM  2147483647"


def test_ipv6_text_is_glibc_inet_ntop_including_mapped() -> None:
    s = svc(tcp("::ffff:1.2.3.4", 80), dests=[dest("::ffff:10.0.0.1", 80), dest("2001:db8:0:0:1:0:0:1", 8)])
    out = render.render_service(s, N).splitlines()
    assert out[2] == "TCP  [::ffff:1.2.3.4]:80 wlc"
    assert out[3].startswith("  -> [::ffff:10.0.0.1]:80       ")
    assert out[4].startswith("  -> [2001:db8::1:0:0:1]:8      ")


def test_names_truncated_to_33_and_28_for_ipv4_only() -> None:
    long = "a-rather-long-host-name.example.org"
    names = Names(lambda af, a: long, lambda port, proto: "http" if (port, proto) == (80, 6) else None)
    s = svc(tcp("10.0.0.1", 80), dests=[dest("10.0.0.2", 80), dest("2001:db8::2", 80, Fwd.TUNNEL)])
    out = render.render_service(s, ListFormat(), names).splitlines()
    assert out[2] == ("TCP  " + long + ":http")[:33] + " wlc"
    assert out[3][:34] == "  -> " + (long + ":http")[:28] + " "
    assert out[4].startswith(f"  -> [{long}]:http ")
    v6 = render.svc_name(svc(tcp("2001:db8::1", 80)), names)
    assert v6 == f"TCP  [{long}]:http"  # never truncated


def test_addrport_capped_at_59_chars() -> None:
    names = Names(lambda af, a: "h" * 80, lambda port, proto: None)
    assert render.addrport_name(AF_INET6, "::1", 80, 6, names) == ("[" + "h" * 80)[:59]


def test_fwmark_dest_ports_stay_numeric_with_names() -> None:
    names = Names(lambda af, a: "localhost", lambda port, proto: {(80, 6): "http"}.get((port, proto)))
    fw = svc(ServiceKey.mark(7), dests=[dest("127.0.0.1", 80)])
    assert render.render_service(fw, ListFormat(), names).splitlines()[3].startswith("  -> localhost:80 ")
    t = svc(tcp("127.0.0.1", 80), dests=[dest("127.0.0.1", 80)])
    assert render.render_service(t, ListFormat(), names).splitlines()[3].startswith("  -> localhost:http ")


def test_numeric_never_calls_resolvers() -> None:
    def boom(*_: object) -> str:
        raise AssertionError("resolver called")

    assert "10.0.0.1:80" in render.render_all(INFO, [svc(tcp("10.0.0.1", 80))], N, Names(boom, boom))


def test_weight_wider_than_its_column() -> None:
    line = render.dest_line(dest("10.0.0.2", 80, Fwd.ROUTE, 2147483647), 6, N, None)
    assert line == "  -> 10.0.0.2:80                  Route   2147483647 0          0         \n"


# --- print_largenum ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (0, "        0"), (99999999, " 99999999"), (100000000, "  100000K"), (999999999, "  999999K"),
    (1000000000, "    1000M"), (99999999999, "   99999M"), (100000000000, "     100G"),
    (999999999999, "     999G"), (99999999999999, "   99999G"), (10**14, "     100T"),
    (10**19, "10000000T"), (2**64 - 1, "18446744T"),
])
def test_largenum_boundaries(value: int, text: str) -> None:
    assert render.print_largenum(value, False) == text


@pytest.mark.parametrize(("value", "text"), [
    (0, "        0"), (12345678, " 12345678"), (123456789, " 123456789"), (2**64 - 1, " 18446744073709551615"),
])
def test_largenum_exact(value: int, text: str) -> None:
    assert render.print_largenum(value, True) == text


# --- sorting ----------------------------------------------------------------------------------------------


def test_wrapping_comparator_lists_192_before_10() -> None:
    services = [svc(tcp("10.0.0.1", 80)), svc(tcp("192.168.0.1", 80))]
    assert [s.key.addr for s in render.sort_services(services)] == ["192.168.0.1", "10.0.0.1"]


def test_fwmark_above_2_31_sorts_first_others_last() -> None:
    services = [svc(ServiceKey.mark(5)), svc(tcp("10.0.0.1", 80)), svc(ServiceKey.mark(2**31 + 1)),
                svc(ServiceKey.inet(Proto.UDP, "10.0.0.1", 80)), svc(tcp("::1", 80))]
    names = [render.svc_name(s, None) for s in render.sort_services(services)]
    assert names == ["FWM  -2147483647", "TCP  10.0.0.1:80", "UDP  10.0.0.1:80", "TCP  [::1]:80", "FWM  5"]
    # exactly 2^31: (int)(0 - 2^31) is INT_MIN, negative, so that mark sorts after the address services
    plain = render.service_sort_key(svc(tcp("10.0.0.1", 80)))
    mark = render.service_sort_key(svc(ServiceKey.mark(2**31)))
    assert render.cmp_services(plain, mark) < 0 and render.cmp_services(mark, plain) < 0


def test_non_transitive_cycle_is_resolved_as_glibc_msort_does() -> None:
    # 10 < 100 < 192 < 10 under the wrapping comparator; glibc's merge sort of [192, 100, 10] splits
    # [192] | [100, 10] -> [10, 100], then merges 192 (< 10) first: 192, 10, 100.
    order = ["192.168.0.1", "100.0.0.1", "10.0.0.1"]
    out = render.sort_services([svc(tcp(a, 80)) for a in order])
    assert [s.key.addr for s in out] == ["192.168.0.1", "10.0.0.1", "100.0.0.1"]
    keys = [render.service_sort_key(svc(tcp(a, 80))) for a in order]
    assert sorted(keys, key=cmp_to_key(render.cmp_services)) != [keys[0], keys[2], keys[1]]  # why msort exists


def test_dest_comparator_uses_first_dests_family() -> None:
    v6 = render.dest_sort_key(dest("2001:db8::1", 80))
    v4 = render.dest_sort_key(dest("10.0.0.1", 80))
    assert render.cmp_dests(v6, v4) > 0  # 0x20010db8 vs 0x0a000001
    assert render.cmp_dests(v4, v6) < 0


def test_nosort_keeps_dump_order() -> None:
    s = [svc(tcp("10.0.0.2", 80), dests=[dest("10.0.1.9", 80), dest("10.0.1.1", 80)]), svc(tcp("10.0.0.1", 80))]
    out = render.render_all(INFO, s, ListFormat(numeric=True, nosort=True)).splitlines()
    assert [line.split()[1] for line in out[3:]] == ["10.0.0.2:80", "10.0.1.9:80", "10.0.1.1:80", "10.0.0.1:80"]


_v4 = st.integers(0, 2**32 - 1).map(lambda n: f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}")
_near = st.integers(0x0A000000, 0x0A00FFFF).map(lambda n: f"10.0.{(n >> 8) & 255}.{n & 255}")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_v4 | _near, st.integers(0, 65535)), max_size=24),
       st.lists(st.tuples(st.integers(0, 2**32 - 1), st.booleans()), max_size=4))
def test_fast_sort_path_always_equals_msort(inet: list[tuple[str, int]], marks: list[tuple[int, bool]]) -> None:
    services = [svc(tcp(a, p)) for a, p in inet] + [svc(ServiceKey.mark(m or 1, AF_INET6 if six else 2))
                                                    for m, six in marks]
    keys = [render.service_sort_key(s) for s in services]
    expected = [services[i] for _, i in render.msort(list(zip(keys, range(len(keys)), strict=True)),
                                                      lambda x, y: render.cmp_services(x[0], y[0]))]
    assert render.sort_services(services) == expected
    dests = [dest(a, p) for a, p in inet]
    dkeys = [render.dest_sort_key(d) for d in dests]
    dexpected = [dests[i] for _, i in render.msort(list(zip(dkeys, range(len(dkeys)), strict=True)),
                                                    lambda x, y: render.cmp_dests(x[0], y[0]))]
    assert render.sort_dests(dests) == dexpected


@given(st.lists(st.integers(), max_size=40))
def test_msort_is_a_stable_sort_for_a_consistent_comparator(xs: list[int]) -> None:
    pairs = list(enumerate(xs))
    assert render.msort(pairs, lambda a, b: (a[1] > b[1]) - (a[1] < b[1])) == sorted(pairs, key=lambda p: p[1])


# --- timeouts and daemons ---------------------------------------------------------------------------------


def test_timeouts_and_daemons() -> None:
    assert render.render_timeouts(Timeouts(900, 120, 300)) == "Timeout (tcp tcpfin udp): 900 120 300\n"
    assert render.render_daemons([]) == ""
    ds = [SyncDaemon(2, "eth1", 3, 0, "ff02::1", 0, 0),
          SyncDaemon(1, "eth0", 0, 1472, "224.0.0.81", 8848, 1)]
    assert render.render_daemons(ds) == (
        "master sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        "backup sync daemon (mcast=eth1, syncid=3, group=ff02::1)\n")


# --- connections ------------------------------------------------------------------------------------------

PROC = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000064 C350 0A000001 0050 0A000102 0050 ESTABLISHED     899
IP  0A000064 0000 00000007 0000 0A000201 0000 NONE           3599
TCP 2001:0db8:0000:0000:0000:0000:0000:0064 C350 2001:0db8:0000:0000:0000:0000:0000:0001 0050 \
2001:0db8:0000:0000:0000:0000:0000:0010 0050 SYN_RECV         59
UDP 0A000064 0035 0A000001 0035 2001:0db8:0000:0000:0000:0000:0000:0010 0035 UDP            259200 sip 0123abcd
"""


def test_conn_listing_verified_sample_and_mixed_family() -> None:
    out, status = render.render_conns(PROC, N)
    assert status == 0
    assert bars(out) == """\
IPVS connection entries|
pro expire state       source             virtual            destination|
TCP 14:59  ESTABLISHED 10.0.0.100:50000   10.0.0.1:80        10.0.1.2:80|
IP  59:59  NONE        10.0.0.100:0       0.0.0.7:0          10.0.2.1:0|
TCP 00:59  SYN_RECV    [2001:db8::64]:50000 [2001:db8::1]:80   [2001:db8::10]:80|
UDP 4320:00 UDP         10.0.0.100:53      10.0.0.1:53        [2001:db8::10]:53|
"""


def test_conn_listing_persistent_conn_columns() -> None:
    out, _ = render.render_conns(PROC, ListFormat(numeric=True, persistent_conn=True))
    lines = out.splitlines()
    assert lines[1] == ("pro expire state       source             virtual            destination        "
                        "pe name          pe_data")
    assert lines[2] == "TCP 14:59  ESTABLISHED 10.0.0.100:50000   10.0.0.1:80        10.0.1.2:80"
    assert bars(lines[5] + "\n") == ("UDP 4320:00 UDP         10.0.0.100:53      10.0.0.1:53        "
                                     "[2001:db8::10]:53 sip                0123abcd|\n")


def test_conn_listing_resolves_names_by_protocol() -> None:
    names = Names(lambda af, a: "h" if a == "10.0.0.1" else None,
                  lambda port, proto: {(80, 6): "http", (53, 17): "domain"}.get((port, proto)))
    out, _ = render.render_conns(PROC, ListFormat(), names)
    lines = out.splitlines()
    assert lines[2].split()[3:] == ["10.0.0.100:50000", "h:http", "10.0.1.2:http"]
    assert lines[3].split()[3:] == ["10.0.0.100:0", "0.0.0.7:0", "10.0.2.1:0"]  # IP: no port names
    assert lines[5].split()[4] == "h:domain"


def test_conn_listing_splits_lines_like_fgets_and_stops_on_empty_chunk() -> None:
    long = "TCP 0A000064 C350 0A000001 0050 0A000102 0050 ESTABLISHED     899 sip " + "x" * 300 + "\n"
    out, status = render.render_conns("header\n" + long, ListFormat(numeric=True, persistent_conn=True))
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 4  # the first 255 chars, then the rest read as a line of its own
    head = "TCP 0A000064 C350 0A000001 0050 0A000102 0050 ESTABLISHED     899 sip "
    exact = head + "x" * (255 - len(head)) + "\n"  # 255 chars, then a chunk that is only "\n"
    out, status = render.render_conns("header\n" + exact + "TCP 0A000064 C350 0A000001 0050 0A000102 0050 X 1\n",
                                      N)
    assert status == 1 and len(out.splitlines()) == 3  # the lone "\n" chunk makes sscanf return EOF


def test_conns_json() -> None:
    doc = render.conns_json(PROC)
    assert doc["connections"][0] == {
        "protocol": "TCP", "family": "inet", "client": {"address": "10.0.0.100", "port": 50000},
        "virtual": {"address": "10.0.0.1", "port": 80},
        "destination": {"family": "inet", "address": "10.0.1.2", "port": 80},
        "state": "ESTABLISHED", "expires": 899, "pe_name": None, "pe_data": None}
    assert doc["connections"][3]["pe_data"] == "0123abcd"


# --- JSON -------------------------------------------------------------------------------------------------


def test_table_json_schema() -> None:
    doc = render.table_json(INFO, EXAMPLE)
    assert doc["schema"] == 1 and doc["version"] == "1.2.1" and doc["conn_tab_size"] == 4096
    first, second = doc["services"][0], doc["services"][1]
    assert first["fwmark"] == 3000000000 and first["protocol"] is None and first["address"] is None
    assert second == {
        "family": "inet", "protocol": "tcp", "address": "192.168.0.1", "port": 443, "fwmark": None,
        "scheduler": "rr", "sched_flags": [],
        "persistence": {"timeout": 300, "netmask": "255.255.255.0", "pe": None}, "one_packet": False,
        "stats": dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps", "outpps",
                                "inbps", "outbps"), 0),
        "dests": [{"family": "inet", "address": "192.168.1.5", "port": 443, "forward": "tunnel", "weight": 100,
                   "u_threshold": 0, "l_threshold": 0, "active_conns": 0, "inact_conns": 0, "persist_conns": 0,
                   "tunnel": {"type": "ipip", "port": None, "csum": "nocsum"},
                   "stats": dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps",
                                           "outpps", "inbps", "outbps"), 0)}]}
    assert json.loads(json.dumps(doc)) == doc


# --- the command: parser, errors, exit codes --------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message", "status"), [
    (["-c", "-t", "10.0.0.1:80"], "The option 'service-address' conflicts with the 'connection' option in the "
                                  "'list' command\n", 2),
    (["--daemon", "--timeout"], "The option 'daemon' conflicts with the 'timeout' option in the 'list' command\n", 2),
    (["--timeout", "-f", "1"], "The option 'timeout' conflicts with the 'service-address' option in the 'list' "
                               "command\n", 2),
    (["-c", "--stats"], "options conflicts in the list command\n", 2),
    (["--timeout", "--thresholds"], "options conflicts in the list command\n", 2),
    (["--daemon", "--persistent-conn"], "options conflicts in the list command\n", 2),
    (["-s", "rr"], "Illegal 'scheduler' option with the 'list' command\n", 2),
    (["-w", "3"], "Illegal 'weight' option with the 'list' command\n", 2),
    (["--tun-type", "gue"], "Illegal 'tun-type' option with the 'list' command\n", 2),
    (["-o", "-c", "--timeout"], "The option 'timeout' conflicts with the 'connection' option in the 'list' "
                                "command\n", 2),
    (["-c", "-o", "--timeout"], "The option 'timeout' conflicts with the 'connection' option in the 'list' "
                                "command\n", 2),
    (["-c", "-s", "rr", "--timeout"], "Illegal 'scheduler' option with the 'list' command\n", 2),
    (["-n", "-n"], "multiple 'numeric' options specified\n", 2),
    (["--stats", "--stats"], "multiple 'stats' options specified\n", 2),
    (["-t", "10.0.0.1:80", "-f", "3"], "multiple 'service-address' options specified\n", 2),
    (["-w", "x"], "illegal weight specified\n", 2),
    (["-t", "10.0.0.1:http-nope"], "illegal virtual server address[:port] specified\n", 2),
    (["-t", "80"], "illegal virtual server address[:port] specified\n", 2),
    (["-f", "0"], "invalid fwmark value `0' specified\n", 2),
    (["-f", "4294967296"], "invalid fwmark value `4294967296' specified\n", 2),
    (["-6"], "-6 used before -f\n\n", 2),
    (["-p", "abc"], "invalid timeout value `abc' specified\n", 2),
    (["-b", "sh-port"], "incompatible scheduler flag `sh-port'\n", 2),
    (["--mcast-group", "10.0.0.1"], "invalid IPv4 mcast-group `10.0.0.1'\n", 2),
    (["-n", "extra"], "unexpected argument extra\n", 2),
    (["-A"], "invalid option `-A'\n", 2),
    (["-nL"], "invalid option `-nL'\n", 2),
    (["--start-daemon", "master"], "invalid option `master'\n", 2),
    (["--bogus"], "--bogus: unknown option\n", 255),
    (["-nQ"], "-nQ: unknown option\n", 255),
    (["-t"], "-t: missing argument\n", 255),
    (["--stats=1"], "--stats=1: option does not take an argument\n", 255),
    (["-n", "-n", "--bogus"], "multiple 'numeric' options specified\n", 2),
])
def test_parse_errors(argv: list[str], message: str, status: int) -> None:
    with pytest.raises(listcmd.UsageError) as e:
        listcmd.parse(argv)
    assert (e.value.message, e.value.status) == (message, status)


def test_parse_service_selectors() -> None:
    r = listcmd.parse(["-n", "--sctp-service", "[2001:db8::1]:80"])
    assert r.service_key() == ServiceKey.inet(Proto.SCTP, "2001:db8::1", 80)
    assert listcmd.parse(["-u10.0.0.1:53"]).service_key() == ServiceKey.inet(Proto.UDP, "10.0.0.1", 53)
    assert listcmd.parse(["-t=10.1:80"]).service_key() == tcp("10.0.0.1", 80)
    assert listcmd.parse(["-f", "3000000000", "-6"]).service_key() == ServiceKey.mark(3000000000, AF_INET6)
    assert listcmd.parse(["--fwmark-service=7"]).service_key() == ServiceKey.mark(7)
    assert listcmd.parse(["-t", "[1.2.3.4]:80"]).service_key() == tcp("1.2.3.4", 0)  # ipvsadm drops the port


def test_parse_formats_and_noops() -> None:
    r = listcmd.parse(["-nX", "--stats", "--rate", "--sort", "--nosort", "--syncid", "3", "--tun-info", "--json"])
    assert r.fmt() == ListFormat(numeric=True, stats=True, rate=True, tun_info=True, nosort=True, exact=True)
    assert r.json


def _kernel_with_example() -> FakeKernel:
    import asyncio

    k = FakeKernel()

    async def fill() -> None:
        await k.add_service(tcp("10.0.0.1", 80), ServiceAttrs("wlc"))
        await k.add_dest(tcp("10.0.0.1", 80), DestKey.of("10.0.1.1", 8080), DestAttrs(fwd=Fwd.ROUTE, weight=5))

    asyncio.run(fill())
    return k


def test_execute_against_the_fake_kernel() -> None:
    k = _kernel_with_example()
    out, err, status = listcmd.execute(listcmd.parse(["-n"]), lambda: k)
    assert (err, status) == ("", 0)
    assert out.splitlines()[3:] == ["TCP  10.0.0.1:80 wlc",
                                    "  -> 10.0.1.1:8080                Route   5      0          0         "]
    out, err, status = listcmd.execute(listcmd.parse(["-n", "-t", "10.0.0.1:80"]), lambda: k)
    assert out.splitlines()[0] == "Prot LocalAddress:Port Scheduler Flags" and status == 0
    assert listcmd.execute(listcmd.parse(["-n", "-t", "10.0.0.1:81"]), lambda: k) == ("", "No such service\n", 1)
    out, _, _ = listcmd.execute(listcmd.parse(["--timeout"]), lambda: k)
    assert out == "Timeout (tcp tcpfin udp): 900 120 300\n"
    assert listcmd.execute(listcmd.parse(["--daemon"]), lambda: k) == ("", "", 0)
    doc = json.loads(listcmd.execute(listcmd.parse(["--json"]), lambda: k)[0])
    assert doc["services"][0]["dests"][0]["forward"] == "route"
    assert k.closed


def test_execute_reports_an_unreachable_ipvs_like_ipvsadm() -> None:
    def broken() -> FakeKernel:
        raise OSError(93, "Protocol not supported")

    _, err, status = listcmd.execute(listcmd.parse([]), broken)
    assert status == 2 and err.startswith("Can't initialize ipvs: Protocol not supported\nAre you sure")


def test_connections_from_a_file(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "ip_vs_conn"
    p.write_text(PROC)
    out, _, status = listcmd.execute(listcmd.parse(["-c", "-n"]), conn_file=str(p))
    assert status == 0 and out.splitlines()[2].startswith("TCP 14:59  ESTABLISHED")
    missing = str(p) + ".missing"
    assert listcmd.execute(listcmd.parse(["-c"]), conn_file=missing) == ("", f"cannot open file {missing}\n", 1)
    p.write_text("")
    assert listcmd.execute(listcmd.parse(["-c"]), conn_file=str(p))[1:] == (f"unexpected input from {p}\n", 1)


def test_run_writes_errors_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert listcmd.run(argparse.Namespace(argv=["-c", "--stats"])) == 2
    assert capsys.readouterr() == ("", "options conflicts in the list command\n")


def test_ipvsadm_notation_of_numbers_that_are_no_enum_member() -> None:
    """A foreign entry may carry a protocol or forward method ipvsd has no name for: written out, never raised."""
    assert str(ServiceKey.inet(Proto.UDP, "::1", 53)) == "-u [::1]:53"
    assert str(ServiceKey(af=AF_INET, protocol=99, addr="10.0.0.1", port=80)) == "-t 10.0.0.1:80"
    assert DestAttrs(fwd=Fwd.ROUTE, weight=2).notation() == "-g -w 2"
    assert [DestAttrs(fwd=f).notation() for f in (1, 4, 5, 7)] == [f"--fwd {f} -w 1" for f in (1, 4, 5, 7)]


@settings(max_examples=200)
@given(n=st.integers(0, 2**32 - 1), six=st.booleans(), port=st.integers(0, 65535))
def test_keys_of_canonical_addresses_are_the_keys_the_slow_path_makes(n: int, six: bool, port: int) -> None:
    """DestKey.of and ServiceKey.inet take canonical IPv4 text as it is; anything else is parsed: same keys."""
    addr = str(ipaddress.IPv6Address(n << 64 | n) if six else ipaddress.IPv4Address(n))
    af = AF_INET6 if six else AF_INET
    assert DestKey.of(addr, port) == DestKey(af=af, addr=canonical_addr(addr), port=port)
    assert ServiceKey.inet(Proto.TCP, addr, port) == ServiceKey(af=af, protocol=6, addr=addr, port=port)
    if not six:  # the same address written with its IPv6 brackets or leading zeros is not canonical text
        assert DestKey.of(f"[{addr}]", port).af == AF_INET
