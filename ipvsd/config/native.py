"""The native format: a TOML main file plus drop-ins (`conf.d/*.toml`), read with tomli (or tomllib) into a Config.

Conveniences resolved here, before validation: `[check_defaults]` fills every check's unset timing keys; a
service's `forward`/`weight`/`tunnel` are the defaults of its reals; a real's port defaults to the service's;
an IPv4 real written `a->b` expands to one real per address; `"auto"` stands for an unset optional value.
"""

from __future__ import annotations

import bisect
import glob
import itertools
import operator
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ipvsd.config import _alike, _report, _source
from ipvsd.config._ranges import count_range, expand_range
from ipvsd.config._report import ConfigWarning, Loc, Where
from ipvsd.config.reading import Reading, SourceFile
from ipvsd.config.schema import CheckTiming, Config, VirtualService, _forward, defined_twice
from ipvsd.errors import ConfigError

try:
    # The same parser as the standard library's tomllib (its origin), compiled with mypyc: about three times
    # faster on large files (docs/benchmarks.md, "Loading large configurations").
    import tomli as toml
except ImportError:  # a broken install: the pure-Python copy in the standard library
    import tomllib as toml  # type: ignore[no-redef]

TOP_KEYS = ("include", "settings", "check_defaults", "lvs_timeouts", "sync", "sysctl", "announce", "services")
TIMING_KEYS = tuple(CheckTiming.model_fields)
REAL_DEFAULT_KEYS = ("forward", "weight", "tunnel")
_AUTO = "auto"

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")  # a key, perhaps dotted or quoted
_KEY_PARTS = re.compile(_PART)


def _line_map(text: str) -> dict[Loc, int]:
    """Source lines of TOML tables and keys, by the path they have in the parsed document."""
    lines: dict[Loc, int] = {}
    counters: dict[Loc, int] = {}
    current: Loc = ()
    for no, raw in enumerate(text.splitlines(), 1):
        m = _HEADER.match(raw)
        if m:
            names = [n.strip().strip("\"'") for n in m.group(2).split(".")]
            path: list[str | int] = []
            # Walk the header: every array-of-tables name along the way refers to its latest element.
            for i, name in enumerate(names):
                path.append(name)
                prefix = tuple(path)
                last = i == len(names) - 1
                if last and m.group(1) == "[[":
                    counters[prefix] = counters.get(prefix, -1) + 1
                    path.append(counters[prefix])  # nested arrays' counters are keyed by this new index
                elif prefix in counters:
                    path.append(counters[prefix])
            current = tuple(path)
            lines.setdefault(current, no)
            continue
        key = _KEY.match(raw)
        if key:
            parts = [p.strip("\"'") for p in _KEY_PARTS.findall(key.group(1))]
            for n in range(1, len(parts) + 1):  # `a.b = 1` defines table a on this line too
                lines.setdefault((*current, *parts[:n]), no)
    return lines


class _Lines:
    """The line map of one file, built on first use: only an error or a warning needs a line, and building it
    for a valid file cost a fifth of loading a large one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._map: dict[Loc, int] | None = None

    def map(self) -> dict[Loc, int]:
        if self._map is None:
            self._map = _line_map(self.text)
        return self._map

    def get(self, loc: Loc, default: int | None = None) -> int | None:
        return self.map().get(loc, default)


def _first_line(lines: _Lines, prefix: Loc) -> int | None:
    """The first line of anything under `prefix` (a key, a table, or an element of an array of tables)."""
    found = [line for k, line in lines.map().items() if k[: len(prefix)] == prefix]
    return min(found) if found else None


MAX_NESTING = 32
"""Nesting of arrays and inline tables reported as too deep when tomllib runs out of Python's stack on a file."""

_SPECIAL = re.compile(r'#|"""|\'\'\'|["\'\[\]{}]')


def _too_deep(text: str) -> tuple[int, int]:
    """(line, column) where arrays/inline tables first nest deeper than MAX_NESTING, skipping strings and
    comments (only called once tomllib has hit a RecursionError, to locate it)."""
    depth = 0
    pos = 0
    while (m := _SPECIAL.search(text, pos)) is not None:
        tok, i = m.group(), m.start()
        pos = m.end()
        if tok == "#":
            nl = text.find("\n", pos)
            pos = len(text) if nl < 0 else nl
        elif tok[0] in "\"'":
            while True:  # to the closing quote; a basic string's quote may be escaped
                j = text.find(tok, pos)
                if j < 0:
                    pos = len(text)
                    break
                pos = j + len(tok)
                k = j
                while tok[0] == '"' and k > 0 and text[k - 1] == "\\":
                    k -= 1
                if (j - k) % 2 == 0:
                    break
        elif tok in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i)
        else:
            depth = max(0, depth - 1)
    return max(1, text.count("\n")), 1


