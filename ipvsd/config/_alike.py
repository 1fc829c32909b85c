"""Native files whose services are written alike: each shape of `[[services]]` text parsed once by tomli.

A large native file is mostly services that differ only in their strings (addresses, names). Each service's
text (the file cut at its `[[services]]` lines, as `native._cut` does) is split at its plain double-quoted
strings; the text around them is the service's shape. The first service of a shape is parsed with its strings
replaced by numbered markers, and the result, with a slot where each marker was, fills every later service of
that shape with its own strings. The document is the one tomli makes of the whole text, or None, for the caller
to parse the whole text (and report its errors): nothing here ever reports or decides an error.

Why this is the same document:
- the cut keeps each service's text whole and alone (no multi-line string, no table header after the first
  `[[services]]` other than a service's), so the whole text's services are its pieces' services, in order;
- a string taken out holds no quote, backslash or control character, so its value is its text;
- a marker counts only where the shape's parse has it as a whole value, each marker exactly once and in no key:
  then the marker's quotes were a string's own quotes (not text inside a comment, a key or another string), and
  putting the string back changes that value alone. The file holds no marker character of its own.
- the slots hold fresh lists and dicts for every service; only immutable values (str, int, float, bool, dates)
  are shared among services.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

_MARK = "\ue000"  # a private-use character: valid in a TOML string, absent from the files read this way
_STRING = re.compile(r'"([^"\\\x00-\x1f\x7f]*)"')  # a plain basic string, no escapes: its value is its text
_NUMBERS = (int, float)  # bool is an int

Fill = Callable[[list[str]], Any]


def loads(text: str, cut: tuple[str, tuple[str, ...]], parse: Callable[[str], dict[str, Any]]
          ) -> dict[str, Any] | None:
    """`parse(text)` made from `cut` (the text before the first service and each service's text) parsing each
    shape once; None when a shape does not qualify or too many services have a shape of their own."""
    if _MARK in text:
        return None
    head, chunks = cut
    try:
        doc = parse(head)
    except ValueError:  # tomli's error is one: the whole text's parse will report it
        return None
    if "services" in doc:
        return None
    shapes: dict[str, Fill] = {}
    services: list[Any] = []
    misses = 0
    for n, chunk in enumerate(chunks):
        parts = _STRING.split(chunk)
        values = parts[1::2]
        key = _MARK.join(parts[0::2])
        fill = shapes.get(key)
        if fill is None:
            misses += 1
            if misses > 16 + n // 4:  # services unlike each other: one parse of the whole text is cheaper
                return None
            made = _shape(parts, parse)
            if made is None:
                return None
            fill = shapes[key] = made
        services.append(fill(values))
    doc["services"] = services
    return doc


def _shape(parts: list[str], parse: Callable[[str], dict[str, Any]]) -> Fill | None:
    """The filler of one shape: its text parsed with numbered markers, each marker's place made a slot."""
    marked = [parts[0]]
    for i in range(1, len(parts), 2):
        marked += [f'"{_MARK}{i // 2}"', parts[i + 1]]
    try:
        doc = parse("".join(marked))
    except ValueError:  # tomli's error is one: the whole text's parse will report it
        return None
    if list(doc) != ["services"] or not isinstance(doc["services"], list) or len(doc["services"]) != 1:
        return None
    seen: set[int] = set()
    fill = _compile(doc["services"][0], seen)
    return fill if fill is not None and len(seen) == len(parts) // 2 else None


def _compile(node: Any, seen: set[int]) -> Fill | None:
    """A function making `node` afresh with each slot filled; None when a marker is not a whole value."""
    if isinstance(node, str):
        if _MARK not in node:
            return _const(node)
        index = node[1:]
        if node[0] != _MARK or not index.isdecimal() or int(index) in seen:
            return None
        seen.add(int(index))
        slot: Fill = operator.itemgetter(int(index))
        return slot
    if isinstance(node, dict):
        base: dict[str, Any] = {}
        parts: list[tuple[str, Fill]] = []
        for k, v in node.items():
            if _MARK in k:
                return None
            if isinstance(v, _NUMBERS) or (isinstance(v, str) and _MARK not in v):
                base[k] = v
                continue
            f = _compile(v, seen)
            if f is None:
                return None
            base[k] = None  # keeps the key's place: the document's order is the text's
            parts.append((k, f))
        return lambda values: _dict(base, parts, values)
    if isinstance(node, list):
        items = [_compile(v, seen) for v in node]
        if any(f is None for f in items):
            return None
        fills = [f for f in items if f is not None]
        return lambda values: [f(values) for f in fills]
    if type(node).__hash__ is None:  # anything else tomli makes is a date or time: immutable
        return None
    return _const(node)


def _const(value: Any) -> Fill:
    def const(values: list[str]) -> Any:
        return value
    return const


def _dict(base: dict[str, Any], parts: list[tuple[str, Fill]], values: list[str]) -> dict[str, Any]:
    d = base.copy()
    for k, f in parts:
        d[k] = f(values)
    return d
