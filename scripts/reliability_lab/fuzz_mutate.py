"""Mutations of real configuration files for the fuzz scenario: byte, line and token edits, seeded and replayable."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ipvsd.config import Format, sniff

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "unit" / "config" / "fixtures"

# The name a mutated file of each format is loaded under: the name decides the format when sniffed (as
# `ipvsd check` does), and the directory around it holds the include targets the samples name.
CASE_NAME: dict[Format, str] = {"native": "ipvsd.toml", "ldirectord": "ldirectord.cf", "keepalived": "keepalived.conf"}

# Directories the samples include from, copied next to each case so an include resolves as in the repository.
INCLUDE_DIRS: dict[str, Path] = {"conf.d": FIXTURES / "native_features" / "conf.d",
                                 "keepalived_inc": FIXTURES / "keepalived_inc"}

HOSTILE: tuple[str, ...] = (
    "9" * 30, "9" * 5000, "-1", "-0", "0", "65536", "4294967296", "18446744073709551616", "1e400", "-1e400",
    "nan", "NaN", "inf", "-inf", "0x10", "1_000", "0.0000001", "1e-400",
    "\x00", "\x7f", "\x1b[31m", "\r", "\r\n", "\t", "\u2028", "\ufeff", "é", "★", "\U0001f600", "8\u00b2",
    "\u0663", "ﬀ", "\udcff",
    "{", "}", "[", "]", "[[", "]]", "=", '"', "'", "'''", '"""', "\\", "#", "!", ":", ",", "->", "*", "?",
    "[" * 300, "{" * 300, "x { " * 100, "{a = " * 200,
    "a" * 20000, "x" * 200 + " = 1",
    "include /dev/zero", "include /etc/shadow", "include .", "include keepalived.conf", "include **/*",
    "include /nonexistent/*.conf", "include ../../../../etc/passwd", "include \x00x",
    'include = ["/dev/zero"]', 'include = ["ipvsd.toml"]', 'include = ["*"]', 'include = ["**/*.toml"]',
    'include = "conf.d/*.toml"', 'include = [1]', 'include = ["/proc/self/mem"]',
    "[[services]]", "[[services.reals]]", "[[services.checks]]", "[settings]", "[sync]", "[announce]",
    "[sysctl]", "[check_defaults]", 'port = 0', 'port = 70000', 'weight = -5', 'address = "::"',
    'address = "256.1.1.1"', 'address = "10.0.0.1->10.255.255.255"', 'scheduler = "nope"', 'type = "external"',
    "virtual=", "real=", "virtual6=", "checktype=", "service=", "scheduler=", "fallback=", "checkport=0",
    "real=10.0.0.1->10.0.255.255:80 masq", "virtual=[::1]:80", "request=", "receive=(",
    "virtual_server", "real_server", "virtual_server_group", "HTTP_GET", "TCP_CHECK", "MISC_CHECK", "url",
    "status_code 999", "digest", "delay_loop 0", "weight 99999999999", "lvs_sched", "persistence_timeout -1",
    "10.0.0.0/8 80", "10.0.0.1-255 80", "fwmark 4294967296", "misc_path /bin/sh", "alpha", "quorum 0",
    "::1", "[2001:db8::1]", "fe80::1%eth0", "10.0.0.1", "0.0.0.0", "255.255.255.255", "localhost", "a..b",
)


@dataclass(frozen=True)
class Sample:
    """One file of the corpus: its format and its text."""

    path: Path
    format: Format
    text: str


def corpus() -> list[Sample]:
    """The real samples (etc/) and every fixture configuration, each with the format `ipvsd check` sniffs."""
    paths = [ROOT / "etc" / "ipvsd.toml", ROOT / "etc" / "ldirectord.cf", ROOT / "etc" / "keepalived.conf"]
    paths += sorted((ROOT / "etc" / "conf.d").glob("*.toml"))
    # the HA pair's, the scale-out director's and seed 000's: the samples with [sync], [announce] and [sysctl]
    paths += sorted(p for d in ("ha", "scaleout", "seed000") for p in (ROOT / "etc" / d).glob("*")
                    if p.name == "ipvsd.toml" or p.name.startswith("keepalived"))
    paths += sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.suffix in (".cf", ".conf", ".toml"))
    out = []
    for p in paths:
        text = p.read_text(encoding="utf-8")
        if p.parent.name == "conf.d":  # a drop-in loaded as the main file must not include its siblings (and itself)
            text = "include = []\n" + text
        out.append(Sample(p, sniff(str(p)), text))
    return out


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _pick_line(rng: random.Random, lines: list[str]) -> int:
    return rng.randrange(len(lines)) if lines else 0


