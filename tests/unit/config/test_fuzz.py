"""Fuzz: random mutations of valid files in all three formats give a located ConfigError or a valid Config.

Nothing else may escape. Run with `--hypothesis-show-statistics` to see how many cases ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsd.config import Format, load
from ipvsd.config.schema import Config
from ipvsd.errors import ConfigError
from tests.unit.config.cases import FIXTURES, ROOT

VOCAB = ["{", "}", "=", '"', "#", "!", "->", ":", "[", "]", "\n", "\t", " ", "0", "-1", "65536", "99999999999999999999",
         "1e400", "nan", "real=", "virtual=", "virtual6=", "checktype=", "include", "url", "HTTP_GET", "TCP_CHECK",
         "real_server", "[[services]]", "[[services.reals]]", "[[services.checks]]", "port = ", 'type = "http"',
         "10.0.0.1", "::1", "[2001:db8::1]", "fwmark", "group", "é", "★", "\x00", "\x7f", "\\", "'''", "auto",
         "masq", "gate", "->10.0.0.0", "*", "status_code", "persistence", "{ x = 1 }", "=\"(\""]

FILES: dict[Format, list[Path]] = {
    "ldirectord": [FIXTURES / "seed003_ldirectord.cf", FIXTURES / "ldirectord_features.cf"],
    "keepalived": [FIXTURES / "seed003_keepalived_master.conf", FIXTURES / "keepalived_features.conf",
                   FIXTURES / "seed000_keepalived.conf"],
    "native": [ROOT / "etc" / "ipvsd.toml", FIXTURES / "native_features" / "ipvsd.toml",
               FIXTURES / "native_features" / "conf.d" / "30-mark.toml"],
}

mutation = st.one_of(
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(VOCAB) | st.text(max_size=6)),
    st.tuples(st.just("dup_line"), st.floats(0, 1), st.floats(0, 1)),
    st.tuples(st.just("swap_lines"), st.floats(0, 1), st.floats(0, 1)),
    st.tuples(st.just("drop_line"), st.floats(0, 1), st.just(0)),
)


def mutate(text: str, steps: list[tuple[str, float, object]]) -> str:
    for op, where, arg in steps:
        lines = text.split("\n")
        pos = int(where * len(text))
        if op == "delete":
            assert isinstance(arg, int)
            text = text[:pos] + text[pos + arg:]
        elif op == "insert":
            text = text[:pos] + str(arg) + text[pos:]
        elif op in ("dup_line", "swap_lines", "drop_line") and lines:
            i = min(int(where * len(lines)), len(lines) - 1)
            j = min(int(float(arg) * len(lines)), len(lines) - 1)  # type: ignore[arg-type]
            if op == "dup_line":
                lines.insert(j, lines[i])
            elif op == "swap_lines":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                del lines[i]
            text = "\n".join(lines)
    return text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(FIXTURES / "keepalived_inc", d / "keepalived_inc")
    return d


def _run(fmt: Format, src: Path, steps: list[tuple[str, float, object]], workdir: Path) -> None:
    text = mutate(src.read_text(encoding="utf-8"), steps)
    target = workdir / (src.name if fmt != "native" else "ipvsd.toml")
    target.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config, _ = load(str(target), fmt)
    except ConfigError as e:
        assert e.path, f"unlocated error: {e}"
        assert "\n" not in str(e).strip("\n") or fmt == "native", repr(str(e))
        return
    assert isinstance(config, Config)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


@FUZZ
@given(src=st.sampled_from(FILES["ldirectord"]), steps=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_ldirectord(src: Path, steps: list[tuple[str, float, object]], workdir: Path) -> None:
    _run("ldirectord", src, steps, workdir)


@FUZZ
@given(src=st.sampled_from(FILES["keepalived"]), steps=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_keepalived(src: Path, steps: list[tuple[str, float, object]], workdir: Path) -> None:
    _run("keepalived", src, steps, workdir)


@FUZZ
@given(src=st.sampled_from(FILES["native"]), steps=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_native(src: Path, steps: list[tuple[str, float, object]], workdir: Path) -> None:
    _run("native", src, steps, workdir)
