"""`ipvsd check` and `ipvsd convert` as an operator runs them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ipvsd.cli import main
from ipvsd.commands import check
from ipvsd.config import load
from tests.unit.config.cases import FIXTURES, ROOT


def test_check_valid_prints_what_would_be_programmed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(FIXTURES / "seed003_ldirectord.cf")]) == 0
    out = capsys.readouterr().out
    assert "valid (ldirectord format)" in out
    assert "-A -t 10.2.0.240:80 -s rr" in out
    assert "-a -t 10.2.0.240:80 -r 10.2.1.242:80 -m -w 1" in out
    assert "1 service(s), 2 real(s), 2 check(s)" in out


def test_check_invalid_exits_1_with_located_one_line_errors(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ldirectord.cf"
    f.write_text("checktimeout=3\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n\tsceduler=rr\n")
    assert main(["check", "-c", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"ipvsd check: {f}:4: sceduler: unknown directive" in err
    assert "Traceback" not in err


def test_check_missing_file_is_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_check_json_prints_the_normalized_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", "-c", str(ROOT / "etc" / "keepalived.conf")]) == 0
    assert '"address": "10.2.0.254"' in capsys.readouterr().out


@pytest.mark.parametrize("src", ["seed003_ldirectord.cf", "seed003_keepalived_backup.conf",
                                 "keepalived_features.conf", "ldirectord_features.cf"])
def test_convert_writes_toml_that_checks_to_the_same_model(src: str, tmp_path: Path) -> None:
    out = tmp_path / "ipvsd.toml"
    assert main(["convert", "-c", str(FIXTURES / src), "-o", str(out)]) == 0
    assert load(str(out))[0] == load(str(FIXTURES / src))[0]
    assert main(["check", "-q", "-c", str(out)]) == 0


def test_format_can_be_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "lb.txt"
    f.write_text((FIXTURES / "seed003_ldirectord.cf").read_text())
    assert main(["check", "--format", "ldirectord", "-c", str(f)]) == 0
    assert main(["check", "--format", "keepalived", "-c", str(f)]) == 1


@pytest.mark.parametrize(("name", "text", "fmt"), [
    ("lb.conf", "virtual_server 10.0.0.1 80 {\n}\n", "keepalived"),
    ("lb", "checktimeout=3\nvirtual=10.0.0.1:80\n", "ldirectord"),
    ("lb", "[settings]\nresync_interval = 5\n", "native"),
    ("x.toml", "", "native"),
    ("ldirectord.conf", "", "ldirectord"),
])
def test_format_is_sniffed_from_name_then_content(tmp_path: Path, name: str, text: str, fmt: str) -> None:
    from ipvsd.config import sniff
    f = tmp_path / name
    f.write_text(text)
    assert sniff(str(f)) == fmt


def test_a_name_that_says_the_format_is_not_read_to_sniff_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload of a 10,000-real `ipvsd.toml` reads the file once, not once more for its format."""
    import ipvsd.config
    from ipvsd.config import _source

    def unread(*a: object, **k: object) -> bytes:
        raise AssertionError("read to sniff a format its name says")

    monkeypatch.setattr(_source, "read_bytes", unread)
    for name, fmt in (("ipvsd.toml", "native"), ("ldirectord.cf", "ldirectord"), ("keepalived.conf", "keepalived")):
        assert ipvsd.config.sniff(str(tmp_path / name)) == fmt


def test_check_shows_every_setting_that_decides_a_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(FIXTURES / "ldirectord_features.cf")]) == 0
    out = capsys.readouterr().out
    assert "check: simpletcp send 'PING\\n' expect 'PONG' every" in out
    assert "check: dns name 'www.example.com' qtype 'A' expect '192.0.2.80' transport 'udp' every" in out
    assert "check: ftp login 'probe' password (set) path '/welcome.txt' receive 'hello' every" in out
    assert "secret" not in out


def test_check_shows_keepalived_http_details(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(FIXTURES / "keepalived_url_status.conf")]) == 0
    out = capsys.readouterr().out
    assert ("check: http GET /health status 200,301-302,418 digest '9b3a0c85a887a256d6939da88aabd8cd' every 60s "
            "timeout 5s rise 1 fall 2 retry after 3s") in out


