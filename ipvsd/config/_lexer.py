"""keepalived.conf syntax: words, quoted strings, `{ }` blocks, `#`/`!` comments and `include`, with locations.

The result is a tree of `Node(keyword, args, children)`, each knowing its file and line, so the keepalived
reader can report `file:line keyword` for anything it rejects. Syntax errors are collected (every one is
reported), and the parse goes on where the structure allows.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import NamedTuple

from ipvsd.config import _source
from ipvsd.config._report import Collector, Where
from ipvsd.errors import ConfigError

MAX_INCLUDE_DEPTH = 8
MAX_BLOCK_DEPTH = 32
"""keepalived itself nests four deep (virtual_server, real_server, checker, url); deeper is a broken file."""
_STACK_LIMIT = MAX_BLOCK_DEPTH + 2  # the top level, the blocks allowed, and the first one too deep (reported)

# A comment to the end of the line, a brace, a quoted string (perhaps unterminated), or a word. Whitespace is
# what finditer skips; `#`/`!` start a comment only at the start of a word, as in keepalived.
_TOKEN = re.compile(r'[#!].*|[{}]|"[^"]*"?|[^\s{}"#!][^\s{}"]*')
_SPECIAL = re.compile(r'[#!{}"]')

_CACHE_LINES = 1 << 16
"""Most distinct line texts kept classified: the lines that repeat come early (a file of unique lines is only
read, not kept twice)."""

_Words = list[tuple[str, bool | None]]
"""A line's tokens: (text, quoted), quoted None for a brace."""


class _Tokens(NamedTuple):
    words: _Words
    unterminated: bool  # a quoted string runs to the end of the line


class _Line(NamedTuple):
    """What a line's text holds, worked out once per distinct text (the line number and the open blocks are
    applied per line)."""

    keyword: str  # the first word of a line of plain words; "" for any other line
    args: list[str]  # the other words, shared by every node of this text: nothing changes a node's args
    opens: bool  # the plain words open a block
    tokens: _Tokens | None  # any other line's tokens for _Parser.line; None for a blank line or a comment


_CLOSE = _Tokens([("}", None)], False)
_SKIPPED = _Line("", [], False, None)
_CLOSING = _Line("", [], False, _CLOSE)


def _classify(line: str) -> _Line:
    # str.split is many times cheaper than the tokenizer: plain words, plain words opening a block, a lone '}'
    # are most lines of most files.
    s = line.strip()
    if not s:
        return _SKIPPED
    if s == "}":
        return _CLOSING
    opens = s[-1] == "{"
    if opens:
        s = s[:-1]
    if not _SPECIAL.search(s):
        plain = s.split()
        if plain and plain[0] != "include":
            return _Line(plain[0], plain[1:], opens, None)
    words: _Words = []
    unterminated = False
    for m in _TOKEN.finditer(line):
        t = m.group()
        c = t[0]
        if c == "#" or c == "!":
            break
        if c == '"':
            if len(t) < 2 or t[-1] != '"':
                unterminated = True
                words.append((t[1:], True))
            else:
                words.append((t[1:-1], True))
        elif c == "{" or c == "}":
            words.append((c, None))
        else:
            words.append((t, False))
    return _Line("", [], False, _Tokens(words, unterminated)) if words else _SKIPPED


@dataclass(slots=True)
class Node:
    """One keyword line, with its block when it opens one (`children` is None for a plain line)."""

    keyword: str
    args: list[str]
    path: str
    line: int
    children: list[Node] | None = None
    where: Where | None = None  # the reader's located form of this node, made once
    # A block written plainly (its opening line, each line of it and its closing '}' a line of plain words, none
    # dropped or included): the lines of its file and the number of its closing line. Its content is then the
    # text of the lines between, one node a line: what the reader compares to find blocks written alike.
    span: tuple[list[str], int] | None = None


