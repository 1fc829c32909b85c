"""Configuration: load a native TOML, ldirectord.cf or keepalived.conf file into the one validated `Config`.

`load(path)` sniffs the format (or takes it explicitly), parses and validates, and returns the Config with the
warnings an operator should see. It never touches the kernel and never resolves hostnames. Every failure is a
`ConfigError` located at `file:line` and key (a `ConfigErrors` when there are several).
"""

from __future__ import annotations

import gc
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Literal

from ipvsd.config import _source
from ipvsd.config._report import ConfigErrors, ConfigWarning, Loc, Where, locate
from ipvsd.config.reading import Reading
from ipvsd.config.schema import Config
from ipvsd.errors import ConfigError

Format = Literal["native", "ldirectord", "keepalived"]
FORMATS: tuple[Format, ...] = ("native", "ldirectord", "keepalived")

__all__ = ["FORMATS", "Config", "ConfigErrors", "ConfigWarning", "Format", "Reading", "Where", "load", "place", "read",
           "sniff"]

_KEEPALIVED_WORDS = re.compile(r"^\s*(virtual_server(_group)?|global_defs|vrrp_\w+|real_server|include)\b", re.M)
_NATIVE_TABLE = re.compile(r"^\[\[?\s*(services|settings|check_defaults|lvs_timeouts|sync|sysctl)\s*[\].]", re.M)
_LDIRECTORD_LINE = re.compile(r"^(virtual6?|checktimeout|checkinterval|quiescent|autoreload|logfile|fallback6?|"
                              r"negotiatetimeout|failurecount|emailalert\w*|cleanstop|fork|supervised)\s*=", re.M)


def _named(path: str) -> Format | None:
    """The format the file name says, if it says one."""
    name = os.path.basename(path).lower()
    if name.endswith(".toml"):
        return "native"
    if name.endswith(".cf") or "ldirectord" in name:
        return "ldirectord"
    if "keepalived" in name:
        return "keepalived"
    return None


def sniff_text(text: str, path: str = "") -> Format:
    """Guess the format from the file name, then the content."""
    if (named := _named(path)) is not None:
        return named
    if _KEEPALIVED_WORDS.search(text) or "{" in text:
        return "keepalived"
    if _LDIRECTORD_LINE.search(text):
        return "ldirectord"
    if _NATIVE_TABLE.search(text):  # no need to parse a whole (large) file to know it is TOML
        return "native"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "ldirectord"
    return "native"


def sniff(path: str) -> Format:
    """The format of the file at `path` (refusing, like `load`, anything but a regular file, when the content is
    read: a name that says the format needs no read, and the reader that follows refuses the same)."""
    if (named := _named(path)) is not None:
        return named
    head = _source.read_bytes(path, head=1 << 20).removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    return sniff_text(head, path)


def load(path: str, format: Format | None = None) -> tuple[Config, list[ConfigWarning]]:
    """Read, validate and return the configuration at `path` with its warnings."""
    r = read(path, format)
    return r.config, r.warnings


def read(path: str, format: Format | None = None, previous: Reading | None = None) -> Reading:
    """Read and validate the configuration at `path`; with the `previous` reading of the same native file, parse
    and validate again only the services whose text changed (`ipvsd.config.native.reread`: the same result)."""
    # A large file makes millions of objects that live until the end of the load: the cyclic collector's
    # full passes over them made loading grow faster than the file. Nothing the readers make needs it.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read(path, format, previous)
    finally:
        if paused:
            gc.enable()


def _read(path: str, format: Format | None, previous: Reading | None) -> Reading:
    fmt = format or sniff(path)
    if fmt == "native":
        from ipvsd.config import native
        return native.reread(path, previous) if previous is not None else native.reading(path)
    if fmt == "ldirectord":
        from ipvsd.config import ldirectord
        return Reading(*ldirectord.read(path))
    if fmt == "keepalived":
        from ipvsd.config import keepalived
        return Reading(*keepalived.read(path))
    raise ConfigError(f"unknown format {fmt!r} (native, ldirectord or keepalived)", path=path)


def place(path: str, format: Format, loc: Loc) -> Where:
    """Where the key at `loc` of a loaded Config (`("sync", "interface")`) was written in the file at `path`, for
    an error found after loading (`ipvsd check`'s host checks). Reads the file again: only a failure needs it."""
    where: Mapping[Loc, Where] = {}
    try:
        if format == "native":
            from ipvsd.config import native
            where = native.places(path)
        elif format == "keepalived":
            from ipvsd.config import keepalived
            where = keepalived.places(path)
    except ConfigError:
        pass  # the file changed since it was loaded: the file's name is all there is to say
    return locate(loc, where, Where(path))
