"""Reading config files safely: regular files only, a size cap, never blocking, UTF-8 errors located by line."""

from __future__ import annotations

import os
import stat

from ipvsd.errors import ConfigError
from ipvsd.privileges import unreadable

MAX_FILE_BYTES = 64 << 20
"""Largest config file (or included file) read; real configs are far below, /dev/zero is not."""


def _check_regular(path: str, st: os.stat_result, key: str | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"cannot read: {kind}", path=path, key=key)
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"file of {st.st_size} bytes is larger than the {MAX_FILE_BYTES >> 20} MiB limit",
                          path=path, key=key)


def _hint(e: OSError, path: str) -> str:
    # ipvsd runs as its own user under the shipped unit: a config left mode 0600 root says how to fix it
    return unreadable(path) if isinstance(e, PermissionError) else ""


def read_bytes(path: str, key: str | None = None, head: int | None = None) -> bytes:
    """The regular file at `path` (a FIFO, device or directory is refused before it could block or stream for
    ever), or only its first `head` bytes."""
    limit = MAX_FILE_BYTES if head is None else head
    if "\0" in path:  # os.stat would raise ValueError
        raise ConfigError("cannot read: the file name contains a NUL byte", path=path.replace("\0", "\\0"), key=key)
    try:
        _check_regular(path, os.stat(path), key)
        # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}{_hint(e, path)}", path=path, key=key) from None
    try:
        _check_regular(path, os.fstat(fd), key)
        chunks: list[bytes] = []
        left = limit + (head is None)  # one byte more than allowed tells a file that grew past the cap
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=path, key=key) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if head is None and len(data) > limit:
        raise ConfigError(f"file is larger than the {limit >> 20} MiB limit", path=path, key=key)
    return data


def decode(raw: bytes, path: str) -> str:
    """UTF-8 text of `raw` (a leading byte-order mark is dropped); a bad byte is reported by line and column."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, start) + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise ConfigError(f"not UTF-8: byte 0x{raw[start]:02x} at column {column} (byte offset {start})",
                          path=path, line=line) from None


def read_text(path: str, key: str | None = None) -> str:
    """The decoded text of a config file."""
    return decode(read_bytes(path, key), path)