def _parse_file(path: str) -> tuple[dict[str, Any], _Lines, _Cut | None]:
    """The file's document, its line map, and its text cut into its services (None when it cannot be)."""
    text = _source.read_text(path)
    cut = _cut(text)
    doc: dict[str, Any] | None = None
    if cut is not None:
        try:
            doc = _alike.loads(text, cut, toml.loads)
        except Exception:  # whatever the shortcut trips on (a stack too deep, say), the whole parse decides
            doc = None
    try:
        if doc is None:
            doc = toml.loads(text)
    except toml.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        raise ConfigError(f"TOML syntax: {msg}", path=path, line=line) from None
    except ValueError:  # int() refuses integers of thousands of digits before tomllib can report them
        m = re.search(r"[0-9_]{4300,}", text)
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        raise ConfigError("TOML syntax: an integer of thousands of digits", path=path, line=line) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table: a few hundred levels exhaust the stack (tomli
        # raises RecursionError itself past 400 levels)
        line, column = _too_deep(text)
        raise ConfigError(f"TOML arrays or inline tables nested too deeply (column {column})", path=path,
                          line=line) from None
    return doc, _Lines(text), cut


def _auto(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: (None if k in keys and v == _AUTO else v) for k, v in d.items()}


def _check(raw: Any, defaults: dict[str, Any]) -> Any:
    if not isinstance(raw, dict):
        return raw
    return _auto({**defaults, **raw}, ("retry_delay", "warmup"))


def _checks(raw: Any, defaults: dict[str, Any]) -> Any:
    return [_check(c, defaults) for c in raw] if isinstance(raw, list) else raw


class _Where(Mapping[Loc, Where]):
    """Source places of the merged document's keys, looked up only when an error needs one: output service i
    came from element k of some file's [[services]], and its real j from that element's real r (ranges make
    several reals of one). Building the map eagerly cost as much as parsing in large files."""

    def __init__(self, path: str, lines: _Lines) -> None:
        self.path = path
        self.lines = lines
        self.services: list[tuple[str, _Lines, int, Sequence[int]]] = []  # (file, its lines, k, real map)

    def get(self, loc: Loc, default: Any = None) -> Any:
        if not loc or loc[0] != "services":
            line = self.lines.get(loc)
            return Where(self.path, line, None) if line is not None else default
        if len(loc) < 2 or not isinstance(loc[1], int) or not 0 <= loc[1] < len(self.services):
            return default
        path, lines, k, reals = self.services[loc[1]]
        tail = loc[2:]
        if len(tail) >= 2 and tail[0] == "reals" and isinstance(tail[1], int):
            if not 0 <= tail[1] < len(reals):
                return default
            tail = ("reals", reals[tail[1]], *tail[2:])
        line = lines.get(("services", k, *tail))
        return Where(path, line, None) if line is not None else default

    def __getitem__(self, loc: Loc) -> Where:
        found: Where | None = self.get(loc)
        if found is None:
            raise KeyError(loc)
        return found

    def __iter__(self) -> Iterator[Loc]:  # only lookups are needed; Mapping wants these
        return iter(())

    def __len__(self) -> int:
        return 0


def _service(raw: Any, defaults: dict[str, Any], src: str, lines: _Lines, raw_loc: Loc,
             errors: _report.Collector, budget: list[int]) -> tuple[Any, list[int]]:
    """Resolve one service's conveniences; return it with, for each output real, the index of its source."""
    if not isinstance(raw, dict):
        return raw, []
    svc = {k: v for k, v in raw.items() if k not in REAL_DEFAULT_KEYS}
    real_defaults = {k: raw[k] for k in REAL_DEFAULT_KEYS if k in raw}
    if "checks" in svc:
        svc["checks"] = _checks(svc["checks"], defaults)
    reals_raw = raw.get("reals", [])
    if not isinstance(reals_raw, list):
        return svc, []
    reals: list[Any] = []
    origin: list[int] = []
    for j, r in enumerate(reals_raw):
        if not isinstance(r, dict):
            reals.append(r)
            origin.append(j)
            continue
        own_tunnel = "tunnel" in r
        r = {**real_defaults, **r}
        # a service-wide tunnel describes the tunnelled reals only
        if not own_tunnel and "tunnel" in r and _forward(r.get("forward")) != "tunnel":
            del r["tunnel"]
        if "port" not in r and isinstance(raw.get("port"), int):
            r["port"] = raw["port"]
        if "checks" in r:
            r["checks"] = _checks(r["checks"], defaults)
        address = r.get("address")
        ranged = address if isinstance(address, str) and "->" in address else None  # an IPv4 range `a->b`
        count = 1
        if ranged is not None:
            try:
                count = count_range(ranged)
            except ValueError as e:
                errors.add(ConfigError(str(e), path=src, line=_real_line(lines, raw_loc, j),
                                       key="services.reals.address"))
                continue
        budget[0] += count
        if budget[0] > _report.MAX_REALS:
            raise ConfigError(f"more than {_report.MAX_REALS} real servers in all; ipvsd's limit is "
                              f"{_report.MAX_REALS}", path=src, line=_real_line(lines, raw_loc, j),
                              key="services.reals")
        if ranged is None:  # r is this real's own copy already
            origin.append(j)
            reals.append(r)
            continue
        for a in expand_range(ranged):
            origin.append(j)
            reals.append({**r, "address": a})
    svc["reals"] = reals
    return svc, origin


def _real_line(lines: _Lines, raw_loc: Loc, j: int) -> int | None:
    return lines.get((*raw_loc, "reals", j, "address"), lines.get((*raw_loc, "reals", j)))


def places(path: str) -> Mapping[Loc, Where]:
    """Source places of the main file's keys (not its drop-ins'), by the path they have in the Config."""
    _, lines, _ = _parse_file(path)
    return _Where(path, lines)


def read(path: str) -> tuple[Config, list[ConfigWarning]]:
    """Parse and validate a native main file and its drop-ins."""
    r = reading(path)
    return r.config, r.warnings


def _dropins(path: str, include: list[str]) -> list[str]:
    """The drop-in files `include`'s patterns name, in the order they are read (never the main file)."""
    base, main = os.path.dirname(os.path.abspath(path)), os.path.abspath(path)
    out: list[str] = []
    for pattern in include:
        out += [f for f in sorted(glob.glob(os.path.join(base, pattern))) if os.path.abspath(f) != main]
    return out


def reading(path: str) -> Reading:
    """Parse and validate a native main file and its drop-ins, keeping what `reread` may reuse next time."""
    warnings: list[ConfigWarning] = []
    errors = _report.Collector()
    doc, lines, cut = _parse_file(path)
    where = _Where(path, lines)
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise ConfigError("unknown top-level key (check the spelling)", path=path,
                          line=_first_line(lines, (unknown[0],)), key=unknown[0])
    include = doc.pop("include", ["conf.d/*.toml"])
    if isinstance(include, str):
        include = [include]
    if not isinstance(include, list) or not all(isinstance(i, str) and "\0" not in i for i in include):
        raise ConfigError("must be a list of glob patterns (without NUL bytes)", path=path,
                          line=lines.get(("include",)), key="include")
    defaults_raw = doc.get("check_defaults", {})
    if not isinstance(defaults_raw, dict):
        raise ConfigError("must be a table", path=path, line=lines.get(("check_defaults",)), key="check_defaults")
    defaults_raw = _auto(defaults_raw, ("retry_delay", "warmup"))
    doc["check_defaults"] = defaults_raw
    timing = {k: v for k, v in defaults_raw.items() if k in TIMING_KEYS}
    if isinstance(doc.get("settings"), dict) and doc["settings"].get("metrics_listen") == "":
        doc["settings"] = {**doc["settings"], "metrics_listen": None}

    sources: list[tuple[str, Any, _Lines, _Cut | None]] = [(path, doc.get("services", []), lines, cut)]
    for f in _dropins(path, include):
        try:
            sub, sub_lines, sub_cut = _parse_file(f)
        except ConfigError as e:
            if e.line is not None:
                errors.add(e)
            else:  # the drop-in could not be read at all: point at the include that named it
                errors.add(ConfigError(f"{f}: {e.message}", path=path, line=lines.get(("include",)),
                                       key="include"))
            continue
        extra = [k for k in sub if k != "services"]
        if extra:
            errors.add(ConfigError("a drop-in may only hold [[services]]", path=f,
                                   line=_first_line(sub_lines, (extra[0],)), key=extra[0]))
            continue
        sources.append((f, sub.get("services", []), sub_lines, sub_cut))

    services: list[Any] = []
    budget = [0]
    for src_path, raw_services, src_lines, _ in sources:
        if not isinstance(raw_services, list):
            errors.add(ConfigError("must be an array of tables ([[services]])", path=src_path,
                                   line=_first_line(src_lines, ("services",)), key="services"))
            continue
        for i, raw in enumerate(raw_services):
            if len(services) >= _report.MAX_SERVICES:
                errors.add(ConfigError(f"more than {_report.MAX_SERVICES} services; ipvsd's limit is "
                                       f"{_report.MAX_SERVICES}", path=src_path,
                                       line=src_lines.get(("services", i)), key="services"))
                break
            try:
                svc, origin = _service(raw, timing, src_path, src_lines, ("services", i), errors, budget)
            except ConfigError as e:  # over a limit: stop before expanding any more
                errors.add(e)
                errors.raise_if_any()
            where.services.append((src_path, src_lines, i, origin))
            services.append(svc)
    top = {k: v for k, v in doc.items() if k != "services"}
    doc["services"] = services
    config = _report.validate(doc, where, Where(path), errors)
    files: list[SourceFile] = []
    at = 0
    for src_path, raw_services, src_lines, src_cut in sources:
        n = len(raw_services)
        files.append(SourceFile(src_path, src_lines, config.services[at:at + n],
                                tuple(tuple(o) for _, _, _, o in where.services[at:at + n]), src_cut))
        at += n
    return Reading(config, warnings + _report.lint(config, where, Where(path)), tuple(files), top, timing,
                   tuple(include))


# A file is cut into its services at each `[[services]]` line. That is safe when every table header after the
# first one belongs to a service (`[[services.reals]]`, `[services.persistence]`, ...) and no multi-line string
# could hide a line that looks like a header: then each piece, parsed alone, gives exactly its service.
_SERVICE_START = re.compile(r"^[ \t]*\[\[[ \t]*services[ \t]*\]\][ \t]*(#[^\n]*)?\r?$", re.M)
_OTHER_HEADER = re.compile(r"^[ \t]*\[(?!\[?[ \t]*services[ \t]*(\.|\]\]))", re.M)  # a line that starts a table
# other than a service's (or an array's continuation line: refused all the same, a false alarm costs nothing)


_Cut = tuple[str, tuple[str, ...]]


def _cut(text: str) -> _Cut | None:
    """The text before the first `[[services]]` and each service's text; None when it cannot be cut safely."""
    if "'''" in text or '"""' in text:
        return None
    starts = [m.start() for m in _SERVICE_START.finditer(text)]
    if not starts:
        return None
    if _OTHER_HEADER.search(text, starts[0]):
        return None
    ends = [*starts[1:], len(text)]
    return text[:starts[0]], tuple(text[a:b] for a, b in zip(starts, ends, strict=True))


def _pieces(f: SourceFile) -> tuple[str, tuple[str, ...]] | None:
    """`f`'s text cut into its services (`SourceFile.cut`), or None when it cannot be cut into exactly them."""
    cut = f.cut if f.cut is not None else _cut(f.text)
    return cut if cut is not None and len(cut[1]) == len(f.services) else None


def _recut(text: str, before: str, head: str, chunks: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """`_cut(text)`, given that `before` was cut into `head` and `chunks`: only the services around the part
    that differs are cut again (cutting a whole file of 1,000 services was half of a reread)."""
    n = min(len(text), len(before))
    lo = _common_prefix(text, before, n)
    if lo <= len(head):  # the head, or where the first service begins, changed
        return _cut(text)
    hi = _common_suffix(text, before, n - lo)
    ends = list(itertools.accumulate(map(len, chunks), initial=len(head)))  # ends[i + 1]: chunk i's end
    first = bisect.bisect_right(ends, lo - 1) - 1  # the chunk of the last character before the change...
    last = min(bisect.bisect_right(ends, len(before) - hi) - 1, len(chunks) - 1)  # ...and of the first after
    # Every chunk begins after a newline, so the pieces around the middle are whole lines, and no multi-line
    # string or header can straddle them (the old text had no multi-line string at all).
    a, b = ends[first], ends[last + 1] + len(text) - len(before)
    middle = text[a:b]
    if "'''" in middle or '"""' in middle:
        return None
    starts = [m.start() for m in _SERVICE_START.finditer(middle)]
    if not starts or starts[0] != 0:  # the edit was in the first `[[services]]` line: it may join the one before
        return _cut(text)
    if _OTHER_HEADER.search(middle):
        return None
    cuts = [*starts[1:], len(middle)]
    again = tuple(middle[x:y] for x, y in zip(starts, cuts, strict=True))
    return head, chunks[:first] + again + chunks[last + 1:]


def _common_prefix(a: str, b: str, n: int) -> int:
    """The length of the longest common prefix of `a` and `b`, at most `n` (by halves: each comparison in C)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, n: int) -> int:
    """The length of the longest common suffix of `a` and `b`, at most `n`."""
    la, lb = len(a), len(b)
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _revalidated(previous: Reading, raw: list[Any], fresh: list[int]) -> Config | None:
    """The previous configuration with the services `raw` holds: the kept ones as they are (validated before),
    the changed ones (at the positions `fresh`) validated alone, then what spans services (a service defined
    twice) and what the kernel would refuse of the changed ones; None at the first error, for the whole reading
    to locate it. What the whole validation adds (running the kept models' own validators again) cannot change
    a kept model."""
    _report.share_checks({"services": [raw[i] for i in fresh]})
    made = list(raw)
    try:
        for i in fresh:
            made[i] = VirtualService.model_validate(raw[i])
    except ValueError:  # pydantic's ValidationError is one
        return None
    services = tuple(made)
    if defined_twice(services) is not None:
        return None
    config = previous.config.model_copy(update={"services": services})
    if any(True for _ in _report.kernel_refusals(config, fresh)):
        return None
    return config


def reread(path: str, previous: Reading) -> Reading:
    """Read the configuration again, parsing and validating only the services whose text changed since
    `previous` (an edit of one service in a large file); the result is the one `reading` gives. Anything else
    (a changed head or [check_defaults], a drop-in added or removed, a file that cannot be cut, any error) is
    read whole by `reading`, which also reports the errors, located."""
    try:
        again = _reread(path, previous)
    except Exception:  # whatever the shortcut trips on, the whole reading decides it and reports it
        again = None
    return again if again is not None else reading(path)


def _reread(path: str, previous: Reading) -> Reading | None:
    if previous.files is None or not previous.files or previous.files[0].path != path:
        return None
    names = [path, *_dropins(path, list(previous.include))]
    if names != [f.path for f in previous.files]:
        return None
    files: list[tuple[SourceFile, bool]] = []  # and whether it changed
    raw: list[Any] = []  # every service: the kept model, or a changed one's dict to validate
    fresh: list[int] = []  # the positions of the changed ones in `raw`
    where = _Where(path, previous.files[0].lines)
    changed = False
    for old, name in zip(previous.files, names, strict=True):
        text = _source.read_text(name)
        if text == old.text:
            files.append((old, False))
            raw += old.services
            where.services += zip(itertools.repeat(name), itertools.repeat(old.lines), itertools.count(), old.origins)
            continue
        pieces = _pieces(old)
        if pieces is None:
            return None
        cut = _recut(text, old.text, *pieces)
        if cut is None or cut[0] != pieces[0]:
            return None
        head, chunks = cut
        old_chunks = pieces[1]
        lines = _Lines(text)
        if name == path:
            where.lines = lines
        # The services before the edit, then those after it, are kept as they were: the first chunk that
        # differs from each end, found in C (a chunk the cut kept is the same string object: compared at once).
        both = min(len(chunks), len(old_chunks))
        same = next(itertools.compress(itertools.count(), map(operator.ne, chunks, old_chunks)), both)
        tail = next(itertools.compress(itertools.count(), map(operator.ne, reversed(chunks), reversed(old_chunks))),
                    both)
        tail = min(tail, both - same)
        origins: list[tuple[int, ...]] = list(old.origins[:same])
        raw += old.services[:same]
        for i in range(same, len(chunks) - tail):
            fresh.append(len(raw))
            doc = toml.loads(chunks[i])
            if list(doc) != ["services"] or not isinstance(doc["services"], list) or len(doc["services"]) != 1:
                return None
            errors = _report.Collector()
            svc, origin = _service(doc["services"][0], previous.timing, name, lines, ("services", i), errors, [0])
            if errors:
                return None
            raw.append(svc)
            origins.append(tuple(origin))
        raw += old.services[len(old_chunks) - tail:]
        origins += old.origins[len(old_chunks) - tail:]
        where.services += zip(itertools.repeat(name), itertools.repeat(lines), itertools.count(), origins)
        files.append((SourceFile(name, lines, (), tuple(origins), (head, chunks)), True))
        changed = True
    if not changed:
        return previous
    if len(raw) > _report.MAX_SERVICES:
        return None
    config = _revalidated(previous, raw, fresh)
    if config is None:
        return None
    if sum(map(len, map(operator.attrgetter("reals"), config.services))) > _report.MAX_REALS:
        return None
    at = 0
    kept: list[SourceFile] = []
    for f, new in files:
        n = len(f.origins)
        kept.append(SourceFile(f.path, f.lines, config.services[at:at + n], f.origins, f.cut) if new else f)
        at += n
    return Reading(config, _report.lint(config, where, Where(path)), tuple(kept), previous.top, previous.timing,
                   previous.include)

