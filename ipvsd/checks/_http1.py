"""One HTTP/1.1 response read as it streams in (h11, or our parser for the common one): status, body, MD5."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ipvsd.checks.base import Kind, ProbeFailure

if TYPE_CHECKING:
    import h11
# h11 is imported where a response needs it: most never do (see _STATUS), and its import was 4 % of a start's.

HEAD_LIMIT = 16384  # bytes of status line and headers before a response is refused (h11's default too)


@dataclass(frozen=True, slots=True)
class Head:
    """The status line and headers of a response (header names lower-cased; a repeated one keeps its last)."""

    status: int
    phrase: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Request:
    """What a probe sends: the bytes for the socket, built once per target and reused by every probe."""

    data: bytes
    keepalive: bool

    @property
    def head_only(self) -> bool:
        """A HEAD request: its response has no body."""
        return self.data.startswith(b"HEAD ")

    def event(self) -> h11.Request:
        """The request as the h11 event that tells h11's parser the method, made again from the bytes when a
        response needs h11 (the uncommon path): kept with every target, h11's event cost 1 KB each, 10 MB of
        a 10,000-real daemon's RSS."""
        import h11
        head, *fields = self.data.decode("latin-1").split("\r\n")
        method, target, _ = head.split(" ")
        headers = [(name, value) for name, _, value in (f.partition(": ") for f in fields if f)]
        return h11.Request(method=method, target=target, headers=headers)


# What h11 lets a request carry (h11/_abnf.py: method, request_target, field_value), for the three fields that
# come from the configuration; the other headers are ours.
_METHOD = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET = re.compile(r"[\x21-\x7e]+")
_VALUE = re.compile(r"([^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")


def request(method: str, path: str, host: str, *, keepalive: bool = False) -> Request:
    """Return a minimal HTTP/1.1 request; raise what h11 raises (LocalProtocolError, UnicodeEncodeError) for a
    method, path or host it would not send."""
    headers = [("Host", host), ("User-Agent", "ipvsd-healthcheck"), ("Accept", "*/*"),
               ("Connection", "keep-alive" if keepalive else "close")]
    if not (method.isascii() and path.isascii() and host.isascii() and _METHOD.fullmatch(method)
            and _TARGET.fullmatch(path) and _VALUE.fullmatch(host)):
        import h11
        h11.Request(method=method, target=path, headers=headers)  # says what is wrong, in h11's words
    data = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return Request(data.encode("latin-1"), keepalive)


# The common response, which the reader parses itself: HTTP/1.1, CRLF lines, one Content-Length, no
# Transfer-Encoding, a final status with a body (not 204/304), printable ASCII. Each pattern accepts a subset
# of what h11's does; anything else goes to h11 (tests/unit/checks/test_http1_differential.py holds the two
# paths to the same results).
_BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 ends a head
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD = rb"\r\n(" + _TOKEN + rb"):[ \t]*([\x20-\x7e]*)"  # the value: h11's once its trailing spaces are cut
_HEAD = re.compile(rb"HTTP/1\.1 ([2-9][0-9][0-9])(?: ([\x20-\x7e]*))?((?:" + _FIELD + rb")*)\r\n\r\n")
_FIELDS = re.compile(_FIELD)
_DIGITS = re.compile(rb"[0-9]{1,18}")


