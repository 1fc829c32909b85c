"""HTTP and HTTPS checks: one request on a new connection; status, substring, regex and digest verdicts.

Not httpx: a probe needs one request and a bounded read, and httpx's per-request cost (pool, h11 state
machine, transports) is several times ours (scripts/bench-probes --httpx; docs/checks.md). Plain http runs
on raw non-blocking sockets (_raw), https on an asyncio Protocol with the ssl module (_net); both can keep
their connection between probes (`reuse_connection`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl

from ipvsd.checks import _http1, _raw
from ipvsd.checks._net import Conn, connect, require_bytes
from ipvsd.checks.base import Kind, ProbeFailure, ProbeResult, ProbeTarget, register, run_bounded
from ipvsd.config.schema import HttpCheck

_HEAD_LIMIT = 16384


def tls_context(spec: HttpCheck) -> ssl.SSLContext:
    """Return the client TLS context of a check: verifying against `ca_file` (or the system store), or not."""
    if not spec.tls_verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=spec.ca_file)


def _ranges(spec: HttpCheck) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spec.expect_status)


@register("http", "https")
class HttpProbe:
    """An HTTP(S) GET or HEAD whose status must be expected and whose body must match, if asked."""

    __slots__ = ("_kept", "_request", "need_body", "regex", "regex_no_match", "spec", "tls")

    def __init__(self, spec: HttpCheck) -> None:
        self.spec = spec
        self.tls = tls_context(spec) if spec.type == "https" else None
        self.need_body = spec.method == "GET" and any(
            x is not None for x in (spec.receive, spec.regex, spec.regex_no_match, spec.digest))
        self.regex = re.compile(spec.regex) if spec.regex is not None else None
        self.regex_no_match = re.compile(spec.regex_no_match) if spec.regex_no_match is not None else None
        self._request: tuple[ProbeTarget, bytes] | None = None
        self._kept: Conn | _raw.RawConn | None = None  # reuse_connection: the keep-alive connection between probes

    def request(self, target: ProbeTarget) -> bytes:
        """Return the request bytes for `target` (cached: a probe object serves one target)."""
        if self._request is None or self._request[0] != target:
            host = self.spec.host
            if host is None:
                addr = f"[{target.addr}]" if ":" in target.addr else target.addr
                host = addr if target.port == (443 if self.tls else 80) else f"{addr}:{target.port}"
            keepalive = self.spec.reuse_connection
            self._request = (target, _http1.request(self.spec.method, self.spec.path, host, keepalive=keepalive))
        return self._request[1]

    def close(self) -> None:
        """Drop a kept connection (the scheduler calls this when the probe is stopped)."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    async def probe(self, target: ProbeTarget, *, timeout: float) -> ProbeResult:
        deadline = asyncio.get_running_loop().time() + timeout
        # Plain http runs on _raw, which enforces the deadline itself; https needs asyncio's timeout.
        return await run_bounded(lambda: self._once(target, deadline), timeout=timeout, bounded=self.tls is None)

    def _complete(self, buf: bytearray) -> bool:
        return _http1.complete(buf, need_body=self.need_body)

    def _framed(self, buf: bytearray) -> bool:
        # On a kept connection the whole response must be read, or the next one would start mid-body.
        return _http1.complete(buf, need_body=self.spec.method != "HEAD")

    async def _open(self, target: ProbeTarget, limit: int) -> Conn:
        sni = self.spec.sni or self.spec.host
        return await connect(target, limit=limit, tls=self.tls,
                             server_hostname=sni or (target.addr if self.spec.tls_verify else None))

    async def _once(self, target: ProbeTarget, deadline: float) -> str:
        limit = _HEAD_LIMIT + self.spec.max_body_bytes
        if self.spec.reuse_connection:
            buf, head = await self._exchange_kept(target, limit, deadline)
        else:
            if self.tls is None:
                buf = await _raw.exchange(target, self.request(target), limit=limit, done=self._complete,
                                          deadline=deadline)
            else:
                conn = await self._open(target, limit)
                try:
                    conn.write(self.request(target))
                    buf = await conn.read_until(self._complete)
                finally:
                    conn.close()
            require_bytes(buf, "an HTTP response")
            head = _http1.parse_head(buf)
        self._check_status(head)
        if not self.need_body:
            return f"{head.status} {head.phrase}".rstrip()
        body = _http1.body(buf, head)
        truncated = len(buf) >= limit or len(body) > self.spec.max_body_bytes
        return self._check_body(body[: self.spec.max_body_bytes], head, truncated=truncated)

    async def _exchange_kept(self, target: ProbeTarget, limit: int, deadline: float) -> tuple[bytearray, _http1.Head]:
        """One request on the kept connection (opened if needed); keep it only if the reply is cleanly framed.

        A kept connection the server has meanwhile closed (or sent something stray on) is replaced before the
        request; one that fails during it is retried once on a new connection, as HTTP clients do.
        """
        conn, self._kept = self._kept, None
        reused = conn is not None and conn.idle()
        if conn is not None and not reused:
            conn.close()
        for attempt in (reused, False):
            if not attempt:
                conn = _raw.RawConn(target) if self.tls is None else await self._open(target, limit)
            assert conn is not None
            try:
                buf = await conn.exchange(self.request(target), limit=limit, done=self._framed, deadline=deadline)
                if not buf and attempt:
                    conn.close()
                    continue
                require_bytes(buf, "an HTTP response")
                head = _http1.parse_head(buf)
            except OSError:
                conn.close()
                if attempt:
                    continue
                raise
            except BaseException:  # not HTTP, a timeout, a cancel: the connection is in an unknown state
                conn.close()
                raise
            if _http1.reusable(buf, head, head_only=self.spec.method == "HEAD") and len(buf) < limit \
                    and not conn.eof:
                self._kept = conn
            else:
                conn.close()
            return buf, head
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _check_status(self, head: _http1.Head) -> None:
        if self.spec.accepts(head.status):
            return
        where = head.headers.get("location")
        more = f" -> {where}" if where and 300 <= head.status < 400 else ""
        raise ProbeFailure(Kind.STATUS,
                           f"status {head.status} {head.phrase}{more} (expected {_ranges(self.spec)})".replace(
                               "  ", " "))

    def _check_body(self, body: bytes, head: _http1.Head, *, truncated: bool) -> str:
        spec = self.spec
        cut = f" (first {len(body)} bytes)" if truncated else ""
        if spec.receive is not None and spec.receive.encode() not in body:
            raise ProbeFailure(Kind.RECEIVE, f"body lacks {spec.receive!r}{cut}")
        text = body.decode("utf-8", "replace") if (self.regex or self.regex_no_match) else ""
        if self.regex is not None and not self.regex.search(text):
            raise ProbeFailure(Kind.RECEIVE, f"body does not match /{self.regex.pattern}/{cut}")
        if self.regex_no_match is not None and self.regex_no_match.search(text):
            raise ProbeFailure(Kind.RECEIVE, f"body matches /{self.regex_no_match.pattern}/")
        if spec.digest is not None:
            got = hashlib.md5(body, usedforsecurity=False).hexdigest()
            if got != spec.digest:
                raise ProbeFailure(Kind.RECEIVE, f"body digest {got}, expected {spec.digest}{cut}")
        return f"{head.status} {head.phrase}, body ok".replace("  ", " ")
