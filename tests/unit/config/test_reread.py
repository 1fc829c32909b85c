"""Reading a native file again reuses the services whose text did not change, and gives what a whole reading
gives: the same Config, the same warnings, or the same located errors (`ipvsd.config.native.reread`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsd.config import Reading, native, read
from ipvsd.config.schema import Config
from ipvsd.config.to_toml import to_toml
from ipvsd.errors import ConfigError
from tests.unit.config.strategies import configs

HEAD = """# a large director
include = ["conf.d/*.toml"]

[settings]
metrics_listen = ""

[check_defaults]
interval = 2
timeout = 1
"""


def service(i: int, reals: int = 3) -> str:
    out = [f"[[services]]  # number {i}", f'address = "10.3.{i // 250}.{1 + i % 250}"', "port = 80",
           'scheduler = "wrr"', "weight = 2"]
    if i % 3 == 0:
        out += ["[services.persistence]", "timeout = 300"]
    out += ["[[services.checks]]", 'type = "http"', 'path = "/health"', f'receive = "ok{i % 2}"']
    if i % 4 == 0:
        out += ["[[services.reals]]", f'address = "10.4.{i % 250}.1->10.4.{i % 250}.{reals}"']
    else:
        for j in range(reals):
            out += ["[[services.reals]]", f'address = "10.4.{i % 250}.{j + 1}"', f"port = {8000 + j}"]
    return "\n".join(out) + "\n\n"


def text(n: int = 40, edit: Callable[[int, str], str] = lambda i, s: s) -> str:
    return HEAD + "\n" + "".join(edit(i, service(i)) for i in range(n))


def outcome(r: Reading | ConfigError) -> object:
    if isinstance(r, ConfigError):
        return str(r)
    return r.config, [str(w) for w in r.warnings]


def both(path: Path, previous: Reading) -> tuple[Reading | ConfigError, Reading | ConfigError]:
    """(read again from `previous`, read whole) of the file as it is now."""
    out: list[Reading | ConfigError] = []
    for prev in (previous, None):
        try:
            out.append(read(str(path), previous=prev))
        except ConfigError as e:
            out.append(e)
    return out[0], out[1]


@pytest.fixture
def main(tmp_path: Path) -> Path:
    path = tmp_path / "ipvsd.toml"
    path.write_text(text())
    return path


def test_one_service_edited_is_read_alone_and_the_rest_is_kept(main: Path) -> None:
    first = read(str(main))
    assert first.files is not None
    assert first.files[0].cut is not None and len(first.files[0].cut[1]) == 40  # cut once, at the first reading
    main.write_text(text(edit=lambda i, s: s.replace('"10.4.7.3"', '"10.4.7.9"') if i == 7 else s))
    again, whole = both(main, first)
    assert isinstance(again, Reading) and again.files is not None and again.files[0].cut is not None
    assert len(again.files[0].cut[1]) == 40
    assert outcome(again) == outcome(whole)
    assert isinstance(again, Reading)
    assert [str(r.address) for r in again.config.services[7].reals][-1] == "10.4.7.9"
    kept = [i for i, (a, b) in enumerate(zip(again.config.services, first.config.services, strict=True)) if a is b]
    assert kept == [i for i in range(40) if i != 7]  # the same objects: not parsed nor validated again


def test_an_unchanged_file_gives_the_previous_reading(main: Path) -> None:
    first = read(str(main))
    assert read(str(main), previous=first) is first


EDITS: dict[str, Callable[[str], str]] = {
    "a service removed": lambda t: t.replace(service(5), ""),
    "a service added in the middle": lambda t: t.replace(service(5), service(5) + service(77)),
    "a service added at the end": lambda t: t + service(99),
    "two services apart edited": lambda t: t.replace(service(3), service(3, 5)).replace(service(30), service(30, 1)),
    "the first service edited": lambda t: t.replace(service(0), service(0, 7)),
    "a check default changed": lambda t: t.replace("interval = 2", "interval = 3"),
    "a table after the services": lambda t: t + "[lvs_timeouts]\ntcp = 900\n",
    "a multi-line string": lambda t: t.replace('path = "/health"\nreceive = "ok1"',
                                               'path = """/health"""\nreceive = "ok1"', 1),
    "a syntax error in one service": lambda t: t.replace('port = 8001', 'port = 80 01', 1),
    "a semantic error in one service": lambda t: t.replace('scheduler = "wrr"', 'scheduler = "fast"', 1),
    "a service defined twice": lambda t: t.replace(service(5), service(5) + service(5)),
    "a service given the key of another": lambda t: t.replace(service(7), service(7).replace("10.3.0.8", "10.3.0.9")),
    "an IPv6 real in an IPv4 service": lambda t: t.replace('address = "10.4.5.2"', 'address = "2001:db8::2"', 1),
    "a foreign key in one service": lambda t: t.replace('weight = 2', 'wieght = 2', 1),
    "a warning in one service": lambda t: t.replace(service(8),
                                                    service(8).replace('port = 8000', 'port = 8000\nweight = 0')),
    "a table inside a service": lambda t: t.replace(service(6), service(6) + "[settings]\nwatch_config = false\n"),
    "too many reals for a range": lambda t: t.replace('10.4.4.1->10.4.4.3', '10.4.4.1->10.4.200.3'),
    "CRLF line ends": lambda t: t.replace("\n", "\r\n"),
    "an array continued on a line of its own": lambda t: t.replace(
        '[[services.checks]]\ntype = "http"', '[[services.checks]]\ntype = "http"\nexpect_status = [\n200]', 1),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_every_edit_reads_as_a_whole_reading_does(main: Path, name: str) -> None:
    first = read(str(main))
    main.write_text(EDITS[name](main.read_text()))
    again, whole = both(main, first)
    assert outcome(again) == outcome(whole)


def test_a_reading_after_a_rejected_edit_still_reuses(main: Path) -> None:
    first = read(str(main))
    main.write_text(EDITS["a syntax error in one service"](main.read_text()))
    with pytest.raises(ConfigError):
        read(str(main), previous=first)
    main.write_text(text(edit=lambda i, s: s.replace("port = 80\n", "port = 81\n") if i == 2 else s))
    again, whole = both(main, first)
    assert outcome(again) == outcome(whole)
    assert isinstance(again, Reading) and again.config.services[3] is first.config.services[3]


def test_drop_ins_edited_added_and_removed(main: Path) -> None:
    d = main.parent / "conf.d"
    d.mkdir()
    (d / "a.toml").write_text(service(100) + service(101))
    (d / "b.toml").write_text(service(102))
    first = read(str(main))
    assert first.files is not None and len(first.files) == 3
    (d / "a.toml").write_text(service(100) + service(101, 6))
    again, whole = both(main, first)
    assert outcome(again) == outcome(whole)
    assert isinstance(again, Reading) and again.config.services[0] is first.config.services[0]
    (d / "c.toml").write_text(service(103))
    assert outcome(both(main, first)[0]) == outcome(both(main, first)[1])
    (d / "b.toml").unlink()
    assert outcome(both(main, first)[0]) == outcome(both(main, first)[1])
    (d / "a.toml").write_text(service(100) + "[settings]\nwatch_config = true\n")
    assert outcome(both(main, first)[0]) == outcome(both(main, first)[1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(config=configs, other=configs, at=st.integers(0, 3), drop=st.booleans())
def test_generated_edits_read_as_whole_readings_do(config: Config, other: Config, at: int, drop: bool,
                                                   tmp_path: Path) -> None:
    """One configuration's services replaced in part by another's (duplicates and all), its head kept."""
    path = tmp_path / "generated.toml"
    path.write_text(to_toml(config))
    try:
        first = read(str(path))
    except ConfigError:
        return
    services = list(config.services)
    services[at:at + int(drop)] = other.services
    path.write_text(to_toml(config.model_copy(update={"services": tuple(services)})))
    again, whole = both(path, first)
    assert outcome(again) == outcome(whole)


def test_mutated_samples_read_again_as_whole_readings_do(tmp_path: Path) -> None:
    """The reliability fuzzer's mutations of every native sample (etc/ and the fixtures), each read again from
    the sample's own reading: the same Config and warnings, or the same errors."""
    import random

    from scripts.reliability_lab import fuzz_mutate

    samples = fuzz_mutate.corpus()
    native = [s for s in samples if s.format == "native"]
    path = tmp_path / "ipvsd.toml"
    compared = 0
    for i in range(300):
        rng = random.Random(f"reread:{i}")
        sample = rng.choice(native)
        path.write_text(sample.text)
        try:
            first = read(str(path))
        except ConfigError:
            continue
        text, _ = fuzz_mutate.mutate(rng, sample, samples)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        again, whole = both(path, first)
        assert outcome(again) == outcome(whole), (i, text)
        compared += 1
    assert compared > 200


PIECES = ["[[services]]\n", "[[services.reals]]\n", "[settings]\n", 'address = "10.9.9.9"\n', "port = 81\n", "\n",
          "# [[services]]\n", '"""', "x", "[[ services ]]  # c\n", "\r\n"]


@settings(max_examples=400, deadline=None)
@given(at=st.floats(0, 1), length=st.integers(0, 300), piece=st.lists(st.sampled_from(PIECES), max_size=3))
def test_cutting_again_around_an_edit_cuts_as_the_whole_text_is_cut(at: float, length: int, piece: list[str]) -> None:
    """`_recut` cuts only the services around what changed; it must give `_cut`'s pieces for any edit."""
    text = HEAD + "".join(service(i, 2) + "\n" for i in range(6))
    cut = native._cut(text)
    assert cut is not None
    start = int(at * len(text))
    edited = text[:start] + "".join(piece) + text[start + length:]
    assert native._recut(edited, text, *cut) == native._cut(edited)