# --- what the host must have: the [sync] interface and its IPv4 address --------------------------------------------


def _sync_file(tmp_path: Path, interface: str, extra: str = "") -> Path:
    f = tmp_path / "ipvsd.toml"
    f.write_text(f'include = []\n\n[sync]\ninterface = "{interface}"\n{extra}')
    return f


def test_check_accepts_a_sync_interface_of_this_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _sync_file(tmp_path, "lo", "syncid = 5\nmaxlen = 1400\n")
    assert main(["check", "-c", str(f)]) == 0
    captured = capsys.readouterr()
    assert "--start-daemon master --mcast-interface lo --syncid 5 --sync-maxlen 1400" in captured.out
    assert "--start-daemon backup --mcast-interface lo --syncid 5 --sync-maxlen 1400" in captured.out
    # 127.0.0.1 is scope host: the kernel's master daemon would bind another interface's address
    assert f"{f}:4: warning: sync.interface: interface 'lo' has no global-scope IPv4 address (127.0.0.1 only)" \
        in captured.err


def test_check_refuses_a_sync_interface_this_host_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _sync_file(tmp_path, "nosuch0")
    assert main(["check", "-c", str(f)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"ipvsd check: {f}:4: sync.interface: no network interface 'nosuch0' on this host: the sync "
                   "daemons send and receive on it",
                   f"ipvsd check: {f}: valid, but not on this host (1 error(s); --no-host checks a configuration "
                   "meant for another machine)"]


def test_no_host_checks_a_configuration_for_another_machine(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = _sync_file(tmp_path, "nosuch0")
    assert main(["check", "--no-host", "-q", "-c", str(f)]) == 0
    assert capsys.readouterr() == ("", "")


def test_the_host_error_points_at_the_keepalived_line(capsys: pytest.CaptureFixture[str]) -> None:
    f = FIXTURES / "keepalived_sync_both.conf"  # lvs_sync_daemon ens4 ..., on line 3
    assert main(["check", "-q", "-c", str(f)]) == (0 if _has("ens4") else 1)
    if not _has("ens4"):
        assert f"ipvsd check: {f}:3: lvs_sync_daemon (interface): no network interface 'ens4'" in \
            capsys.readouterr().err


def test_daemons_run_by_keepalived_are_neither_host_checked_nor_started(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(FIXTURES / "keepalived_sync_inst.conf")]) == 0
    out = capsys.readouterr().out
    assert "# sync daemons on ens4 syncid 51: started and stopped by keepalived" in out
    assert "--start-daemon" not in out


def test_a_backup_daemon_alone_needs_no_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(_sync_file(tmp_path, "lo", 'daemons = "backup"\n'))]) == 0
    captured = capsys.readouterr()
    assert "global-scope" not in captured.err
    assert "--start-daemon backup" in captured.out and "--start-daemon master" not in captured.out


@pytest.mark.parametrize(("addresses", "expected"), [
    ([], ("error", "has no IPv4 address")),
    ([("127.0.0.1", 254, 0x80)], ("warning", "no global-scope IPv4 address (127.0.0.1 only)")),
    ([("169.254.1.1", 253, 0)], ("warning", "no global-scope IPv4 address (169.254.1.1 only)")),
    ([("10.0.0.2", 0, 0x01)], ("warning", "no global-scope")),  # a secondary address is never bound
    ([("169.254.1.1", 253, 0), ("10.0.0.2", 0, 0)], None),
])
def test_what_an_interfaces_addresses_mean_for_the_master_daemon(
        addresses: list[tuple[str, int, int]], expected: tuple[str, str] | None) -> None:
    found = check.master_address_problem("eth9", addresses)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found[0] == expected[0] and expected[1] in found[1]


def test_check_lists_the_sysctls_as_written_to_proc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text("include = []\n[sysctl]\nsloppy_tcp = true\nsync_threshold = [3, 50]\n")
    assert main(["check", "-c", str(f)]) == 0
    out = capsys.readouterr().out
    assert "sysctl net.ipv4.vs.sloppy_tcp = 1\nsysctl net.ipv4.vs.sync_threshold = 3 50\n" in out


def _has(interface: str) -> bool:
    try:
        socket.if_nametoindex(interface)
    except OSError:
        return False
    return True
