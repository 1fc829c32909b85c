"""The keepalived reader's shortcuts give what its plain path gives: the same block tree, Config, warnings and
located errors.

The plain path (`parse(..., fast=False)`) classifies every line anew and reads every block on its own; the fast
path classifies each distinct line text once and reuses what blocks written alike share. Both run on the fixtures
and on random files of many alike blocks, some differing in one place, some wrong or warning at their own lines.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsd.config import _lexer, _ranges, _report, keepalived
from tests.unit.config.bigconfig import keepalived as big
from tests.unit.config.cases import FIXTURES, ROOT, both_paths


def dump(nodes: list[_lexer.Node] | None) -> Any:
    if nodes is None:
        return None
    return [(n.keyword, n.args, n.path, n.line, dump(n.children)) for n in nodes]


def tree(text: str, fast: bool) -> tuple[Any, ...]:
    errors = _report.Collector()
    nodes = _lexer.read_text(text, "ka.conf", errors, fast)
    return dump(nodes), [(e.path, e.line, e.key, e.message) for e in errors.errors], errors.total


def same(text: str) -> tuple[Any, ...]:
    assert tree(text, True) == tree(text, False), text
    return both_paths(keepalived.parse, text, "ka.conf")


@pytest.mark.parametrize("path", [*sorted(FIXTURES.glob("*.conf")), ROOT / "etc" / "keepalived.conf"],
                         ids=lambda p: p.name)
def test_fixtures_read_alike(path: Path) -> None:
    # read from the file: the fixtures' includes resolve beside it
    fast = both_paths(keepalived.read, str(path))
    assert fast[0] == "ok"


def test_a_generated_file_reads_alike() -> None:
    assert same(big(50))[0] == "ok"


VS_LINES = [
    "lvs_sched wrr", "lvs_sched rr", "lb_algo sh", "lvs_sched toolongschedulername", "lvs_sched nosuch", "lvs_sched",
    "lvs_method NAT", "lvs_method DR", "lb_kind TUN", "lvs_method TUN type gue port 6080 csum", "lvs_method XX",
    "lvs_method NAT x", "protocol TCP", "protocol UDP", "protocol ICMP", "delay_loop 5", "delay_loop x",
    "delay_loop 0", "connect_timeout 3", "retry 2", "nb_get_retry 4", "retry 1000", "delay_before_retry 2", "alpha",
    "alpha maybe", "warmup 3", "persistence_timeout", "persistence_timeout 600", "persistence_timeout 0",
    "persistence_granularity 255.255.255.0", "persistence_granularity bad", "persistence_engine sip", "quorum 2",
    "hysteresis 1", "quorum_up /bin/up", 'quorum_up "/bin/up now" x', "sorry_server 192.0.2.200 80",
    "sorry_server 192.0.2.200", "sorry_server 192.0.2.200 x", "sorry_server bad!host 80", "sorry_server 300.1.1.1 80",
    "sorry_server_inhibit",
    "sorry_server_lvs_method DR", "inhibit_on_failure", "inhibit_on_failure off", "ops", "sh-port", "mh-port",
    "mh-fallback", "flag-1 maybe", "ip_family inet", "ip_family inet6", "ip_family x", "virtualhost www.example.com",
    "hashed", "omega", "smtp_alert", "ha_suspend", "lvs_flush", "bogus 1", "weight 3", "lvs_sched {\n}",
]
RS_LINES = [
    "weight 2", "weight 0", "weight x", "weight -1", "weight 99999999999", "weight 1 2", "weight", "lvs_method DR",
    "lb_kind TUN", "lvs_method TUN type ipip", "inhibit_on_failure", "uthreshold 100", "lthreshold 10",
    "uthreshold -3", "weight \u0663", "weight 0007", "weight 2147483648", "weight 123456789012345678",
    "weight 1234567890123456789", "weight 0000000000000000001", "weight +3", "delay_loop 3", "retry 1",
    "connect_timeout 9", "virtualhost rs.example.com", "notify_up /bin/x", "notify_down /bin/y", "smtp_alert",
    "snmp_name x", "bogus", "weight 1 {\n}",
]
CHECKERS = [
    "HTTP_GET {\nurl {\npath /health\nstatus_code 200\n}\nconnect_timeout 3\n}",
    "HTTP_GET {\nurl {\npath /a\nstatus_code 200 301-302\n}\nurl {\npath /b\nvirtualhost b.example.com\n}\n}",
    "HTTP_GET {\n}",
    "HTTP_GET {\nurl {\npath /a\ndigest abc\ndigest def\n}\n}",
    "HTTP_GET {\nurl {\npath /a\nregex ok\nregex_no_match\nregex_options x\n}\nhttp_protocol 1.1\n}",
    "HTTP_GET {\nurl {\npath /a\nstatus_code\nbogus 1\n}\nvirtualhost v.example.com\nretry 2\n}",
    "HTTP_GET {\nurl {\npath /a\nstatus_code 999\n}\n}",
    "SSL_GET {\nurl {\npath /\ndigest abc\n}\nsni_name s.example.com\nenable_sni\n}",
    "SSL_GET {\nenable_sni\nvirtualhost v.example.com\ndelay_before_retry 4\n}",
    "TCP_CHECK {\nconnect_port 8080\nbindto 10.0.0.1\n}", "TCP_CHECK {\nconnect_port 99999\n}",
    "TCP_CHECK {\nconnect_ip 10.0.0.9\nbind_port 3\nfwmark 7\nwarmup 2\n}", "TCP_CHECK {\nconnect_ip bad!ip\n}",
    "TCP_CHECK {\nconnect_ip 300.1.1.1\n}",
    "TCP_CHECK {\ndelay_loop 2\nalpha\n}",
    "MISC_CHECK {\nmisc_path /bin/true\nmisc_timeout 5\n}",
    "MISC_CHECK {\nmisc_path \"/bin/check --x 'a b'\"\nmisc_dynamic\nuser nobody\n}",
    "MISC_CHECK {\nmisc_path \"/bin/check 'unterminated\"\n}", "MISC_CHECK {\n}", "MISC_CHECK {\nmisc_path\n}",
    "MISC_CHECK {\nmisc_path /bin/a b c\n}", "MISC_CHECK {\nmisc_path \"/bin/x \\\\ y\"\n}",
    "MISC_CHECK {\nmisc_path \"  \"\n}", "MISC_CHECK {\nmisc_path \"/bin/x\ty\"\nconnect_port 3\n}",
    "MISC_CHECK {\nmisc_path \"/bin/x\x0by \u00a0z\"\n}", "MISC_CHECK {\nmisc_path /bin/x#y\n}",
    "DNS_CHECK {\ntype A\nname example.com\n}", "DNS_CHECK {\ntype\n}",
    "SMTP_CHECK {\nhost {\nconnect_ip 10.0.0.1\nconnect_port 25\n}\nhelo_name x\n}",
    "SMTP_CHECK {\nhost {\nbogus 1\n}\n}", "SMTP_CHECK {\n}",
    "UDP_CHECK {\npayload x\nrequire_reply\nmin_reply_length 3\n}", "UDP_CHECK {\nmax_reply_length x\n}",
    "PING_CHECK {\n}", "FILE_CHECK {\n}", "HTTP_GET {\nbogus 1\nurl\n}", "TCP_CHECK", "HTTP_GET {\nurl {\n}\n}",
]
TARGETS = ["{a} 80", "{a} 8080", "{a} 53", "{a} x", "{a} 0", "{a}", "{a} 80 9", "fwmark 5", "group G", "group H",
           "2001:db8::{i} 80", "fwmark x"]
REALS = ["{r} 8080", "{r}", "{r} x", "{r} 70000", "2001:db8:1::{i} 80", "", "{r} 80 1", "bad!host 80",
         "300.{i}.1.1"]
INDENTS = ["", "  ", "\t", "    "]
ODD = ["# comment", "! comment", "", "weight 1 # note", 'virtualhost "a b"', "x { y }", "}", "{", '"unterminated',
       "lvs_sched rr } {", "   \t ", "real_server 172.16.9.9 80 { weight 3 }", "HTTP_GET { url { path /x } }",
       "real_server 172.16.9.9 80 { HTTP_GET { url { path /x } } }", "HTTP_GET {\nurl { path /y\n}\n}"]

# lines and blocks that are valid, several of them warning: files of these mostly load, so their blocks are reused
GOOD_VS = ["lvs_sched wrr", "lvs_sched rr", "lvs_sched nosuch", "lvs_method NAT", "lvs_method DR", "protocol UDP",
           "delay_loop 5", "retry 2", "alpha", "persistence_timeout", "persistence_granularity 255.255.255.0",
           "quorum 2", "sorry_server 192.0.2.200 80", "sorry_server_inhibit", "inhibit_on_failure", "sh-port",
           "virtualhost www.example.com", "hashed", "omega", "ha_suspend", "lb_kind TUN"]
GOOD_RS = ["weight 2", "weight 0", "inhibit_on_failure", "uthreshold 100", "lthreshold 10", "retry 1",
           "virtualhost rs.example.com", "notify_up /bin/x", "smtp_alert", "lvs_method DR"]
GOOD_CHECKERS = [c for c in CHECKERS if "bogus" not in c and "99999" not in c and "digest def" not in c
                 and "unterminated" not in c and "misc_path\n" not in c and "type\n" not in c and "FILE" not in c
                 and "999" not in c and "bad!" not in c and c not in ("MISC_CHECK {\n}", "TCP_CHECK")]


def body(vs: list[str], rs: list[str], checkers: list[str]) -> st.SearchStrategy[Any]:
    return st.tuples(st.lists(st.sampled_from(vs), max_size=5), st.lists(st.tuples(
        st.integers(0, len(REALS) - 1) if vs is VS_LINES else st.sampled_from([0, 0, 0, 1]),
        st.lists(st.sampled_from(rs), max_size=3), st.lists(st.sampled_from(checkers), max_size=2)), max_size=3))


bodies = body(GOOD_VS, GOOD_RS, GOOD_CHECKERS) | body(VS_LINES, RS_LINES, CHECKERS)


@st.composite
def files(draw: st.DrawFn) -> str:
    """virtual_servers made of a few bodies, each body under several of them with other addresses: what the fast
    path reuses. Some are changed in one place (a line added, a line odd), some bodies wrong or warning."""
    blocks = draw(st.lists(bodies, min_size=1, max_size=3))
    indent = draw(st.sampled_from(INDENTS))
    out = ["virtual_server_group G {\n  10.9.0.1-3 80\n  fwmark 4\n}\n"] if draw(st.booleans()) else []
    for i, (target, k, extra) in enumerate(draw(st.lists(st.tuples(
            st.sampled_from([0] * 12 + list(range(len(TARGETS)))), st.integers(0, 2),
            st.tuples(st.integers(0, 3), st.integers(0, 30), st.sampled_from(VS_LINES + RS_LINES + ODD))),
            min_size=3, max_size=16))):
        settings_, rs = blocks[k % len(blocks)]
        text = [f"{x}\n" for x in settings_]
        for r, rlines, checkers in rs:
            text.append(f"real_server {REALS[r].format(r=f'172.16.{i}.{len(text)}', i=i)} {{\n")
            text += [f"{indent}{x}\n" for x in rlines]
            text += [f"{indent}{line}\n" for c in checkers for line in c.split("\n")]
            text.append("}\n")
        if extra[0] == 0:  # this one differs in one place
            text.insert(extra[1] % (len(text) + 1), f"{extra[2]}\n")
        vs = TARGETS[target].format(a=f"10.0.{i}.1", i=i)
        out.append(f"virtual_server {vs} {{\n" + "".join(f"{indent}{x}" for x in text) + "}\n")
    return "".join(out)


@settings(max_examples=int(os.environ.get("IPVSD_FUZZ_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=files())
def test_random_files_read_alike(text: str) -> None:
    same(text)


def alike(n: int, body: str, target: str = "10.0.{i}.1 80") -> str:
    return "".join(f"virtual_server {target.format(i=i)} {{\n{body.format(i=i)}}}\n" for i in range(n))


RS = ("  real_server 172.16.{i}.1 8080 {{\n    weight 2\n    HTTP_GET {{\n      url {{\n        path /h\n      }}\n"
      "    }}\n  }}\n")


@pytest.mark.parametrize("text", [
    alike(3, "  lvs_sched rr\n  lvs_method NAT\n" + RS),
    alike(3, RS),  # an info line at each virtual_server: no lvs_sched, no lvs_method
    alike(3, "  lvs_sched rr\n  lvs_method NAT\n  omega\n" + RS),  # a warning at each, at its own line
    alike(3, "  lvs_sched rr\n  lvs_method NAT\n  lvs_sched x y\n" + RS),  # an error at each
    alike(3, "  lvs_sched toolongschedulername\n" + RS),  # refused by validation, at each one's line
    alike(3, "  lvs_sched nosuch\n" + RS),  # a lint warning at each
    alike(3, "  lvs_sched rr\n" + RS, "10.0.0.1 80"),  # the same service thrice
    alike(3, "  lvs_sched rr\n" + RS.replace("172.16.{i}.1", "300.1.1.{i}")),  # refused at each real's line
    alike(3, "  lvs_sched rr\n" + RS.replace("weight 2", "weight {i}")),  # differs in one value
    alike(3, "  lvs_sched rr\n" + RS.replace("    weight 2\n", "    weight 2\n" * 0)),
    alike(3, "  lvs_sched rr\n" + RS.replace("path /h", "path /h\n        digest a\n        digest b")),
    alike(3, "  lvs_sched rr\n" + RS + RS.replace("172.16", "172.17")),
    alike(2, "  lvs_sched rr\n" + RS) + alike(2, "  lvs_sched rr\n" + RS, "10.1.{i}.1 80"),
    alike(3, "  lvs_sched rr\n" + RS, "10.0.{i}.1 8{i}"),
    alike(3, "  lvs_sched rr\n" + RS, "fwmark 1{i}"),
    alike(3, "  lvs_sched rr\n" + RS.replace("    HTTP_GET {{", "    connect_timeout 2\n    HTTP_GET {{")),
    alike(3, "  lvs_sched rr\n  delay_loop {i}\n" + RS),
    # virtual_servers written each differently, their checkers alike: read once per virtualhost and timing
    alike(3, "  lvs_sched rr\n  virtualhost v{i}.example.com\n" + RS),
    alike(3, "  lvs_sched rr\n  virtualhost v{i}.example.com\n" + RS.replace("HTTP_GET", "SSL_GET").replace(
        "url {{", "enable_sni\n      url {{")),
    alike(3, "  lvs_sched rr\n  quorum {i}\n" + RS.replace("      url {{", "      connect_timeout 3\n      url {{")
          .replace("path /h", "path /h\n        status_code 999")),  # refused by validation at each status_code
    alike(3, "  lvs_sched rr\n  quorum {i}\n  omega\n" + RS.replace("path /h", "path /h\n        regex_stack 3")),
    alike(3, "  lvs_sched rr\n" + RS.replace("HTTP_GET", "MISC_CHECK").replace("url {{\n        path /h\n      }}",
                                                                              "misc_path \"/bin/c {i}\"")),
    alike(3, "  lvs_sched rr # c\n" + RS),  # lines the line cache does not take plainly
    alike(3, "  lvs_sched rr\n  real_server 172.16.0.1 80 {{ weight {i} }}\n"),  # blocks on one line
    alike(3, "  lvs_sched rr\n" + RS.replace("path /h", "path /h }} url {{ path /{i}")),
    alike(3, "  lvs_sched rr\n" + RS.replace("path /h", "path /h\n        status_code 200 \"{i}\"")),
    alike(2, "  lvs_sched rr\n" + RS) + "include /nonexistent.conf\n" + alike(2, "  lvs_sched rr\n" + RS),
    alike(2, "  lvs_sched rr\n" + RS) + "}\n" + alike(2, "  lvs_sched rr\n" + RS, "10.1.{i}.1 80"),
    alike(3, "  lvs_sched rr\n" + RS)[:-2],  # the last block never closed
])
def test_odd_files_read_alike(text: str) -> None:
    same(text)


GROUP = "virtual_server_group G {{\n  10.9.0.1-3 80\n  10.9.1.0/30 443\n  10.9.2.1 80\n  fwmark 4\n}}\n"


@pytest.mark.parametrize("text", [
    GROUP + "virtual_server group G {\n  lvs_sched rr\n" + RS.format(i=1) + RS.format(i=2) + "}\n",
    # the reals' warnings told for each address, as the plain path tells them
    GROUP + "virtual_server group G {\n" + RS.format(i=1).replace("weight 2", "notify_up /x\n    weight 2") + "}\n",
    GROUP + "virtual_server group G {\n" + RS.format(i=1).replace("8080", "") + "}\n",  # each port its reals
    GROUP + "virtual_server group G {\n" + RS.format(i=1).replace("weight 2", "weight x") + "}\n",
    GROUP + "virtual_server group G {\n" + RS.format(i=1).replace("weight 2", "weight 0000000000000000001") + "}\n",
    GROUP + "virtual_server group G {\n" + RS.format(i=1).replace("172.16.1.1", "300.1.1.1") + "}\n",
    GROUP.replace("10.9.1.0/30", "10.9.1.0/22") + "virtual_server group G {\n" + RS.format(i=1) + "}\n",
])
def test_groups_read_alike(text: str) -> None:
    same(text.replace("{{", "{").replace("}}", "}"))


@given(st.text(st.sampled_from("ab/- \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u3000'\"\\#\x00é"), max_size=12))
def test_commands_split_as_shlex_splits(command: str) -> None:
    try:
        expected: Any = shlex.split(command)
    except ValueError as e:
        expected = str(e)
    try:
        got: Any = keepalived._split(command)
    except ValueError as e:
        got = str(e)
    assert got == expected


@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(20, 32))
def test_ipv4_group_ranges_expand_as_ipaddress_does(start: int, end: int, prefix: int) -> None:
    first = ipaddress.IPv4Address(start)
    end = max(end, start & 255)
    expected = [str(first + i) for i in range(end - (start & 255) + 1)]
    assert list(_ranges.expand_group_address(f"{first}-{end}")) == expected
    net = ipaddress.IPv4Network((start, prefix), strict=False)
    assert list(_ranges.expand_group_address(f"{first}/{prefix}")) == [str(a) for a in net]


BODY = "lvs_sched rr\n" + RS.format(i=1)


@pytest.mark.parametrize(("main", "included"), [
    ("".join(f"virtual_server 10.0.{i}.1 80 {{\ninclude inc.conf\n}}\n" for i in range(3)), BODY),
    # a block opened in one file and closed in the other: never taken as written plainly
    ("".join(f"virtual_server 10.0.{i}.1 80 {{\n{BODY}include inc.conf\n" for i in range(3)), "}\n"),
    ("".join(f"include inc.conf\n{BODY}}}\n" for i in range(3)), "virtual_server 10.0.0.1 80 {\n"),
    ("".join(f"include inc.conf\n{BODY}}}\n" for i in range(3)), "virtual_server 10.0.0.1 80 {\nlvs_method DR\n"),
    ("".join(f"virtual_server 10.0.{i}.1 80 {{\n{BODY}include inc.conf\n}}\n" for i in range(3)),
     "real_server 10.1.1.1 80 {\n}\n"),
    ("include inc.conf\ninclude inc.conf\ninclude inc.conf\n", "virtual_server 10.0.0.1 80 {\n" + BODY + "}\n"),
])
def test_included_files_read_alike(tmp_path: Path, main: str, included: str) -> None:
    (tmp_path / "inc.conf").write_text(included)
    path = tmp_path / "keepalived.conf"
    path.write_text(main)
    both_paths(keepalived.read, str(path))


def test_lines_past_the_cache_read_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    # a file of more distinct lines than the line cache keeps: the lines past it are classified each time
    monkeypatch.setattr(_lexer, "_CACHE_LINES", 5)
    text = big(4) + alike(3, "  lvs_sched rr # c\n  omega\n" + RS) + '"x\n}\n'
    assert tree(text, True) == tree(text, False)
    same(text)
