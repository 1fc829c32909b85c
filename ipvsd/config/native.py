"""The native format: a TOML main file plus drop-ins (`conf.d/*.toml`), read with tomllib into a Config.

Conveniences resolved here, before validation: `[check_defaults]` fills every check's unset timing keys; a
service's `forward`/`weight`/`tunnel` are the defaults of its reals; a real's port defaults to the service's;
an IPv4 real written `a->b` expands to one real per address; `"auto"` stands for an unset optional value.
"""

from __future__ import annotations

import glob
import os
import re
import tomllib
from typing import Any

from ipvsd.config import _report
from ipvsd.config._ranges import expand_range
from ipvsd.config._report import ConfigErrors, ConfigWarning, Loc, Where
from ipvsd.config.schema import CheckTiming, Config, _forward
from ipvsd.errors import ConfigError

TOP_KEYS = ("include", "settings", "check_defaults", "lvs_timeouts", "services")
TIMING_KEYS = tuple(CheckTiming.model_fields)
REAL_DEFAULT_KEYS = ("forward", "weight", "tunnel")
_AUTO = "auto"

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


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
            lines.setdefault((*current, key.group(1)), no)
    return lines


def _under(lines: dict[Loc, int]) -> dict[Loc, list[tuple[Loc, int]]]:
    """Every key's line, grouped under each of its prefixes: one pass, so marking stays linear in the file."""
    index: dict[Loc, list[tuple[Loc, int]]] = {}
    for k, line in lines.items():
        for n in range(len(k) + 1):
            index.setdefault(k[:n], []).append((k, line))
    return index


def _first_line(lines: dict[Loc, int], prefix: Loc) -> int | None:
    """The first line of anything under `prefix` (a key, a table, or an element of an array of tables)."""
    found = [line for k, line in lines.items() if k[: len(prefix)] == prefix]
    return min(found) if found else None


def _parse_file(path: str) -> tuple[dict[str, Any], dict[Loc, int]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 at byte {e.start}", path=path) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        raise ConfigError(f"TOML syntax: {msg}", path=path, line=line) from None
    return doc, _line_map(text)


def _auto(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: (None if k in keys and v == _AUTO else v) for k, v in d.items()}


def _check(raw: Any, defaults: dict[str, Any]) -> Any:
    if not isinstance(raw, dict):
        return raw
    return _auto({**defaults, **raw}, ("retry_delay", "warmup"))


def _checks(raw: Any, defaults: dict[str, Any]) -> Any:
    return [_check(c, defaults) for c in raw] if isinstance(raw, list) else raw


def _service(raw: Any, defaults: dict[str, Any], src: Where, lines: dict[Loc, int],
             under: dict[Loc, list[tuple[Loc, int]]], raw_loc: Loc, out_loc: Loc, where: dict[Loc, Where],
             errors: list[ConfigError]) -> Any:
    """Resolve one service's conveniences; record where each output element came from."""
    def mark(out: Loc, src_loc: Loc) -> None:
        for k, line in under.get(src_loc, ()):
            where[(*out, *k[len(src_loc):])] = Where(src.path, line, None)
        if src_loc in lines:
            where[out] = Where(src.path, lines[src_loc], None)

    mark(out_loc, raw_loc)
    if not isinstance(raw, dict):
        return raw
    svc = {k: v for k, v in raw.items() if k not in REAL_DEFAULT_KEYS}
    real_defaults = {k: raw[k] for k in REAL_DEFAULT_KEYS if k in raw}
    if "checks" in svc:
        svc["checks"] = _checks(svc["checks"], defaults)
    reals_raw = raw.get("reals", [])
    if not isinstance(reals_raw, list):
        return svc
    reals: list[Any] = []
    for j, r in enumerate(reals_raw):
        if not isinstance(r, dict):
            reals.append(r)
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
        addrs = [r.get("address")]
        if isinstance(r.get("address"), str) and "->" in r["address"]:
            try:
                addrs = list(expand_range(r["address"]))
            except ValueError as e:
                line = lines.get((*raw_loc, "reals", j, "address"), lines.get((*raw_loc, "reals", j)))
                errors.append(ConfigError(str(e), path=src.path, line=line, key="address"))
                continue
        for a in addrs:
            mark((*out_loc, "reals", len(reals)), (*raw_loc, "reals", j))
            reals.append({**r, "address": a})
    svc["reals"] = reals
    return svc


def read(path: str) -> tuple[Config, list[ConfigWarning]]:
    """Parse and validate a native main file and its drop-ins."""
    warnings: list[ConfigWarning] = []
    doc, lines = _parse_file(path)
    where: dict[Loc, Where] = {}
    for k, line in lines.items():
        if not k or k[0] != "services":
            where[k] = Where(path, line, None)
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise ConfigError("unknown top-level key (check the spelling)", path=path,
                          line=_first_line(lines, (unknown[0],)), key=unknown[0])
    include = doc.pop("include", ["conf.d/*.toml"])
    if isinstance(include, str):
        include = [include]
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise ConfigError("must be a list of glob patterns", path=path, line=lines.get(("include",)), key="include")
    defaults_raw = doc.get("check_defaults", {})
    if not isinstance(defaults_raw, dict):
        raise ConfigError("must be a table", path=path, line=lines.get(("check_defaults",)), key="check_defaults")
    defaults_raw = _auto(defaults_raw, ("retry_delay", "warmup"))
    doc["check_defaults"] = defaults_raw
    timing = {k: v for k, v in defaults_raw.items() if k in TIMING_KEYS}
    if isinstance(doc.get("settings"), dict) and doc["settings"].get("metrics_listen") == "":
        doc["settings"] = {**doc["settings"], "metrics_listen": None}

    sources: list[tuple[str, Any, dict[Loc, int]]] = [(path, doc.get("services", []), lines)]
    base = os.path.dirname(os.path.abspath(path))
    for pattern in include:
        for f in sorted(glob.glob(os.path.join(base, pattern))):
            if os.path.abspath(f) == os.path.abspath(path):
                continue
            sub, sub_lines = _parse_file(f)
            extra = [k for k in sub if k != "services"]
            if extra:
                raise ConfigError("a drop-in may only hold [[services]]", path=f,
                                  line=_first_line(sub_lines, (extra[0],)), key=extra[0])
            sources.append((f, sub.get("services", []), sub_lines))

    services: list[Any] = []
    errors: list[ConfigError] = []
    for src_path, raw_services, src_lines in sources:
        if not isinstance(raw_services, list):
            raise ConfigError("must be an array of tables ([[services]])", path=src_path,
                              line=_first_line(src_lines, ("services",)), key="services")
        under = _under(src_lines)
        for i, raw in enumerate(raw_services):
            services.append(_service(raw, timing, Where(src_path), src_lines, under, ("services", i),
                                     ("services", len(services)), where, errors))
    doc["services"] = services
    try:
        config = _report.validate(doc, where, Where(path))
    except ConfigErrors as e:
        raise ConfigErrors(errors + e.errors) from None
    if errors:
        raise ConfigErrors(errors)
    return config, warnings