def _token(rng: random.Random, donors: list[Sample]) -> str:
    """A hostile token, or a random word of another sample, or random characters."""
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(HOSTILE)
    if roll < 0.85:
        words = rng.choice(donors).text.split()
        return rng.choice(words) if words else ""
    return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x3000)))) for _ in range(rng.randint(1, 8)))


def _m_delete_bytes(rng: random.Random, text: str, donors: list[Sample]) -> str:
    pos = rng.randrange(len(text) + 1)
    return text[:pos] + text[pos + rng.randint(1, 40):]


def _m_insert_token(rng: random.Random, text: str, donors: list[Sample]) -> str:
    pos = rng.randrange(len(text) + 1)
    return text[:pos] + _token(rng, donors) + text[pos:]


def _m_replace_word(rng: random.Random, text: str, donors: list[Sample]) -> str:
    """A value or key replaced by a hostile token: the edit most likely to reach the validators."""
    lines = _lines(text)
    i = _pick_line(rng, lines)
    words = lines[i].split(" ") if lines else []
    if not words:
        return text
    j = rng.randrange(len(words))
    word = words[j]
    if "=" in word and rng.random() < 0.7:  # keep the key of `key=value` (ldirectord) or `key = value`
        key, _, _ = word.partition("=")
        words[j] = f"{key}={_token(rng, donors)}"
    else:
        words[j] = _token(rng, donors)
    lines[i] = " ".join(words)
    return "\n".join(lines)


# Values that parse (a TOML string, number, array or table; a word in the other formats) and so reach the
# validators: the edge cases each value's checks must refuse in a located error.
VALUES: tuple[str, ...] = (
    '""', '" "', '"\\u0000"', '"a\\u0000b"', '"lo\\u0000"', '"' + "\\u00e9" * 8 + '"',
    '"\\u202e"', '"\\t"', '"\\n"', '"/"', '"."', '".."', '"a:b"', '"x"', '"' + "x" * 5000 + '"', '"-1"', '"nan"',
    '"10.0.0.1"', '"::"', '"::ffff:10.0.0.1"', '"fe80::1%lo"', '"10.0.0.1/33"', '"10.0.0.1->10.0.0.0"',
    '"256.0.0.1"', '"0.0.0.0"', '"[::1]"', '"*"', '"(("', '"a{1000000000}"', '"(a+)+$"', '"\\\\"',
    "0", "-0", "-1", "1", "255", "256", "65535", "65536", "4294967295", "4294967296", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "1e308", "1e-308", "inf", "-inf", "nan", "+nan", "0.5",
    "1.0e1000", "0x7fffffff", "0o777", "0b1", "true", "false", "[]", "[[]]", "[1, 2]", '["a", 1]', "{}",
    "{ a = 1 }", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27",
)
# The same edge cases written raw, for the formats without quoting (ldirectord, keepalived).
RAW_VALUES: tuple[str, ...] = ("a\0b", "lo\0", "\0", "é" * 8, "\u202e", "a\x7fb", "\x1b[2J", "\ufeff", "x" * 5000)


def _m_replace_value(rng: random.Random, text: str, donors: list[Sample]) -> str:
    """The value of a `key = value`, `key=value` or `keyword value` line replaced by an edge-case value."""
    lines = _lines(text)
    candidates = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith(("#", "!", "["))]
    if not candidates:
        return text
    i = rng.choice(candidates)
    line = lines[i]
    value = rng.choice(VALUES)
    if "=" in line:
        key, _, _ = line.partition("=")
        if key.endswith(" "):  # TOML
            lines[i] = f"{key}= {value}"
        else:
            lines[i] = f"{key}={rng.choice((value.strip(chr(34)), rng.choice(RAW_VALUES)))}"
    else:
        value = rng.choice((value, rng.choice(RAW_VALUES)))
        words = line.split()
        if len(words) > 1:  # keepalived: keep the keyword, replace one argument
            j = rng.randrange(1, len(words))
            words[j] = value.strip('"')
            indent = line[:len(line) - len(line.lstrip())]
            lines[i] = indent + " ".join(words)
    return "\n".join(lines)


def _m_flip_byte(rng: random.Random, text: str, donors: list[Sample]) -> str:
    if not text:
        return text
    pos = rng.randrange(len(text))
    return text[:pos] + chr(ord(text[pos]) ^ (1 << rng.randrange(7))) + text[pos + 1:]


