"""Fuzz: random mutations of valid files, and token soup, in all three formats give a located ConfigError or a
valid Config. Nothing else may escape, and nothing may hang.

The unit suite runs IPVSD_FUZZ_EXAMPLES (default 200) cases per test; a long run by hand:
`IPVSD_FUZZ_EXAMPLES=20000 IPVSD_FUZZ_REPORT=1 .venv/bin/python -m pytest tests/unit/config/test_fuzz.py -s`
prints, per reader, how many inputs loaded, failed with a located error, or failed with an error lacking a line.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsd.config import ConfigErrors, Format, load
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


OUTCOMES: Counter[tuple[str, str]] = Counter()
SLOWEST: dict[str, float] = {}
HANG_SECONDS = 20


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if os.environ.get("IPVSD_FUZZ_REPORT"):
        for (fmt, outcome), n in sorted(OUTCOMES.items()):
            print(f"fuzz {fmt}: {outcome} {n}")
        for fmt, t in sorted(SLOWEST.items()):
            print(f"fuzz {fmt}: slowest input {t:.2f}s")


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"a load took more than {HANG_SECONDS}s")


def _run_text(fmt: Format, text: str, name: str, workdir: Path) -> None:
    target = workdir / name
    target.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(fmt, target)


def _load(fmt: Format, target: Path) -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    start = time.perf_counter()
    try:
        config, _ = load(str(target), fmt)
    except ConfigError as e:
        errors = e.errors if isinstance(e, ConfigErrors) else [e]
        for err in errors:
            assert err.path, f"error without a file: {err}"
            assert err.line is not None or err.key, f"error without a line or key: {err}"
            assert "\n" not in str(err), repr(str(err))
        unlined = any(err.line is None for err in errors)
        OUTCOMES[fmt, "error (some without a line, key only)" if unlined else "error, located"] += 1
        return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        SLOWEST[fmt] = max(SLOWEST.get(fmt, 0.0), time.perf_counter() - start)
    assert isinstance(config, Config)
    OUTCOMES[fmt, "loaded"] += 1


def _run(fmt: Format, src: Path, steps: list[tuple[str, float, object]], workdir: Path) -> None:
    text = mutate(src.read_text(encoding="utf-8"), steps)
    _run_text(fmt, text, src.name if fmt != "native" else "ipvsd.toml", workdir)


FUZZ = settings(max_examples=int(os.environ.get("IPVSD_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
NAMES: dict[Format, str] = {"ldirectord": "soup.cf", "keepalived": "keepalived.conf", "native": "ipvsd.toml"}
soup = st.lists(st.sampled_from(VOCAB) | st.text(max_size=4), max_size=60).map("".join)


@FUZZ
@given(fmt=st.sampled_from(["ldirectord", "keepalived", "native"]), text=soup)
def test_fuzz_token_soup(fmt: Format, text: str, workdir: Path) -> None:
    _run_text(fmt, text, NAMES[fmt], workdir)


@FUZZ
@given(fmt=st.sampled_from(["ldirectord", "keepalived", "native"]), data=st.binary(max_size=200))
def test_fuzz_bytes(fmt: Format, data: bytes, workdir: Path) -> None:
    target = workdir / NAMES[fmt]
    target.write_bytes(data)
    _load(fmt, target)


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
