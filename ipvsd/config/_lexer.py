"""keepalived.conf syntax: words, quoted strings, `{ }` blocks, `#`/`!` comments and `include`, with locations.

The result is a tree of `Node(keyword, args, children)`, each knowing its file and line, so the keepalived
reader can report `file:line keyword` for anything it rejects.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ipvsd.errors import ConfigError

MAX_INCLUDE_DEPTH = 8


@dataclass
class Node:
    """One keyword line, with its block when it opens one (`children` is None for a plain line)."""

    keyword: str
    args: list[str]
    path: str
    line: int
    children: list[Node] | None = None


@dataclass(frozen=True)
class _Tok:
    text: str  # a word, "{", "}", or "\n" for end of line
    path: str
    line: int
    quoted: bool = False


def _words(line: str, path: str, no: int) -> Iterator[_Tok]:
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch.isspace():
            i += 1
        elif ch in "#!":
            return
        elif ch in "{}":
            yield _Tok(ch, path, no)
            i += 1
        elif ch == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise ConfigError("unterminated quoted string", path=path, line=no)
            yield _Tok(line[i + 1:end], path, no, quoted=True)
            i = end + 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '{}"':
                j += 1
            yield _Tok(line[i:j], path, no)
            i = j


def _tokens(path: str, depth: int, seen: tuple[str, ...]) -> Iterator[_Tok]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 at byte {e.start}", path=path) from None
    yield from tokens_of(text, path, depth, seen)


def tokens_of(text: str, path: str, depth: int = 0, seen: tuple[str, ...] = ()) -> Iterator[_Tok]:
    """Tokens of `text`, with `include` lines replaced by the included files' tokens."""
    for no, line in enumerate(text.splitlines(), 1):
        words = list(_words(line, path, no))
        if words and words[0].text == "include" and not words[0].quoted:
            yield from _include(words, path, no, depth, seen)
            continue
        yield from words
        yield _Tok("\n", path, no)


def _include(words: list[_Tok], path: str, no: int, depth: int, seen: tuple[str, ...]) -> Iterator[_Tok]:
    if len(words) < 2:
        raise ConfigError("needs a file name or glob", path=path, line=no, key="include")
    if depth >= MAX_INCLUDE_DEPTH:
        raise ConfigError(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", path=path, line=no, key="include")
    base = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else os.getcwd()
    for w in words[1:]:
        pattern = w.text if os.path.isabs(w.text) else os.path.join(base, w.text)
        matches = sorted(glob.glob(pattern))
        if not matches and not glob.has_magic(pattern):
            raise ConfigError(f"no such file {w.text!r}", path=path, line=no, key="include")
        for m in matches:
            if not os.path.isfile(m):
                raise ConfigError(f"{m!r} is not a regular file", path=path, line=no, key="include")
            real = os.path.realpath(m)
            if real in seen:
                raise ConfigError(f"{w.text!r} includes itself", path=path, line=no, key="include")
            yield from _tokens(m, depth + 1, (*seen, real))


def parse(tokens: Iterator[_Tok], path: str) -> list[Node]:
    """Build the block tree."""
    toks = list(tokens)
    pos = 0

    def block(opener: _Tok | None) -> list[Node]:
        nonlocal pos
        nodes: list[Node] = []
        words: list[_Tok] = []

        def flush() -> None:
            if words:
                nodes.append(Node(words[0].text, [w.text for w in words[1:]], words[0].path, words[0].line))
                words.clear()

        while pos < len(toks):
            t = toks[pos]
            pos += 1
            if t.text == "\n" and not t.quoted:
                flush()
            elif t.text == "{" and not t.quoted:
                if words:
                    flush()
                elif not nodes or nodes[-1].children is not None:
                    raise ConfigError("a block needs a keyword before '{'", path=t.path, line=t.line)
                nodes[-1].children = block(t)
            elif t.text == "}" and not t.quoted:
                flush()
                if opener is None:
                    raise ConfigError("'}' without a matching '{'", path=t.path, line=t.line)
                return nodes
            else:
                words.append(t)
        flush()
        if opener is not None:
            raise ConfigError("block opened here is never closed (missing '}')", path=opener.path,
                              line=opener.line)
        return nodes

    return block(None)


def read(path: str) -> list[Node]:
    """The block tree of a keepalived.conf and everything it includes."""
    return parse(_tokens(path, 0, (os.path.realpath(path),)), path)


def read_text(text: str, path: str) -> list[Node]:
    return parse(tokens_of(text, path), path)