class Response:
    """A response being read. The transport calls it with its receive buffer each time bytes arrive; it takes
    the bytes out (so the transport's buffer never holds more than one read) and returns True once it has
    what the probe needs. Then (or after the peer closed) `finish()` gives the head or raises the failure.

    `read_body`: read the body, not only the head (to match it, or to leave a kept connection at a message
    boundary). At most `body_limit` body bytes are read and kept for matching, unless `digest`: the MD5 covers
    the whole body (keepalived's rule), which is read to its end, bounded by the probe's timeout, not kept.

    h11 parses the response, except the common one (see _STATUS), which costs far less CPU parsed here; a
    response that turns out not to be one is handed to h11 from its first byte. `fast=False`: h11 always.
    """

    __slots__ = ("_conn", "_keepalive", "_md5", "_raw", "_remaining", "_req", "_stopped", "_trailing", "body",
                 "body_limit", "complete", "digest", "error", "got", "head", "read_body", "seen")

    def __init__(self, req: Request, *, read_body: bool, body_limit: int, digest: bool = False,
                 fast: bool = True) -> None:
        self._req = req
        self._conn: h11.Connection | None = None
        self._raw: bytearray | None = bytearray() if fast else None  # the head so far, while parsing it here
        self._remaining = -1  # body bytes still to come, once the head was parsed here
        self._keepalive = False
        self._trailing = False  # bytes followed the response (parsed here)
        self.read_body = read_body or digest
        self.body_limit = body_limit
        self.digest = digest
        self._md5 = hashlib.md5(usedforsecurity=False) if digest else None
        self.body = bytearray()  # the first `body_limit` bytes of the (de-chunked) body
        self.seen = 0  # body bytes read in all
        self.got = 0  # bytes received in all
        self.head: Head | None = None
        self.complete = False  # the whole message was read
        self.error: ProbeFailure | None = None
        self._stopped = False
        if not fast:
            self._h11(b"")

    def __call__(self, buf: bytearray) -> bool:
        if self._stopped:
            return True
        if buf:
            self.got += len(buf)
            data = bytes(buf)
            del buf[:]
            if self._conn is not None:
                self._conn.receive_data(data)
            elif self._fast(data):
                self._stopped = True
                return True
            if self._conn is None:
                return False
        elif self._conn is None:
            return False
        self._stopped = self._pump()
        return self._stopped

    def _h11(self, data: bytes) -> None:
        """Go on with h11, fed everything received so far."""
        import h11
        conn = self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        conn.send(self._req.event())  # h11 answers a response only to a request it saw: HEAD has no body
        if data:  # (no data would tell h11 the peer closed)
            conn.receive_data(data)
        self._raw = None

    def _fast(self, data: bytes) -> bool:
        """Parse `data` here, or hand everything to h11 (then return False for `_pump` to go on)."""
        if self._remaining < 0:
            raw = self._raw
            assert raw is not None
            raw += data
            if not raw.startswith(b"HTTP/1.1 "[: len(raw)]):  # (h11 may refuse it before the head is complete)
                self._h11(bytes(raw))
                return False
            m = _BLANK_LINE.search(raw)
            if m is None:
                if len(raw) > HEAD_LIMIT:  # h11 refuses it, in its words
                    self._h11(bytes(raw))
                return False
            end = m.end()
            if end > HEAD_LIMIT or not self._fast_head(raw, end):
                self._h11(bytes(raw))
                return False
            data = bytes(raw[end:])
            self._raw = None
            if not self.read_body:
                return True
        n = self._remaining
        if len(data) >= n:
            self._trailing = len(data) > n
            self._remaining = 0
            self._data(data[:n] if self._trailing else data)
            self.complete = True
            return True
        self._remaining = n - len(data)
        self._data(data)
        return self._enough()

    def _fast_head(self, raw: bytearray, end: int) -> bool:
        """Parse a head here if it is a common one (and return True); else leave it to h11."""
        m = _HEAD.fullmatch(raw, 0, end)
        if m is None:
            return False
        status = int(m[1])
        if status in (204, 304):
            return False
        headers: dict[str, str] = {}
        length: bytes | None = None
        close = False
        for name, value in _FIELDS.findall(raw, m.start(3), m.end(3)):
            name = name.lower()
            value = value.rstrip(b" ")
            if name == b"content-length":
                if length is not None or _DIGITS.fullmatch(value) is None:
                    return False
                length = value
            elif name == b"transfer-encoding":
                return False
            elif name == b"connection":
                close = close or b"close" in [t.strip() for t in value.lower().split(b",")]
            headers[name.decode("latin-1")] = value.decode("latin-1")
        head_only = self._req.head_only
        if length is None and not head_only:
            return False  # a body that ends at the close
        self.head = Head(status, (m[2] or b"").decode("latin-1"), headers)
        self._remaining = 0 if head_only or length is None else int(length)
        self._keepalive = self._req.keepalive and not close
        return True

    def _pump(self) -> bool:
        """Take every event h11 can make of what arrived; return True when reading can stop.

        Never raises: it runs inside the transport's socket callback, so a failure is kept for `finish()`.
        """
        import h11
        conn = self._conn
        assert conn is not None
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Data):
                    self._data(event.data)
                elif isinstance(event, h11.Response):
                    self.head = Head(event.status_code, event.reason.decode("latin-1"),
                                     {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers})
                    if not self.read_body:
                        return True
                elif isinstance(event, h11.EndOfMessage):
                    self.complete = True
                    return True
                elif event is h11.NEED_DATA:
                    return self._enough()
                elif not isinstance(event, h11.InformationalResponse):  # 100 Continue and such come first
                    return True  # PAUSED or ConnectionClosed: only after EndOfMessage or an error
        except h11.RemoteProtocolError as e:
            self.error = ProbeFailure(Kind.PROTOCOL, f"bad HTTP response: {e}")
            return True

    def _data(self, data: bytes) -> None:
        self.seen += len(data)
        room = self.body_limit - len(self.body)
        if room > 0:
            self.body += data[:room]
        if self._md5 is not None:
            self._md5.update(data)

    def _enough(self) -> bool:
        """Whether what arrived, all of it taken, is all the probe needs of a response not yet complete."""
        return self.head is not None and self._md5 is None and self.seen >= self.body_limit

    def finish(self) -> Head:
        """The transport stopped: return the head, or raise the protocol failure. If the reader had not said
        it was done, the peer closed the connection, which ends a body delimited by the close."""
        if not self._stopped:
            if not self.got:
                raise ProbeFailure(Kind.PROTOCOL, "connection closed before an HTTP response")
            if self._conn is None and self._raw is not None:
                self._h11(bytes(self._raw))  # a head cut short: h11 says how
            if self._conn is not None:
                self._conn.receive_data(b"")
                self._stopped = self._pump()
            else:  # in a body parsed here, framed by its Content-Length: in h11's words
                self.error = ProbeFailure(
                    Kind.PROTOCOL, "bad HTTP response: peer closed connection without sending complete message "
                    f"body (received {self.seen} bytes, expected {self.seen + self._remaining})")
        if self.error is not None:
            raise self.error
        if self.head is None:  # unreachable: h11 reports a close inside the head as an error
            raise ProbeFailure(Kind.PROTOCOL, "connection closed inside the HTTP response head")
        return self.head

    @property
    def truncated(self) -> bool:
        """Whether the body was longer than what was kept for matching."""
        return self.seen > len(self.body) or (not self.complete and self.seen >= self.body_limit)

    @property
    def md5(self) -> str:
        """The hex MD5 of the whole body (only with `digest`)."""
        assert self._md5 is not None
        return self._md5.hexdigest()

    @property
    def reusable(self) -> bool:
        """Whether the connection is left at a message boundary, open for another request: the whole response
        was read, nothing follows it, and neither side asked to close."""
        conn = self._conn
        if conn is None:
            return self.complete and self._keepalive and not self._trailing
        import h11
        return self.complete and conn.their_state is h11.DONE and not conn.trailing_data[0]