class _Parser:
    """Builds the block tree line by line, with an explicit stack (no recursion, so no depth limit of
    Python's own)."""

    def __init__(self, errors: Collector, fast: bool = True, sources: list[list[str]] | None = None) -> None:
        self.errors = errors
        self.sources = sources  # where to keep the lines of each file read, which the spans point into
        self.fast = fast  # False: every line classified anew (the plain path, for tests)
        self.cache: dict[str, _Line] = {}  # line text -> what it holds, for the lines of every file read
        self.root: list[Node] = []
        # open blocks: (the node opening it or None at top level, its children, kept in the tree, `irregular` when
        # it was opened by a line of plain words, else -1)
        self.stack: list[tuple[Node | None, list[Node], bool, int]] = [(None, self.root, True, -1)]
        # Lines that were not plain words (tokenized, included, or dropped past the nesting limit) so far: a block
        # with none inside (the count unchanged from its opening to its closing) is written plainly.
        self.irregular = 0
        # Blocks opened inside the first one too deep: only counted, their content dropped. A stack entry each
        # made a file of braces cost memory and time in proportion (minutes and gigabytes at the size cap).
        self.sunk = 0

    def err(self, message: str, path: str, line: int, key: str | None = None) -> None:
        self.errors.add(ConfigError(message, path=path, line=line, key=key))

    def feed_file(self, path: str, depth: int, seen: tuple[str, ...]) -> None:
        self.feed_text(_source.read_text(path), path, depth, seen)

    def feed_text(self, text: str, path: str, depth: int, seen: tuple[str, ...]) -> None:
        # Each distinct line text is classified once (most lines of a large file repeat verbatim: `weight 1`,
        # `}`); what depends on the position (the line number, the open blocks) is applied per line. The loop
        # keeps the parser's state in locals, written back around the methods that use it.
        cache = self.cache
        keep = self.fast
        stack = self.stack
        top = stack[-1][1]
        sunk = self.sunk
        irregular = self.irregular + 1  # a block cannot span files plainly
        limit, deepest = _STACK_LIMIT, MAX_BLOCK_DEPTH
        lines = text.splitlines()
        if self.sources is not None:
            self.sources.append(lines)
        for no, line in enumerate(lines, 1):
            entry = cache.get(line)
            if entry is None:
                entry = _classify(line)
                if keep and len(cache) < _CACHE_LINES:
                    cache[line] = entry
            keyword, args, opens, tokens = entry
            if keyword:
                if not opens:
                    if not sunk:
                        top.append(Node(keyword, args, path, no))
                elif sunk or len(stack) >= limit:
                    sunk += 1
                    irregular += 1
                else:
                    children: list[Node] = []
                    node = Node(keyword, args, path, no, children)
                    top.append(node)
                    kept = stack[-1][2]
                    deep = len(stack) > deepest
                    if deep and kept:
                        self.err(f"blocks nested deeper than {deepest}", path, no, keyword)
                    stack.append((node, children, kept and not deep, irregular))
                    top = children
                continue
            if tokens is None:
                continue
            if tokens is _CLOSE and (sunk or len(stack) > 1):
                if sunk:
                    sunk -= 1
                else:
                    closed, _, _, mark = stack.pop()
                    if mark == irregular and closed is not None:
                        closed.span = lines, no
                    top = stack[-1][1]
                continue
            irregular += 1
            words, unterminated = tokens
            if unterminated:
                self.err("unterminated quoted string", path, no)
            self.sunk, self.irregular = sunk, irregular
            if words[0] == ("include", False) and not sunk:
                self.include(words, path, no, depth, seen)
            else:
                self.line(words, path, no)
            sunk, irregular = self.sunk, self.irregular + 1
            top = stack[-1][1]
        self.sunk, self.irregular = sunk, irregular + 1

    def line(self, words: _Words, path: str, no: int) -> None:
        current: list[str] = []
        for text, quoted in words:
            if self.sunk:  # inside a dropped block: only its braces count
                if quoted is None:
                    self.sunk += 1 if text == "{" else -1
                continue
            if quoted is not None:
                current.append(text)
                continue
            _, nodes, keep, _ = self.stack[-1]
            if current:
                nodes.append(Node(current[0], current[1:], path, no))
                current = []
            if text == "{":
                if len(self.stack) >= _STACK_LIMIT:  # the nesting error was reported where it crossed the limit
                    self.sunk += 1
                    continue
                if not nodes or nodes[-1].children is not None:
                    self.err("a block needs a keyword before '{'", path, no)
                    self.stack.append((None, [], False, -1))
                    continue
                opener = nodes[-1]
                opener.children = []
                deep = len(self.stack) > MAX_BLOCK_DEPTH
                if deep and keep:
                    self.err(f"blocks nested deeper than {MAX_BLOCK_DEPTH}", path, no, opener.keyword)
                self.stack.append((opener, opener.children, keep and not deep, -1))
            elif len(self.stack) == 1:
                self.err("'}' without a matching '{'", path, no)
            else:
                self.stack.pop()
        if current:
            self.stack[-1][1].append(Node(current[0], current[1:], path, no))

    def include(self, words: _Words, path: str, no: int, depth: int,
                seen: tuple[str, ...]) -> None:
        if len(words) < 2:
            self.err("needs a file name or glob", path, no, "include")
            return
        if depth >= MAX_INCLUDE_DEPTH:
            self.err(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", path, no, "include")
            return
        base = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else os.getcwd()
        for w, _ in words[1:]:
            if "\0" in w:  # glob and every path call raise ValueError on it
                self.err("a file name cannot contain a NUL byte", path, no, "include")
                continue
            pattern = w if os.path.isabs(w) else os.path.join(base, w)
            matches = sorted(glob.glob(pattern))
            if not matches and not glob.has_magic(pattern):
                self.err(f"no such file {w!r}", path, no, "include")
            for m in matches:
                real = os.path.realpath(m)
                if real in seen:
                    self.err(f"{w!r} includes itself", path, no, "include")
                    continue
                try:
                    self.feed_file(m, depth + 1, (*seen, real))
                except ConfigError as e:
                    if e.line is not None:
                        self.errors.add(e)
                    else:  # the included file could not be read at all: point at the line that included it
                        self.err(f"{m}: {e.message}", path, no, "include")

    def finish(self) -> list[Node]:
        for opener, _, keep, _ in reversed(self.stack[1:]):
            if opener is not None and keep:
                self.err("block opened here is never closed (missing '}')", opener.path, opener.line)
        return self.root


def read(path: str, errors: Collector, fast: bool = True, sources: list[list[str]] | None = None) -> list[Node]:
    """The block tree of a keepalived.conf and everything it includes; syntax errors go to `errors`.
    `fast=False` classifies every line anew (the plain path, which the line cache must agree with). The lines of
    each file go to `sources`, when given, for the caller to free when it no longer needs the blocks' spans."""
    p = _Parser(errors, fast, sources)
    p.feed_file(path, 0, (os.path.realpath(path),))
    return p.finish()


def read_text(text: str, path: str, errors: Collector, fast: bool = True,
              sources: list[list[str]] | None = None) -> list[Node]:
    p = _Parser(errors, fast, sources)
    p.feed_text(text, path, 0, ())
    return p.finish()
