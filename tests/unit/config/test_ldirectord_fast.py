"""The ldirectord reader's shortcuts give what its plain path gives: the same Config, warnings and located errors.

The plain path (`parse(..., fast=False)`) reads every line with scan_line and works every virtual out on its own;
the fast path reads the common lines without a regular expression and reuses what equal virtuals share. Both
run on the fixtures and on random files made of every directive, written well, badly and oddly.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsd.config import ldirectord
from tests.unit.config.bigconfig import ldirectord as big
from tests.unit.config.cases import FIXTURES, ROOT, both_paths


def same(text: str) -> tuple[Any, ...]:
    return both_paths(ldirectord.parse, text, "ld.cf")


@pytest.mark.parametrize("path", [*sorted(FIXTURES.glob("*.cf")), ROOT / "etc" / "ldirectord.cf"],
                         ids=lambda p: p.name)
def test_fixtures_read_alike(path: Any) -> None:
    assert same(path.read_text())[0] == "ok"


def test_a_generated_file_reads_alike() -> None:
    assert same(big(50))[0] == "ok"


VALUES: dict[str, list[str]] = {
    "real": ["10.0.1.1:80 masq", "10.0.1.2 gate", "10.0.1.3:8080 masq 3", "10.0.1.1->10.0.1.3:80 masq 2",
             '10.0.1.4:80 masq 1 "a.html", "ok"', '10.0.1.5:80 masq 1 "a.html" "ok" l:3 u:9',
             "web.example.com:http ipip",
             "10.0.1.6:0 gate 0", "10.0.1.7:80 masquerade", "10.0.1.9->10.0.1.2:80 masq", "[2001:db8::1]:80 masq",
             '10.0.1.8:80 masq 1 "x', "bad!", "10.0.1.1:99999 masq", '10.0.1.1:80 masq 1 "a b", "c d"',
             "10.0.1.1:80 masq 1 extra", "10.0.1.1:nosuchsvc masq", "10.0.1.1:80\tmasq\t2"],
    "real6": ["[2001:db8::1]:80 masq", "[2001:db8::2] gate 2", "[2001:db8::1]->[2001:db8::3]:80 masq", "10.0.0.1 masq"],
    "checktype": ["connect", "negotiate", "ping", "external", "external-perl", "on", "off", "3", "sometimes"],
    "service": ["http", "https", "dns", "ftp", "smtp", "submission", "pop", "pops", "imap", "imaps", "nntp", "none",
                "simpletcp", "mysql", "ldap", "gopher"],
    "request": ['"/health"', '"index.html"', "/x", '"https://a.example:8443/p?q=1"', '"http://[::1"', '"PING\\n"',
                '"x', '""', '"a\tb"'],
    "receive": ['"ok"', "up", '"(open"', '""'],
    "scheduler": ["wrr", "rr", "wlc", "sh", "mh", "RR", "abcdefghijklmnop"],
    "schedflags": ["sh-port", "mh-fallback", "bogus"],
    "persistent": ["600", "0", "x"],
    "netmask": ["255.255.255.0", "64", "bad"],
    "protocol": ["tcp", "udp", "fwm", "sctp"],
    "ops": ["yes", "no", "maybe"],
    "checkport": ["8080", "0", "70000", "x"],
    "checkcommand": ['"/bin/check --fast"', "\"'unterminated\"", '""'],
    "checktimeout": ["3", "0", "x"], "negotiatetimeout": ["5", "0"], "checkinterval": ["5", "0"],
    "checkcount": ["3", "0"], "failurecount": ["2", "99999"], "quiescent": ["yes", "no", "maybe"],
    "fallback": ["127.0.0.1:80 masq", "127.0.0.1 gate", "127.0.0.1:80 bad", "", "[::1]:80 masq"],
    "fallback6": ["[::1]:80 masq", "[2001:db8::ff] gate"], "fallbackcommand": ['"/bin/fb"', '"x'],
    "httpmethod": ["GET", "head", "POST"], "virtualhost": ['"www.example.com"', '"x'],
    "login": ['"probe"', "u"], "passwd": ['"secret"'], "servicename": ['"web"', "svc"], "comment": ['"c"'],
    "monitorfile": ['"/var/log/x"'], "load": ["x"], "database": ["d"], "secret": ["s"], "emailalert": ['"a@b"'],
    "cleanstop": ["yes", "x"], "autoreload": ["yes", "x"], "callback": ['"/bin/cb"'], "logfile": ['"local0"'],
    "execute": ["x.cf"], "supervised": ["yes"], "fork": ["yes", "no"], "readdquiescent": ["yes", "q"],
    "maintenancedir": ['"/m"', '"m'], "timeout": ["5"], "connecttimeout": ["5"], "sceduler": ["rr"],
    "virtual": ["10.0.0.1:80", "10.0.0.2:53", "10.0.0.1:domain", "10.0.0.3:8000", "7", "[2001:db8::1]:80",
                "10.0.0.4", "bad target", "10.0.0.5:http", "10.0.0.6:3306", "10.0.0.7:70000"],
    "virtual6": ["[2001:db8::1]:80", "8", "[2001:db8::2]:443", "10.0.0.1:80"],
}
INDENTS = ["", "", "\t", "\t", "    ", " ", "\t ", "\xa0", "\t\xa0"]
EQUALS = ["=", "=", "=", " = ", "= ", " =", "\t=\t", "", "=="]
TAILS = ["", "", "", " # note", "#", '"#"', "\t", "  ", " =x"]
lines = st.tuples(st.sampled_from(INDENTS), st.sampled_from(sorted(VALUES)), st.sampled_from(EQUALS),
                  st.integers(0, 20), st.sampled_from(TAILS)).map(
    lambda t: f"{t[0]}{t[1]}{t[2]}{VALUES[t[1]][t[3] % len(VALUES[t[1]])]}{t[4]}")
block = st.lists(lines | st.sampled_from(["", "# c", "\tservice=http", "\treal=10.0.1.1:80 masq"]), max_size=8)


# lines that are valid in any virtual block, several of them warning: files of these mostly load
good = st.sampled_from([
    "\treal=10.0.1.1:80 masq", "\treal=10.0.1.2 gate 3", '\treal=10.0.1.3:80 masq 1 "a.html", "ok"',
    "\treal=10.0.1.4:80 masq 2 l:1 u:9", "\tservice=http", "\tservice=dns", "\tservice=ftp", "\tservice=none",
    "\tservice=mysql", "\tservice=simpletcp", "\tchecktype=connect", "\tchecktype=ping", "\tchecktype=3",
    "\tchecktype=off", "\tchecktype=external-perl", '\trequest="/health"', '\treceive="ok"', "\tscheduler=rr",
    "\tscheduler=sh", "\tpersistent=600", "\tnetmask=255.255.255.0", '\temailalert="a@b"', "\tload=x",
    '\tmonitorfile="/m"', "\tcheckinterval=7", "\tchecktimeout=4", "\tquiescent=yes", "\thttpmethod=HEAD",
    '\tvirtualhost="www.example.com"', '\tlogin="probe"', '\tcomment="c"', "\tcleanstop=yes", "\tcheckport=81",
    '\tfallback=10.0.9.9:80 masq', "", "# c"])
TARGETS = ["10.0.0.1:80", "10.0.0.1:8000", "10.0.0.1:53", "10.0.0.1:21", "10.0.0.1:http", "7"]


@st.composite
def files(draw: st.DrawFn) -> str:
    """Virtuals made of a few blocks, each block under several of them: equal virtuals are what the fast path
    reuses (their warnings told at each). Blocks of valid lines, or of any lines."""
    blocks = draw(st.lists(st.lists(good, unique=True, max_size=8) | block, min_size=1, max_size=3))
    out = draw(st.lists(lines, max_size=4) | st.just([]))
    for i, (target, k) in enumerate(draw(st.lists(st.tuples(st.sampled_from(TARGETS + VALUES["virtual"] +
                                                                            VALUES["virtual6"]),
                                                            st.integers(0, 2)), max_size=8))):
        six = "6" if target.startswith(("[", "8")) else ""
        if draw(st.booleans()):  # another service of the same kind (the same one twice is an error)
            target = str(int(target) + 10 * i) if target.isdecimal() else \
                target.replace("10.0.0.", f"10.0.{i}.").replace("db8::", f"db8:{i}::")
        out.append(f"virtual{six}={target}")
        out += blocks[k % len(blocks)]
    return "".join(f"{x}\n" for x in out)


@settings(max_examples=int(os.environ.get("IPVSD_FUZZ_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=files())
def test_random_files_read_alike(text: str) -> None:
    same(text)


@pytest.mark.parametrize("text", [
    "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n" * 3,
    "".join(f"virtual=10.0.0.{i}:80\n\treal=10.0.1.1:80 masq\n\temailalert=x\n" for i in range(3)),
    "".join(f"virtual=10.0.0.{i}:8000\n\treal=10.0.1.1:80 masq\n" for i in range(3)),  # a warning at each
    "".join(f"virtual=10.0.0.{i}:80\n\treal=10.0.1.1:80 masq\n\tnetmask=24\n" for i in range(3)),
    "".join(f"virtual=10.0.0.{i}:80\n\treal=10.0.1.1:80 masq\n\tscheduler=R R\n" for i in range(3)),  # an error
    "".join(f"virtual=10.0.0.{i}:80\n\treal=10.0.1.1:80 masq\n\tpersistent=x\n" for i in range(3)),
    "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\nvirtual=10.0.0.2:80\n\treal=10.0.1.1:80 masq\n\tscheduler=rr\n",
    "".join(f"virtual=10.0.0.{i}:80\n\treal=10.0.1.1:80 masq 1 \"a\", \"b\"\n\tchecktype=connect\n" for i in range(3)),
    "".join(f"virtual=10.0.0.{i}:{p}\n\treal=10.0.1.1 masq 1 \"a\", \"b\"\n" for i in range(3) for p in (80, 53, 21)),
    "".join(f"virtual=10.0.0.{i}:http\n\treal=10.0.1.1:http masq\n\treal=10.0.1.2:www gate\n\treal=10.0.1.3:{p} masq\n"
            f"\tfallback=10.0.2.1:{p} masq\n" for i in range(3) for p in ("domain", "nosuch", "http")),  # service names
    "virtual = 10.0.0.1:80\n \treal\t=\t10.0.1.1:80\tmasq\t\n\tservice=h\ttp\n",
    "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n\trequest=\"a#b\"\n\treceive=x # y\n",
    "\treal=10.0.1.1:80 masq\nvirtual=10.0.0.1:80\nreal=10.0.1.1:80 masq\n\treal=10.0.1.1:80 masq\n",
    "virtual=10.0.0.1:80\n\xa0real=10.0.1.1:80 masq\n\t\xa0real=10.0.1.2:80 masq\n",
    "virtual=10.0.0.1:80\r\n\treal=10.0.1.1:80 masq\r\n\u2028\treal=10.0.1.2:80 masq\x0b\tscheduler=rr\n",
    "virtual=10.0.0.1:80\n\t=x\n\t1a=2\n\tre al=3\n\treal\n\tsupervised\nsupervised\nvirtual\n",
])
def test_odd_files_read_alike(text: str) -> None:
    same(text)
