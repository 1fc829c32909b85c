"""Located diagnostics for the readers: warnings, error lists, and pydantic errors translated to `file:line key`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ipvsd.config.schema import CHECK_TYPES, Config, VirtualService
from ipvsd.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Where:
    """A place in a source file: path, line, and the directive/key an operator wrote there."""

    path: str
    line: int | None = None
    key: str | None = None


@dataclass(frozen=True)
class ConfigWarning:
    """Something accepted but worth telling the operator, located like a ConfigError."""

    message: str
    path: str | None = None
    line: int | None = None
    key: str | None = None
    level: Literal["warning", "info"] = "warning"

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}: {self.level}:{key} {self.message}"


class ConfigErrors(ConfigError):
    """Several configuration errors at once; behaves as the first one, lists them all in `errors`."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.message, path=first.path, line=first.line, key=first.key)
        self.errors = errors


def at(where: Where, message: str) -> ConfigError:
    """A ConfigError located at `where`."""
    return ConfigError(message, path=where.path, line=where.line, key=where.key)


def warn(where: Where, message: str, level: Literal["warning", "info"] = "warning") -> ConfigWarning:
    return ConfigWarning(message, path=where.path, line=where.line, key=where.key, level=level)


def _strip_tags(loc: Loc) -> Loc:
    """Drop discriminated-union tags (`checks, 0, 'http', 'path'` → `checks, 0, path`)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and i > 0 and isinstance(loc[i - 1], int) and part in CHECK_TYPES:
            continue
        out.append(part)
    return tuple(out)


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif err.get("type") == "missing":
        msg = "required"
    elif err.get("type") in ("literal_error", "enum") or "Input should be" in msg:
        msg = msg.replace("Input should be", "must be")
    inp = err.get("input")
    if err.get("type") not in ("missing", "extra_forbidden") and isinstance(inp, str | int | float) \
            and repr(inp) not in msg and len(repr(inp)) < 60:
        msg += f" (got {inp!r})"
    return msg


def locate(loc: Loc, where: Mapping[Loc, Where], default: Where) -> Where:
    """The source place of the longest known prefix of `loc`; the key is the deepest name in `loc` unless the
    source recorded its own directive name at exactly that depth."""
    loc = _strip_tags(loc)
    names = [p for p in loc if isinstance(p, str)]
    for n in range(len(loc), -1, -1):
        found = where.get(loc[:n])
        if found is None:
            continue
        if found.key is None:
            return Where(found.path, found.line, ".".join(names) or None)
        tail = [p for p in loc[n:] if isinstance(p, str)]
        return Where(found.path, found.line, f"{found.key} ({'.'.join(tail)})" if tail else found.key)
    return Where(default.path, default.line, ".".join(names) or None)


def _duplicate_service(data: dict[str, Any]) -> Loc:
    """Where a whole-config error (a service defined twice) points: the second definition."""
    seen: set[Any] = set()
    for i, raw in enumerate(data.get("services") or []):
        try:
            key = VirtualService.model_validate(raw).service_key()
        except (ValidationError, ValueError, TypeError):
            continue
        if key in seen:
            return ("services", i)
        seen.add(key)
    return ()


def validate(data: dict[str, Any], where: Mapping[Loc, Where], default: Where) -> Config:
    """Validate a reader's dict into a Config; every pydantic error becomes a located ConfigError."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = []
        for err in e.errors():
            loc: Loc = tuple(err["loc"])
            if not loc:
                loc = _duplicate_service(data)
            w = locate(loc, where, default)
            errors.append(ConfigError(_message(err), path=w.path, line=w.line, key=w.key))
        raise ConfigErrors(errors) from None
