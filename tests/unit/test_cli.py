"""The command line as ipvsadm, systemctl and keepalived users expect: version, help, errors, defaults, check -q."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import ipvsd
import ipvsd.commands
from ipvsd.cli import COMMANDS, build_parser, main
from ipvsd.commands import DEFAULT_CONFIG, client_config

READERS = ("run", "check", "convert", "probe", "plan")  # the commands that read a configuration
CLIENTS = ("status", "drain", "undrain", "reload", "events")

VALID = """
[[services]]
address = "127.0.0.1"
port = 18080
checks = [{ type = "on" }]
reals = [{ address = "127.0.0.2" }]
"""


@pytest.fixture(autouse=True)
def _loggers() -> Iterator[None]:
    """`ipvsd run` sets up the process's logging; these tests call main() in-process, so undo it."""
    root = logging.getLogger("ipvsd")
    saved = root.handlers[:], root.level, root.propagate
    yield
    root.handlers[:], root.propagate = saved[0], saved[2]
    root.setLevel(saved[1])


def exit_of(argv: list[str]) -> int:
    """main()'s status, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of([flag]) == 0
    assert capsys.readouterr().out == f"ipvsd {ipvsd.__version__}\n"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ipvsd {name}")
    assert "-h, --help" in out


def test_list_help_documents_ipvsadm_options_and_list_still_parses_raw(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of(["list", "-h"]) == 0
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--numeric", "--stats", "--rate", "--exact", "--json", "--fwmark-service"))
    # without a help request the arguments are ipvsadm's, with ipvsadm's messages and exit codes
    assert exit_of(["list", "--bogus"]) == 255
    assert capsys.readouterr().err == "--bogus: unknown option\n"  # popt's own text, not ipvsd's prefix


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"    {name} " in out for name in COMMANDS)


@pytest.mark.parametrize(("word", "hint"), [("foo", None), ("lsit", "list"), ("stauts", "status")])
def test_unknown_command_names_the_valid_ones(word: str, hint: str | None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of([word]) == 2
    err = capsys.readouterr().err
    message = err.splitlines()[-1]
    assert message.startswith(f"ipvsd: unknown command {word!r}")
    assert all(name in message for name in COMMANDS)
    assert "choose from )" not in err
    assert (f"did you mean {hint!r}" in message) if hint else ("did you mean" not in message)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of([]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("ipvsd: ")


def walk(parser: argparse.ArgumentParser, prog: str = "ipvsd") -> Iterator[tuple[str, argparse.Action]]:
    """Every action of the parser tree, with the command it belongs to."""
    for action in parser._actions:
        yield prog, action
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, f"{prog} {name}")


def test_every_option_of_every_command_has_help() -> None:
    parser, _ = build_parser(COMMANDS)
    actions = list(walk(parser))
    assert {prog for prog, _ in actions} == {"ipvsd"} | {f"ipvsd {n}" for n in COMMANDS}
    missing = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in actions
               if not (a.help and a.help.strip()) and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []


def test_every_reader_defaults_to_the_same_config_and_says_so() -> None:
    parser, _ = build_parser(COMMANDS)
    configs = {prog.split()[-1]: a for prog, a in walk(parser) if "--config" in a.option_strings}
    assert set(configs) == set(READERS) | set(CLIENTS)
    for name in READERS:
        assert configs[name].default == DEFAULT_CONFIG == "/etc/ipvsd/ipvsd.toml"
        assert not configs[name].required
        assert DEFAULT_CONFIG in (configs[name].help or "")
    for name in CLIENTS:  # resolved when the command runs: see client_config
        assert configs[name].default is None
        assert DEFAULT_CONFIG in (configs[name].help or "")


def _client_args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "socket": None, "state_dir": None, **kw})


def test_client_uses_the_default_configs_socket_only_when_it_is_live(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = tmp_path / "ctl.sock"
    conf = tmp_path / "ipvsd.toml"
    conf.write_text(f'[settings]\ncontrol_socket = "{sock_path}"\n')
    monkeypatch.setattr(ipvsd.commands, "DEFAULT_CONFIG", str(conf))
    args = _client_args()
    client_config(args)
    assert args.config is None  # no socket there: the usual search (/run/ipvsd, /var/lib/ipvsd) decides
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        client_config(args)
        assert args.config == str(conf)
        explicit = _client_args(socket="/elsewhere.sock")
        client_config(explicit)
        assert explicit.config is None  # --socket, --state-dir and -c win over the default
    conf.write_text("not toml [")
    broken = _client_args()
    client_config(broken)
    assert broken.config is None


# --- one error prefix -------------------------------------------------------------------------------------------


def error_cases(tmp_path: Path) -> list[tuple[list[str], str, int]]:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[services]]\naddress = 'nope'\n")
    missing = str(tmp_path / "missing.toml")
    a_file = tmp_path / "file"
    a_file.write_text("")
    nosock = str(tmp_path / "no.sock")
    return [
        (["check", "-c", str(bad)], "check", 1),
        (["convert", "-c", missing], "convert", 1),
        (["probe", "-c", missing], "probe", 1),
        (["probe", "-c", str(bad), "--real", "not an address"], "probe", 2),
        (["plan", "-c", str(bad)], "plan", 1),
        (["run", "-c", missing], "run", 1),
        (["status", "--socket", nosock], "status", 1),
        (["drain", "10.0.0.1", "--until", "someday", "--socket", nosock], "drain", 2),
        (["undrain", "10.0.0.1", "--socket", nosock], "undrain", 1),
        (["reload", "--socket", nosock], "reload", 1),
        (["events", "--socket", nosock], "events", 1),
        (["manpage", "--install", str(a_file)], "manpage", 1),
        (["check", "--bogus"], "check", 2),
        (["probe", "--format", "xml"], "probe", 2),
    ]


def test_every_command_prefixes_its_errors_with_its_name(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for argv, name, status in error_cases(tmp_path):
        assert exit_of(argv) == status, argv
        err = capsys.readouterr().err
        messages = [line for line in err.splitlines() if line and not line.startswith(("usage:", " "))]
        assert messages, argv
        assert all(line.startswith(f"ipvsd {name}: ") for line in messages), (argv, err)
        assert "error: " not in err, (argv, err)


# --- check -q ----------------------------------------------------------------------------------------------------


def test_check_quiet_prints_nothing_for_a_valid_config_even_with_warnings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "ipvsd.toml"
    conf.write_text(VALID)
    assert exit_of(["check", "-q", "-c", str(conf)]) == 0
    assert capsys.readouterr() == ("", "")
    warned = tmp_path / "ldirectord.cf"  # valid, with a warning: emailalert is accepted but not implemented
    warned.write_text('emailalert="a@b"\nvirtual=127.0.0.1:80\n\treal=127.0.0.2:80 masq\n\tservice=http\n')
    assert exit_of(["check", "-c", str(warned)]) == 0
    assert "emailalert" in capsys.readouterr().err
    assert exit_of(["check", "-q", "-c", str(warned)]) == 0
    assert capsys.readouterr() == ("", "")


def test_check_quiet_still_prints_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "ipvsd.toml"
    conf.write_text(VALID + "bogus = 1\n")
    assert exit_of(["check", "-q", "-c", str(conf)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "bogus" in err and err.startswith("ipvsd check: ")
