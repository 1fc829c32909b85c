"""Services written alike, each shape parsed once (`ipvsd.config._alike`), give the document tomli gives of the
whole text, or None; a file that fails fails with tomli's error at tomli's line."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsd.config import _alike, native
from ipvsd.errors import ConfigError
from tests.unit.config.bigconfig import GENERATORS

HEAD = '# a director\n[settings]\nmetrics_listen = ""\n\n[check_defaults]\ninterval = 2\n\n'


def alike(text: str) -> dict[str, object] | None:
    cut = native._cut(text)
    assert cut is not None, "the test's text can be cut into its services"
    return _alike.loads(text, cut, tomli.loads)


def service(i: int, extra: str = "") -> str:
    return (f'[[services]]\naddress = "10.3.{i // 250}.{i % 250}"\nport = 80\nscheduler = "wrr"\n'
            f'{extra}[[services.checks]]\ntype = "http"\npath = "/health"\n'
            f'[[services.reals]]\naddress = "10.4.{i % 250}.1"\n[[services.reals]]\naddress = "10.4.{i % 250}.2"\n\n')


def test_a_large_generated_file_is_parsed_once_per_shape_and_as_tomli_parses_it() -> None:
    text = GENERATORS["native"](300)
    doc = alike(text)
    assert doc is not None, "services written alike take the shortcut"
    assert doc == tomli.loads(text)
    assert len(doc["services"]) == 300  # type: ignore[arg-type]


def test_each_service_has_its_own_lists_and_tables() -> None:
    doc = alike(HEAD + "".join(service(i) for i in range(5)))
    assert doc is not None
    services = doc["services"]
    assert isinstance(services, list)
    services[0]["reals"][0]["weight"] = 9
    services[0]["checks"].append({})
    assert "weight" not in services[1]["reals"][0] and len(services[1]["checks"]) == 1
    assert services[1]["reals"] is not services[2]["reals"]


# Strings that a plain-string split could misread: inside comments, literal strings, keys, escapes; values of
# other types around them. Every text built of them must give tomli's document, or None.
EXTRAS = [
    "",
    'name = "web"\n',
    'name = ""\n',
    'name = "a # not a comment"\n',
    "name = 'a \"quoted\" literal'\n",
    "name = '\"'  # \"a comment with a quote\n",
    'name = "esc\\"aped"\n',
    'name = "tab\\there"\n',
    'name = "日本語"\n',
    '"quoted key" = "v"\n',
    'tags = ["a", "b", \'c\']\n',
    'meta = { owner = "ops", n = 3 }\n',
    'when = 1979-05-27T07:32:00Z\n',
    'ratio = 0.5\nflag = true\n',
    '# "a comment" only\n',
    'x = "a" # "b"\n',
    'nested = [["a"], { b = "c" }]\n',
    'dotted.key = "d"\n',
    'persistence = { timeout = 300, netmask = "255.255.255.0" }\n',
]

HARD = {e for e in EXTRAS if "'" in e or "\\" in e or "#" in e or e.startswith('"')}  # left to tomli, or may be


@settings(max_examples=300, deadline=None)
@given(extras=st.lists(st.sampled_from(EXTRAS), min_size=1, max_size=40), n=st.integers(1, 60))
def test_generated_services_give_tomlis_document(extras: list[str], n: int) -> None:
    text = HEAD + "".join(service(i, extras[i % len(extras)]) for i in range(n))
    want = tomli.loads(text)
    got = alike(text)
    assert got is None or got == want
    if not set(extras) & HARD:
        assert got is not None, "plain strings take the shortcut"


@settings(max_examples=200, deadline=None)
@given(extra=st.sampled_from(EXTRAS), bad=st.sampled_from(['port = 80 80\n', 'name = "x\n', 'port = 1\nport = 2\n',
                                                           '[services.persistence]\n[services.persistence]\n',
                                                           'name = "\ue000"\n', "[other]\n", 'a = "\x01"\n']),
       at=st.integers(0, 19))
def test_a_bad_service_fails_as_tomli_fails(tmp_path_factory: pytest.TempPathFactory, extra: str, bad: str,
                                            at: int) -> None:
    text = HEAD + "".join(service(i, bad if i == at else extra) for i in range(20))
    path = tmp_path_factory.mktemp("alike") / "ipvsd.toml"
    path.write_text(text)
    try:
        want: object = tomli.loads(text)
    except tomli.TOMLDecodeError as e:
        want = str(e)
    try:
        doc, _, _ = native._parse_file(str(path))
        got: object = doc
    except ConfigError as e:
        got = e.message
        assert isinstance(want, str), e
        assert f"line {e.line}," in want, (e.line, want)
    else:
        assert got == want


def test_services_unlike_each_other_are_left_to_one_parse(tmp_path: Path) -> None:
    text = HEAD + "".join(service(i, f"port{i} = {i}\n") for i in range(200))
    assert alike(text) is None  # every service its own shape: the shortcut gives up
    path = tmp_path / "ipvsd.toml"
    path.write_text(text)
    assert native._parse_file(str(path))[0] == tomli.loads(text)


def test_a_head_that_already_holds_services_is_left_to_one_parse() -> None:
    text = "services = []\n" + "".join(service(i) for i in range(3))
    assert alike(text) is None
