"""Hostile input: every crash, hang or blow-up found in the readers is a located one-line error, in seconds."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsd.cli import main
from ipvsd.config import ConfigErrors, _lexer, _ranges, _report, _source, keepalived, ldirectord, load
from ipvsd.errors import ConfigError

VS = "virtual_server 10.0.0.1 80 {\n  lvs_sched rr\n  real_server 10.0.1.1 80 {\n  }\n}\n"
LD = "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n\tscheduler=rr\n"
TOML = '[[services]]\naddress = "10.0.0.1"\nport = 80\n'


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A case that blocks (a FIFO opened for reading) fails after 10 s instead of hanging the suite."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command; it must fail with located one-line errors and no traceback. Returns stderr."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith(("ipvsd check: ", "ipvsd convert: ")) for line in err.splitlines()), err
    return err


@pytest.mark.parametrize("text", [
    "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "[settings]\nx = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
])
def test_deeply_nested_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text(text)
    err = one_error(capsys, ["check", "-c", str(f)])
    assert f"{f}:" in err and "nested too deeply" in err


@pytest.mark.parametrize(("text", "line"), [
    ("x = " + "{" * 1_000_000 + "\n", 1),  # braces with no keyword: each opened an anonymous block, at any depth
    ("a {\n" * 200_000, 33),  # the fast path's blocks, one a line
    ("a { b {\n" * 100_000, 17),
])
def test_keepalived_nesting_past_the_limit_costs_no_memory(text: str, line: int) -> None:
    # found by the fuzz (scripts/reliability_lab/fuzz.py): 1 MB of '{' took over 5 s and a stack entry each, so a
    # file at the 64 MiB cap would take minutes and gigabytes; past the limit, blocks are only counted
    errors = _report.Collector()
    parser = _lexer._Parser(errors)
    parser.feed_text(text, "ka.conf", 0, ())
    assert len(parser.stack) <= _lexer.MAX_BLOCK_DEPTH + 2
    parser.finish()
    assert errors.errors[0].line == line and errors.errors[0].message.startswith(("a block needs a keyword",
                                                                                "blocks nested deeper than"))


def test_blocks_closed_past_the_nesting_limit_return_to_the_right_level() -> None:
    deep = "a {\n" * 40 + "x { y } { }\n" + "}\n" * 40
    errors = _report.Collector()
    nodes = _lexer.read_text(deep + "after 1\n", "ka.conf", errors)
    assert [n.keyword for n in nodes] == ["a", "after"], "the closing braces found their way back to the top"
    assert [(e.line, e.message) for e in errors.errors] == [(33, "blocks nested deeper than 32")]


def test_deeply_nested_keepalived_blocks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "keepalived.conf"
    f.write_text("global_defs {\n" + "a {\n" * 20000 + "}\n" * 20000 + "}\n")
    err = one_error(capsys, ["check", "-c", str(f)])
    assert f"{f}:33: a: blocks nested deeper than 32" in err


@pytest.mark.parametrize("fmt", ["native", "ldirectord", "keepalived"])
def test_dev_zero_is_refused_not_read(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    err = one_error(capsys, ["check", "--format", fmt, "-c", "/dev/zero"])
    assert "/dev/zero: cannot read: not a regular file" in err


@pytest.mark.parametrize(("name", "text", "line"), [
    ("ipvsd.toml", 'include = ["/dev/zero"]\n', 1),
    ("keepalived.conf", "! x\ninclude /dev/zero\n", 2),
])
def test_an_included_device_is_refused_at_the_include_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            name: str, text: str, line: int) -> None:
    f = tmp_path / name
    f.write_text(text)
    err = one_error(capsys, ["check", "-c", str(f)])
    assert f"{f}:{line}: include: /dev/zero: cannot read: not a regular file" in err


@pytest.mark.parametrize("fmt", [None, "native", "ldirectord", "keepalived"])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            fmt: str | None) -> None:
    fifo = tmp_path / "ipvsd.toml"
    os.mkfifo(fifo)
    err = one_error(capsys, ["check", "-c", str(fifo), *(["--format", fmt] if fmt else [])])
    assert "not a regular file" in err


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "a directory" in one_error(capsys, ["check", "-c", str(tmp_path)])


def test_files_above_the_size_cap_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_source, "MAX_FILE_BYTES", 1000)
    f = tmp_path / "ld.cf"
    f.write_text(LD + "#" * 2000 + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load(str(f))


def test_convert_into_a_directory_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ld.cf"
    src.write_text(LD)
    out = tmp_path / "out"
    out.mkdir()
    err = one_error(capsys, ["convert", "-c", str(src), "-o", str(out)])
    assert f"ipvsd convert: {out}: cannot write: Is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ld.cf", "out"]


def test_convert_into_a_missing_directory_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ld.cf"
    src.write_text(LD)
    err = one_error(capsys, ["convert", "-c", str(src), "-o", "/nonexistent/x"])
    assert "ipvsd convert: /nonexistent/x: cannot write: No such file or directory" in err


@pytest.mark.parametrize(("name", "text"), [("ipvsd.toml", TOML), ("ld.cf", LD), ("keepalived.conf", VS)])
def test_a_byte_order_mark_is_accepted(tmp_path: Path, name: str, text: str) -> None:
    f = tmp_path / name
    f.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(load(str(f))[0].services) == 1


@pytest.mark.parametrize(("name", "text"), [("ipvsd.toml", TOML), ("ld.cf", LD), ("keepalived.conf", VS)])
def test_non_utf8_is_located_by_line_and_column(tmp_path: Path, name: str, text: str) -> None:
    f = tmp_path / name
    f.write_bytes(b"\xef\xbb\xbf" + text.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load(str(f))
    assert (e.value.path, e.value.line) == (str(f), text.count("\n") + 1)
    assert "byte 0xe9 at column 6" in e.value.message


def test_wide_keepalived_groups_are_refused_before_expanding(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 /20 ranges: 262,144 services from a 1.3 KB file (32 s and 1.65 GB before the limit)
    def never(text: str) -> Iterator[str]:
        raise AssertionError("expanded")
    monkeypatch.setattr(keepalived, "expand_group_address", never)
    group = "".join(f"  10.{i}.0.0/20 80\n" for i in range(64))
    text = f"virtual_server_group G {{\n{group}}}\nvirtual_server group G {{\n  lvs_sched rr\n}}\n"
    with pytest.raises(ConfigErrors) as e:
        keepalived.parse(text, "ka.conf")
    assert [(x.line, x.key) for x in e.value.errors] == [(67, "virtual_server")]
    assert "more than 65536 services" in e.value.errors[0].message


def test_keepalived_reals_times_groups_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "MAX_REALS", 1000)
    reals = "".join(f"  real_server 10.1.0.{i} 80 {{\n  }}\n" for i in range(1, 101))
    text = f"virtual_server_group G {{\n  10.0.0.0/28 80\n}}\nvirtual_server group G {{\n{reals}}}\n"
    with pytest.raises(ConfigErrors, match="more than 1000 real servers"):
        keepalived.parse(text, "ka.conf")


def test_ldirectord_ranges_are_counted_before_they_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "MAX_REALS", 100)
    text = "virtual=10.0.0.1:80\n" + "".join(f"\treal=10.1.{i}.1->10.1.{i}.10:80 masq\n" for i in range(20))
    with pytest.raises(ConfigErrors) as e:
        ldirectord.parse(text, "ld.cf")
    assert [(x.line, x.key) for x in e.value.errors] == [(12, "real")]


def test_ldirectord_services_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "MAX_SERVICES", 5)
    text = "".join(f"virtual=10.0.0.{i}:80\n\treal=10.0.1.1:80 masq\n" for i in range(1, 11))
    with pytest.raises(ConfigErrors) as e:
        ldirectord.parse(text, "ld.cf")
    assert [(x.line, x.key) for x in e.value.errors] == [(11, "virtual")]


def test_native_ranges_are_counted_before_they_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "MAX_REALS", 100)
    monkeypatch.setattr(_ranges, "MAX_EXPANSION", 4096)
    f = tmp_path / "ipvsd.toml"
    f.write_text(TOML + "".join(f'[[services.reals]]\naddress = "10.1.{i}.1->10.1.{i}.10"\n' for i in range(20)))
    with pytest.raises(ConfigErrors) as e:
        load(str(f))
    assert [(x.line, x.key) for x in e.value.errors] == [(25, "services.reals")]


def test_twenty_thousand_errors_print_a_screenful(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ld.cf"
    f.write_text(LD + "\tsceduler=rr\n" * 20000)
    err = one_error(capsys, ["check", "-c", str(f)])
    assert len(err.splitlines()) == 102
    assert "... and 19900 more error(s) not shown" in err
    assert err.splitlines()[-1].endswith("invalid (20000 error(s))")


@pytest.mark.parametrize(("name", "text", "line"), [
    ("ipvsd.toml", "x = " + "9" * 5000 + "\n", 1),
    ("ipvsd.toml", TOML + "weight = " + "9" * 5000 + "\n", 4),
    ("ld.cf", LD + "\treal=10.0.1.2:80 masq " + "9" * 5000 + "\n", 4),
    ("ld.cf", "virtual=" + "9" * 5000 + "\n", 1),
    ("ld.cf", LD + "\tcheckport=" + "9" * 5000 + "\n", 4),
    ("keepalived.conf", "virtual_server 10.0.0.1 " + "9" * 5000 + " {\n}\n", 1),
    ("keepalived.conf", VS.replace("  }\n}", "    weight " + "9" * 5000 + "\n  }\n}"), 4),
    ("ld.cf", "virtual=10.0.0.1:ht\0tp\n\treal=10.0.1.1 masq\n", 1),  # NUL in a service name
    ("ld.cf", "virtual=10.0.0.1:8\u00b2\n\treal=10.0.1.1 masq\n", 1),  # a digit int() refuses
    ("keepalived.conf", "virtual_server 10.0.0.1 8\u00b2 {\n}\n", 1),
])
def test_numbers_python_cannot_convert(tmp_path: Path, name: str, text: str, line: int) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(str(f))
    errors = e.value.errors if isinstance(e.value, ConfigErrors) else [e.value]
    assert errors[0].line == line, str(errors[0])
    assert all(len(x.message) < 400 for x in errors)


@pytest.mark.parametrize(("name", "text", "line"), [
    ("keepalived.conf", "! x\ninclude keepalived\0_inc/*.conf\n", 2),
    ("ipvsd.toml", 'include = ["conf\\u0000.d/*.toml"]\n', 1),
])
def test_a_nul_in_an_include_is_an_error(tmp_path: Path, name: str, text: str, line: int) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(str(f))
    assert (e.value.line, e.value.key) == (line, "include")
