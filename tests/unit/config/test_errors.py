"""Every rejected configuration names file:line and the key, in one line, as a ConfigError (never a traceback)."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from ipvsd.config import ConfigErrors, ldirectord, load, native
from ipvsd.config import keepalived as ka
from ipvsd.errors import ConfigError

LD_BASE = "checktimeout=3\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n"


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    ("checktimout=3\n", 1, "checktimout", "unknown directive"),
    (LD_BASE + "\tsceduler=rr\n", 4, "sceduler", "unknown directive"),
    (LD_BASE + "\tquiescent=maybe\n", 4, "quiescent", "'yes' or 'no'"),
    ("timeout=5\n", 1, "timeout", "checktimeout"),
    (LD_BASE + "\treal=10.0.1.2:80 masquerade\n", 4, "real", "gate, masq or ipip"),
    (LD_BASE + "\treal=10.0.1.2:80 masq 1 extra\n", 4, "real", "around"),
    (LD_BASE + "\treal=10.0.1.9->10.0.1.2:80 masq\n", 4, "real", "before its first"),
    (LD_BASE + "\tchecktype=sometimes\n", 4, "checktype", "checktype must be"),
    (LD_BASE + "\tservice=gopher\n", 4, "service", "unknown service"),
    (LD_BASE + "\tscheduler=RR\n", 4, "scheduler", "cannot be an IPVS scheduler"),
    (LD_BASE + "\treceive=\"(open\"\n\tservice=http\n", 4, "receive", "regular expression"),
    ("virtual=10.0.0.1:80\n\treal6=[2001:db8::1]:80 masq\n", 2, "real6", "real"),
    ("virtual=[2001:db8::1]:80\n\treal=10.0.0.1 gate\n", 1, "virtual", "virtual6"),
    ("\treal=10.0.0.1:80 masq\n", 1, "real", "outside a virtual"),
    ("scheduler=rr\n", 1, "scheduler", "inside a virtual"),
    (LD_BASE + "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n", 4, "virtual", "defined twice"),
    (LD_BASE + "\treal=10.0.1.1:80 gate\n", 2, "virtual", "appears twice"),
    (LD_BASE + "\tprotocol=fwm\n", 4, "protocol", "fwm"),
    (LD_BASE + "\tops=yes\n", 2, "virtual", "udp"),
    (LD_BASE + "\tservice=http\n\trequest=\"index.html\n", 5, "request", "unterminated quoted string"),
    (LD_BASE + "\treal=10.0.1.2:80 masq 1 \"x.html\", \"ok\n", 4, "real", "unterminated quoted string"),
    (LD_BASE + "\tscheduler=wrr-x\n", 4, "scheduler", "cannot be an IPVS scheduler"),
    (LD_BASE + "\tscheduler=abcdefghijklmnop\n", 4, "scheduler", "1-15 characters"),
    ("failurecount=99999\n" + LD_BASE, 1, "failurecount", "less than or equal to 1000"),
])
def test_ldirectord_errors_are_located(text: str, line: int, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        ldirectord.parse(text, "ld.cf")
    err = e.value.errors[0] if isinstance(e.value, ConfigErrors) else e.value
    assert (err.path, err.line) == ("ld.cf", line), str(err)
    assert err.key is not None and err.key.startswith(key), str(err)
    assert fragment in err.message, str(err)
    assert "\n" not in str(err)


KA_BASE = "virtual_server 10.0.0.1 80 {\n  lvs_sched rr\n  real_server 10.0.1.1 80 {\n"


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    ("virtual_servre 10.0.0.1 80 {\n}\n", 1, "virtual_servre", "unknown top-level"),
    (KA_BASE + "    weigth 2\n  }\n}\n", 4, "weigth", "unknown keyword in real_server"),
    (KA_BASE + "    HTTP_GET {\n      url {\n        pth /\n      }\n    }\n  }\n}\n", 6, "pth",
     "unknown keyword in url"),
    (KA_BASE + "    FILE_CHECK {\n    }\n  }\n}\n", 4, "FILE_CHECK", "not supported"),
    (KA_BASE + "    FOO_CHECK {\n    }\n  }\n}\n", 4, "FOO_CHECK", "unknown keyword"),
    (KA_BASE + "    weight x\n  }\n}\n", 4, "weight", "integer"),
    (KA_BASE + "  }\n", 1, None, "never closed"),
    ("}\n", 1, None, "without a matching"),
    ("virtual_server group NOPE {\n}\n", 1, "virtual_server", "no virtual_server_group"),
    ("virtual_server 10.0.0.1 {\n}\n", 1, "virtual_server", "port"),
    (KA_BASE + "    lvs_method FOO\n  }\n}\n", 4, "lvs_method", "NAT, DR or TUN"),
    (KA_BASE + "    HTTP_GET {\n      url {\n        status_code 99\n      }\n    }\n  }\n}\n", 6, "status_code",
     "100-599"),
    ("virtual_server 10.0.0.1 80 {\n  protocol ICMP\n}\n", 2, "protocol", "TCP, UDP or SCTP"),
    (KA_BASE + "    DNS_CHECK {\n      type BOGUS\n    }\n  }\n}\n", 5, "type", "must be"),
    ("virtual_server 10.0.0.300 80 {\n}\n", 1, "virtual_server", "not an IP address"),
    ("include nothing-here.conf\n", 1, "include", "no such file"),
    (KA_BASE + "    HTTP_GET {\n      url {\n        digest 00\n        digest ff\n      }\n    }\n  }\n}\n", 7,
     "digest", "second digest"),
    ("virtual_server 10.0.0.1 80 {\n  lvs_sched round-robin\n}\n", 2, "lvs_sched", "cannot be an IPVS scheduler"),
    ("virtual_server 2001:db8::1 80 {\n  lvs_sched rr\n  lvs_method DR\n  real_server 10.0.1.1 80 {\n  }\n}\n",
     4, "real_server", "IPv4 but the service is IPv6"),
    ("virtual_server 10.0.0.1 80 {\n  lvs_sched rr\n  real_server 2001:db8::1 80 {\n  }\n}\n",
     3, "real_server", "IPv6 but the service is IPv4"),
    ("virtual_server 10.0.0.1 80 {\n  sorry_server 2001:db8::9 80\n}\n", 2, "sorry_server", "sorry server"),
    ("virtual_server 10.0.0.1 80 {\n" + "{\n" * 40 + "}\n" * 40 + "}\n", 2, None, "a block needs a keyword"),
])
def test_keepalived_errors_are_located(text: str, line: int, key: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        ka.parse(text, "ka.conf")
    err = e.value.errors[0] if isinstance(e.value, ConfigErrors) else e.value
    assert (err.path, err.line) == ("ka.conf", line), str(err)
    if key is not None:
        assert err.key is not None and err.key.startswith(key), str(err)
    assert fragment in err.message, str(err)


SVC = '[[services]]\naddress = "10.0.0.1"\n'
SVC6 = '[[services]]\naddress = "2001:db8::1"\nport = 80\n'


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    ("[settings]\nresync_intervall = 3\n", 2, "settings.resync_intervall", "unknown key"),
    ("servicez = []\n", 1, "servicez", "unknown top-level key"),
    ("[[services]]\naddress = \"10.0.0.1\"\nport = 80\n[[services.reals]]\naddress = \"10.0.1.1\"\nweight = -1\n",
     6, "services.reals.weight", "greater than or equal"),
    ("[[services]]\naddress = \"10.0.0.1\"\nport = 80\n[[services.checks]]\ntype = \"htp\"\n", 4,
     "services.checks", "tag"),
    ("[[services]]\naddress = \"10.0.0.1\"\nport = 80\n\n[[services]]\naddress = \"10.0.0.2\"\nport = 70000\n", 7,
     "services.port", "less than or equal"),
    ("[[services]]\naddress = \"10.0.0.1\"\nport = 80\n[[services.reals]]\naddress = \"a..b\"\n", 5,
     "services.reals.address", "hostname"),
    ("x = [\n", 1, None, "TOML syntax"),
    (SVC + 'port = "80"\n', 3, "services.port", "valid integer"),
    (SVC + 'port = 80\nscheduler = "wrr!"\n', 4, "services.scheduler", "cannot be an IPVS scheduler"),
    (SVC6 + '[[services.reals]]\naddress = "10.0.1.1"\nforward = "route"\n', 5, "services.reals.address",
     "IPv4 but the service is IPv6"),
    (SVC6 + '[[services.reals]]\naddress = "10.0.1.1"\nforward = "masq"\n', 5, "services.reals.address",
     "tunnel"),
    ('[settings]\nmetrics_listen = "999.1.1.1:99999"\n', 2, "settings.metrics_listen", "not host:port"),
    ('[settings]\nmetrics_listen = "999.1.1.1:9100"\n', 2, "settings.metrics_listen", "neither an IP"),
    ('[settings]\nmetrics_listen = "[::1]"\n', 2, "settings.metrics_listen", "not host:port"),
    ('[settings]\ncontrol_socket = "/run/' + "x" * 120 + '"\n', 2, "settings.control_socket", "Unix socket"),
    ("x = " + "[" * 2000 + "]" * 2000 + "\n", 1, None, "nested too deeply"),
    ("x = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n", 1, None, "nested too deeply"),
    ("\n\n# caf\xe9\n", 3, None, "column 6"),
    ("settings.limits.max_deletes = -1\n", 1, "settings.limits.max_deletes", "greater than or equal"),
    (SVC + '"port" = 70000\n', 3, "services.port", "less than or equal"),
    (SVC + 'port = 80\n[[services.checks]]\ntype = """simple\ntcp"""\n', 4, "services.checks", "'simple\\ntcp'"),
])
def test_native_errors_are_located(tmp_path: Path, text: str, line: int, key: str | None, fragment: str) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_bytes(text.encode("utf-8") if "\xe9" not in text else text.encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load(str(f))
    err = e.value.errors[0] if isinstance(e.value, ConfigErrors) else e.value
    assert (err.path, err.line) == (str(f), line), str(err)
    if key is not None:
        assert err.key == key, str(err)
    assert fragment in err.message, str(err)


def test_native_dropin_error_names_the_dropin(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "ipvsd.toml").write_text("[settings]\nresync_interval = 5\n")
    (tmp_path / "conf.d" / "web.toml").write_text("[[services]]\naddress = \"10.0.0.1\"\n\nport = \"http\"\n")
    with pytest.raises(ConfigErrors) as e:
        load(str(tmp_path / "ipvsd.toml"))
    assert [(x.path, x.line, x.key) for x in e.value.errors] == [
        (str(tmp_path / "conf.d" / "web.toml"), 4, "services.port")]


def test_all_errors_are_reported_not_just_the_first(tmp_path: Path) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text("[settings]\nbogus = 1\n[[services]]\naddress = \"10.0.0.1\"\nport = 80\nscheduler = \"R R\"\n")
    with pytest.raises(ConfigErrors) as e:
        load(str(f))
    assert sorted(x.line or 0 for x in e.value.errors) == [2, 6]


def test_unimplemented_ldirectord_directives_warn_with_their_line() -> None:
    _, warnings = ldirectord.parse('emailalert="a@b"\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n'
                                   '\tmonitorfile="/tmp/m"\n\tservice=http\n', "ld.cf")
    assert [(w.line, w.key) for w in warnings] == [(1, "emailalert"), (4, "monitorfile")]


def test_ldirectord_silent_none_check_warns_loudly() -> None:
    config, warnings = ldirectord.parse("virtual=10.0.0.1:8080\n\treal=10.0.1.1:8080 masq\n", "ld.cf")
    assert config.services[0].checks[0].type == "on"
    assert any(w.line == 1 and "NO HEALTH CHECK" in w.message for w in warnings)


def test_ldirectord_reports_every_error_of_the_file() -> None:
    text = ("checktimeout=x\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 masquerade\n\tsceduler=rr\n"
            "virtual=10.0.0.2:80\n\treal=10.0.1.2:80 masq\n\tscheduler=R R\nbogus=1\n")
    with pytest.raises(ConfigErrors) as e:
        ldirectord.parse(text, "ld.cf")
    assert [(x.line, x.key) for x in e.value.errors] == [
        (1, "checktimeout"), (3, "real"), (4, "sceduler"), (7, "scheduler"), (8, "bogus")]


def test_keepalived_reports_every_error_of_the_file() -> None:
    text = (KA_BASE + "    weigth 2\n    HTTP_GET {\n      url {\n        pth /\n      }\n    }\n  }\n"
            "  real_server 10.0.1.2 99999 {\n  }\n  protocol ICMP\n}\nvirtual_servre x {\n}\n"
            "virtual_server 10.0.0.2 80 {\n  lvs_sched \"wrong name\"\n}\n")
    with pytest.raises(ConfigErrors) as e:
        ka.parse(text, "ka.conf")
    assert [(x.line, x.key) for x in e.value.errors] == [
        (4, "weigth"), (7, "pth"), (11, "real_server"), (13, "protocol"), (15, "virtual_servre"),
        (18, "lvs_sched")]


def test_thousands_of_errors_are_counted_but_only_the_first_hundred_kept() -> None:
    text = LD_BASE + "\tsceduler=rr\n" * 20000
    with pytest.raises(ConfigErrors) as e:
        ldirectord.parse(text, "ld.cf")
    assert len(e.value.errors) == 100
    assert e.value.total == 20000
    assert e.value.errors[0].line == 4


@pytest.mark.parametrize(("fmt", "text", "line"), [
    ("ldirectord", "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n\tscheduler=wrrr\n", 3),
    ("keepalived", "virtual_server 10.0.0.1 80 {\n  lvs_sched roundrobin\n}\n", 2),
    ("native", '[[services]]\naddress = "10.0.0.1"\nport = 80\nscheduler = "wrrr"\n', 4),
])
def test_an_unknown_scheduler_warns_with_its_line_and_the_known_ones(tmp_path: Path, fmt: str, text: str,
                                                                      line: int) -> None:
    f = tmp_path / {"ldirectord": "ld.cf", "keepalived": "keepalived.conf", "native": "ipvsd.toml"}[fmt]
    f.write_text(text)
    _, warnings = load(str(f))
    [w] = [w for w in warnings if "scheduler" in w.message]
    assert (w.path, w.line, w.level) == (str(f), line, "warning")
    assert "rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos" in w.message


def test_a_keepalived_group_warns_once_per_line_not_once_per_address() -> None:
    _, warnings = ka.parse("virtual_server_group G {\n  10.0.0.1-50 80\n}\nvirtual_server group G {\n"
                           "  lvs_sched wrrr\n}\n", "ka.conf")
    assert len([w for w in warnings if "unknown scheduler" in w.message]) == 1


@pytest.mark.parametrize(("vip", "real", "message"), [
    ("10.0.0.1", "2001:db8::5", "real 2001:db8::5 is IPv6 but the service is IPv4"),
    ("2001:db8::1", "10.0.1.5", "real 10.0.1.5 is IPv4 but the service is IPv6"),
])
def test_a_real_of_the_other_family_is_refused_at_its_line(tmp_path: Path, vip: str, real: str, message: str) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text(f'[[services]]\naddress = "{vip}"\nport = 80\n[[services.reals]]\naddress = "10.0.1.1"\n'
                 f'[[services.reals]]\naddress = "{real}"\n[[services.reals]]\naddress = "www.example.org"\n')
    if ":" in vip:
        f.write_text(f.read_text().replace('"10.0.1.1"', '"2001:db8::9"'))
    with pytest.raises(ConfigErrors) as e:
        load(str(f))
    [err] = e.value.errors
    assert (err.line, err.key) == (7, "services.reals.address")
    assert message in err.message


def test_mixed_families_are_fine_when_tunnelled(tmp_path: Path) -> None:
    config, _ = ka.parse("virtual_server 2001:db8::1 80 {\n  lvs_sched rr\n  lvs_method TUN\n"
                         "  real_server 10.0.1.1 80 {\n  }\n}\n", "ka.conf")
    assert config.services[0].reals[0].forward == "tunnel"


def test_checks_written_alike_share_one_model_but_a_different_type_is_still_an_error(tmp_path: Path) -> None:
    # Validation keeps one model per distinct check; `fall = true` must not pass for the `fall = 1` seen before it.
    svc = '[[services]]\naddress = "10.0.0.{n}"\nport = 80\n[[services.checks]]\ntype = "tcp"\nfall = {fall}\n'
    f = tmp_path / "ipvsd.toml"
    f.write_text(svc.format(n=1, fall=1) + svc.format(n=2, fall=1))
    config, _ = load(str(f))
    assert config.services[0].checks[0] is config.services[1].checks[0]
    f.write_text(svc.format(n=1, fall=1) + svc.format(n=2, fall="true"))
    with pytest.raises(ConfigError) as e:
        load(str(f))
    assert (e.value.line, e.value.key) == (12, "services.checks.fall"), str(e.value)


def test_native_files_read_with_tomllib_when_tomli_cannot_be_imported(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # tomli is tomllib's origin: a broken install falls back to the standard library, with the same errors
    f = tmp_path / "ipvsd.toml"
    f.write_text('[settings]\nresync_interval = = 3\n')
    with pytest.raises(ConfigError) as fast:
        load(str(f))
    monkeypatch.setitem(sys.modules, "tomli", None)  # import tomli raises ImportError
    try:
        importlib.reload(native)
        assert native.toml is tomllib
        with pytest.raises(ConfigError) as slow:
            load(str(f))
    finally:
        monkeypatch.undo()
        importlib.reload(native)
    assert native.toml is not tomllib
    assert (slow.value.line, slow.value.message) == (fast.value.line, fast.value.message)
    assert (fast.value.line, fast.value.message) == (2, "TOML syntax: Invalid value")
