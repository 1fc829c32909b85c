"""`ipvsd check` and `ipvsd convert` as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsd.cli import main
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
