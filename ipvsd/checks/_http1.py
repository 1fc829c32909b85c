"""One HTTP/1.1 response read as it streams in, parsed by h11: status, a bounded body prefix, a whole-body MD5."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import h11

from ipvsd.checks.base import Kind, ProbeFailure

HEAD_LIMIT = 16384  # bytes of status line and headers before a response is refused (h11's default too)


@dataclass(frozen=True, slots=True)
class Head:
    """The status line and headers of a response (header names lower-cased; a repeated one keeps its last)."""

    status: int
    phrase: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Request:
    """What a probe sends, as bytes for the socket and as the h11 event that tells the parser the method."""

    data: bytes
    event: h11.Request


def request(method: str, path: str, host: str, *, keepalive: bool = False) -> Request:
    """Return a minimal HTTP/1.1 request (build it once per target: both forms are reused by every probe)."""
    headers = [("Host", host), ("User-Agent", "ipvsd-healthcheck"), ("Accept", "*/*"),
               ("Connection", "keep-alive" if keepalive else "close")]
    data = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return Request(data.encode("latin-1"), h11.Request(method=method, target=path, headers=headers))


class Response:
    """A response being read. The transport calls it with its receive buffer each time bytes arrive; it takes
    the bytes out (so the transport's buffer never holds more than one read) and returns True once it has
    what the probe needs. Then (or after the peer closed) `finish()` gives the head or raises the failure.

    `read_body`: read the body, not only the head (to match it, or to leave a kept connection at a message
    boundary). At most `body_limit` body bytes are read and kept for matching, unless `digest`: the MD5 covers
    the whole body (keepalived's rule), which is read to its end, bounded by the probe's timeout, not kept.
    """

    __slots__ = ("_conn", "_md5", "_stopped", "body", "body_limit", "complete", "digest", "error", "got", "head",
                 "read_body", "seen")

    def __init__(self, req: Request, *, read_body: bool, body_limit: int, digest: bool = False) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        self._conn.send(req.event)  # h11 answers a response only to a request it saw: HEAD has no body
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

    def __call__(self, buf: bytearray) -> bool:
        if self._stopped:
            return True
        if buf:
            self.got += len(buf)
            self._conn.receive_data(bytes(buf))
            del buf[:]
        self._stopped = self._pump()
        return self._stopped

    def _pump(self) -> bool:
        """Take every event h11 can make of what arrived; return True when reading can stop.

        Never raises: it runs inside the transport's socket callback, so a failure is kept for `finish()`.
        """
        conn = self._conn
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Data):
                    if self._data(event.data):
                        return True
                elif isinstance(event, h11.Response):
                    self.head = Head(event.status_code, event.reason.decode("latin-1"),
                                     {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers})
                    if not self.read_body:
                        return True
                elif isinstance(event, h11.EndOfMessage):
                    self.complete = True
                    return True
                elif isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue and the like precede the real response
                else:  # NEED_DATA; PAUSED or ConnectionClosed cannot come before EndOfMessage or an error
                    return event is not h11.NEED_DATA
        except h11.RemoteProtocolError as e:
            self.error = ProbeFailure(Kind.PROTOCOL, f"bad HTTP response: {e}")
            return True

    def _data(self, data: bytes) -> bool:
        """Take body bytes; return True when the body need not be read further."""
        self.seen += len(data)
        room = self.body_limit - len(self.body)
        if room > 0:
            self.body += data[:room]
        if self._md5 is not None:
            self._md5.update(data)
            return False
        return self.seen >= self.body_limit

    def finish(self) -> Head:
        """The transport stopped: return the head, or raise the protocol failure. If the reader had not said
        it was done, the peer closed the connection, which ends a body delimited by the close."""
        if not self._stopped:
            if not self.got:
                raise ProbeFailure(Kind.PROTOCOL, "connection closed before an HTTP response")
            self._conn.receive_data(b"")
            self._stopped = self._pump()
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
        return self.complete and conn.their_state is h11.DONE and not conn.trailing_data[0]