def _m_delete_line(rng: random.Random, text: str, donors: list[Sample]) -> str:
    lines = _lines(text)
    if lines:
        del lines[_pick_line(rng, lines)]
    return "\n".join(lines)


def _m_dup_line(rng: random.Random, text: str, donors: list[Sample]) -> str:
    lines = _lines(text)
    i = _pick_line(rng, lines)
    if lines:
        lines[i:i] = [lines[i]] * rng.choice((1, 1, 2, 50))
    return "\n".join(lines)


def _m_swap_lines(rng: random.Random, text: str, donors: list[Sample]) -> str:
    lines = _lines(text)
    if len(lines) > 1:
        i, j = _pick_line(rng, lines), _pick_line(rng, lines)
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _m_splice(rng: random.Random, text: str, donors: list[Sample]) -> str:
    """A run of lines from another sample (any format) dropped into this one."""
    lines, other = _lines(text), _lines(rng.choice(donors).text)
    a = _pick_line(rng, other)
    chunk = other[a:a + rng.randint(1, 12)]
    i = _pick_line(rng, lines)
    lines[i:i] = chunk
    return "\n".join(lines)


def _m_truncate(rng: random.Random, text: str, donors: list[Sample]) -> str:
    return text[:rng.randrange(len(text) + 1)]


def _m_long_line(rng: random.Random, text: str, donors: list[Sample]) -> str:
    lines = _lines(text)
    i = _pick_line(rng, lines)
    if lines:
        lines[i] = lines[i] + rng.choice((" ", "", "x")) * rng.choice((1000, 100_000)) + rng.choice(("x", "1", ""))
    return "\n".join(lines)


def _m_nest(rng: random.Random, text: str, donors: list[Sample]) -> str:
    """Deep nesting: brackets, braces or inline tables, balanced or not."""
    depth = rng.choice((50, 1000, 20_000))
    opener, closer = rng.choice((("[", "]"), ("{", "}"), ("x {\n", "}\n"), ("{a = ", "}")))
    balanced = rng.random() < 0.5
    lines = _lines(text)
    i = _pick_line(rng, lines)
    lines.insert(i, "x = " + opener * depth + ("1" + closer * depth if balanced else ""))
    return "\n".join(lines)


def _m_include(rng: random.Random, text: str, donors: list[Sample]) -> str:
    """An include line in the file's own syntax (or another's), naming something it should not read."""
    target = rng.choice(("/dev/zero", "/dev/null", "/proc/self/mem", ".", "..", "*", "**", "conf.d", "conf.d/*",
                         "keepalived_inc/*.conf", "ipvsd.toml", "keepalived.conf", "/nonexistent", "\x00",
                         "a" * 5000, "[", "{", "/etc/*/*/*/*"))
    line = rng.choice((f"include {target}", f'include = ["{target}"]', f"include = {target}",
                       f"include = [\"{target}\", \"{target}\"]"))
    lines = _lines(text)
    lines.insert(_pick_line(rng, lines), line)
    return "\n".join(lines)


Mutation = Callable[[random.Random, str, list[Sample]], str]
MUTATIONS: dict[str, Mutation] = {
    "delete_bytes": _m_delete_bytes, "insert_token": _m_insert_token, "replace_word": _m_replace_word,
    "flip_byte": _m_flip_byte, "delete_line": _m_delete_line, "dup_line": _m_dup_line, "swap_lines": _m_swap_lines,
    "splice": _m_splice, "truncate": _m_truncate, "long_line": _m_long_line, "nest": _m_nest,
    "include": _m_include, "replace_value": _m_replace_value,
}
# Edits that keep most of the file valid are drawn more often: they reach past the parser into validation.
WEIGHTS: dict[str, int] = {"replace_value": 10, "replace_word": 6, "insert_token": 5, "delete_line": 3, "dup_line": 3,
                           "swap_lines": 3, "splice": 3, "delete_bytes": 2, "flip_byte": 2, "truncate": 1,
                           "long_line": 1, "nest": 1, "include": 2}


def mutate(rng: random.Random, sample: Sample, donors: list[Sample]) -> tuple[str, list[str]]:
    """One case: 1 to 4 mutations of `sample`; returns the text and the names of the edits applied."""
    names = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=rng.choice((1, 1, 2, 3, 4)))
    text = sample.text
    for name in names:
        text = MUTATIONS[name](rng, text, donors)
    return text, names
