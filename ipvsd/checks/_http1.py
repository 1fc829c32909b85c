"""Just enough HTTP/1.x for a health check: build a request, find the head, parse status and headers, de-chunk.

Pure functions over bytes, so the probe in http.py stays a thin shell and these are tested without sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ipvsd.checks.base import Kind, ProbeFailure

_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d) +(\d{3})(?: +([^\r\n]*))?")


@dataclass(frozen=True, slots=True)
class Head:
    """The status line and headers of a response (header names lower-cased)."""

    status: int
    phrase: str
    headers: dict[str, str]
    body_start: int

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.strip().isdigit() else None

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


def request(method: str, path: str, host: str, *, keepalive: bool = False) -> bytes:
    """Return the bytes of a minimal HTTP/1.1 request."""
    conn = "keep-alive" if keepalive else "close"
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ipvsd-healthcheck\r\n"
            f"Accept: */*\r\nConnection: {conn}\r\n\r\n").encode("latin-1")


def head_end(buf: bytes | bytearray) -> int:
    """Return the offset just past the blank line ending the head, or -1 while it is incomplete."""
    i = buf.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    i = buf.find(b"\n\n")
    return i + 2 if i >= 0 else -1


def parse_head(buf: bytes | bytearray) -> Head:
    """Parse the head of a response; raise a protocol failure when it is not HTTP."""
    end = head_end(buf)
    if end < 0:
        raise ProbeFailure(Kind.PROTOCOL, f"no complete HTTP response head: {_preview(buf)}")
    lines = bytes(buf[:end]).decode("latin-1").split("\n")
    m = _STATUS_LINE.match(lines[0].rstrip("\r"))
    if m is None:
        raise ProbeFailure(Kind.PROTOCOL, f"not an HTTP response: {_preview(buf)}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Head(int(m.group(3)), (m.group(4) or "").strip(), headers, end)


def complete(buf: bytes | bytearray, *, need_body: bool) -> bool:
    """Return True once the buffer holds all we need: the head, plus the body when it is to be matched."""
    end = head_end(buf)
    if end < 0:
        return False
    if not need_body:
        return True
    try:
        head = parse_head(buf)
    except ProbeFailure:
        return True
    if head.status in (204, 304) or 100 <= head.status < 200:
        return True
    if head.chunked:
        return b"\r\n0\r\n\r\n" in buf[end - 2:] or buf[end:].startswith(b"0\r\n\r\n")
    if head.length is not None:
        return len(buf) - end >= head.length
    return False  # delimited by close


def reusable(buf: bytes | bytearray, head: Head, *, head_only: bool) -> bool:
    """True when the response in `buf` (whose head is `head`) is complete, framed, and leaves the connection
    open for another."""
    if "close" in head.headers.get("connection", "").lower():
        return False
    if head_only or head.status in (204, 304):
        return len(buf) == head.body_start
    if head.chunked:
        return bytes(buf).endswith(b"0\r\n\r\n")
    return head.length is not None and len(buf) - head.body_start == head.length


def body(buf: bytes | bytearray, head: Head) -> bytes:
    """Return the (possibly truncated) body, de-chunked when needed."""
    raw = bytes(buf[head.body_start:])
    if head.length is not None and not head.chunked:
        return raw[: head.length]
    return dechunk(raw) if head.chunked else raw


def dechunk(raw: bytes) -> bytes:
    """Return the payload of a chunked body; a truncated one yields what arrived."""
    out, pos = bytearray(), 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out)
        size_text = raw[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(out)
        if size == 0:
            return bytes(out)
        out += raw[eol + 2: eol + 2 + size]
        pos = eol + 2 + size + 2


def _preview(buf: bytes | bytearray) -> str:
    text = bytes(buf[:40])
    return repr(text) if text else "empty reply"
