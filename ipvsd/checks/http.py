"""HTTP and HTTPS checks: one request on a new connection; status, substring, regex and digest verdicts.

Not an HTTP client library: a probe needs one request and a bounded read, and httpx's per-request cost (pool,
transports) is several times ours (scripts/bench-probes --httpx; docs/checks.md). Plain http runs on raw
non-blocking sockets (_raw), https on an asyncio Protocol with the ssl module (_net); both can keep their
connection between probes (`reuse_connection`). The response is parsed as it arrives (_http1).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Callable

from ipvsd.checks import _http1, _raw
from ipvsd.checks._net import Conn, connect
from ipvsd.checks.base import (
    VERDICTS,
    Kind,
    ProbeFailure,
    ProbeResult,
    ProbeTarget,
    Report,
    failed,
    register,
    run_bounded,
)
from ipvsd.config.schema import HttpCheck

# The response reader takes bytes out of the transport's buffer as they arrive, so these bound one read, not a
# response: _raw reads 64 KiB at a time; the TLS transport may hand over a few of its 256 KiB reads between
# two wake-ups of the reader.
_RAW_BUFFER = 1 << 17
_TLS_BUFFER = 1 << 21


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

    __slots__ = ("_kept", "_request", "digest", "direct", "need_body", "regex", "regex_no_match", "spec", "tls")

    def __init__(self, spec: HttpCheck) -> None:
        self.spec = spec
        self.tls = tls_context(spec) if spec.type == "https" else None
        self.need_body = spec.method == "GET" and any(
            x is not None for x in (spec.receive, spec.regex, spec.regex_no_match, spec.digest))
        self.regex = re.compile(spec.regex) if spec.regex is not None else None
        self.regex_no_match = re.compile(spec.regex_no_match) if spec.regex_no_match is not None else None
        self.digest = spec.method == "GET" and spec.digest is not None
        self._request: tuple[ProbeTarget, _http1.Request] | None = None
        self._kept: Conn | _raw.RawConn | None = None  # reuse_connection: the keep-alive connection between probes
        # A new plain-http connection per probe can run without a task (`start`); TLS and kept ones cannot.
        self.direct = self.tls is None and not spec.reuse_connection

    def request(self, target: ProbeTarget) -> _http1.Request:
        """Return the request for `target` (cached: a probe object serves one target)."""
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

    def start(self, target: ProbeTarget, *, timeout: float, now: float, report: Report) -> Callable[[], None]:
        """`probe` without a task, for a `direct` probe: see ipvsd.checks.base.DirectProbe."""
        try:
            data = self.request(target).data  # made once per target: what h11 refuses is a verdict, as in `probe`
        except VERDICTS as exc:
            return asyncio.get_running_loop().call_soon(report, failed(exc, timeout, 0.0)).cancel
        resp = self._response(target, self.digest)
        shot = _raw.OneShot(target, data, limit=_RAW_BUFFER, done=resp, deadline=now + timeout,
                            end=functools.partial(self._ended, resp, now, timeout, report))
        return shot.cancel

    def _ended(self, resp: _http1.Response, began: float, timeout: float, report: Report,
               exc: BaseException | None, now: float) -> None:
        latency = now - began
        if exc is None:
            try:
                reason = self._verdict(resp.finish(), resp)
            except VERDICTS as e:
                exc = e
        report(ProbeResult.up(reason, latency) if exc is None else failed(exc, timeout, latency))

    async def fetch(self, target: ProbeTarget, *, timeout: float) -> tuple[_http1.Head, _http1.Response]:
        """One request, whatever the status: the head and the read response (`ipvsd genhash`). Raises what a
        probe turns into a verdict: ProbeFailure, OSError (TimeoutError included), ssl.SSLError."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with asyncio.timeout(timeout):
            return await self._read(target, deadline, digest=True)

    def _response(self, target: ProbeTarget, digest: bool) -> _http1.Response:
        spec = self.spec
        # A kept connection must be read to the end of each response, or the next one would start mid-body.
        return _http1.Response(self.request(target), read_body=self.need_body or spec.reuse_connection,
                               body_limit=spec.max_body_bytes, digest=digest and spec.method == "GET")

    async def _open(self, target: ProbeTarget) -> Conn:
        sni = self.spec.sni or self.spec.host
        return await connect(target, limit=_TLS_BUFFER, tls=self.tls,
                             server_hostname=sni or (target.addr if self.spec.tls_verify else None))

    async def _read(self, target: ProbeTarget, deadline: float, *, digest: bool) -> tuple[_http1.Head,
                                                                                           _http1.Response]:
        if self.spec.reuse_connection:
            resp = await self._exchange_kept(target, deadline, digest)
        else:
            resp = self._response(target, digest)
            if self.tls is None:
                await _raw.exchange(target, self.request(target).data, limit=_RAW_BUFFER, done=resp,
                                    deadline=deadline)
            else:
                conn = await self._open(target)
                try:
                    conn.write(self.request(target).data)
                    await conn.read_until(resp)
                finally:
                    conn.close()
        return resp.finish(), resp

    async def _once(self, target: ProbeTarget, deadline: float) -> str:
        head, resp = await self._read(target, deadline, digest=self.digest)
        return self._verdict(head, resp)

    def _verdict(self, head: _http1.Head, resp: _http1.Response) -> str:
        """The reason of a success, or ProbeFailure: the status, then the body if asked."""
        self._check_status(head)
        if not self.need_body:
            return f"{head.status} {head.phrase}".rstrip()
        return self._check_body(resp, head)

    async def _exchange_kept(self, target: ProbeTarget, deadline: float, digest: bool) -> _http1.Response:
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
                conn = _raw.RawConn(target) if self.tls is None else await self._open(target)
            assert conn is not None
            resp = self._response(target, digest)
            try:
                await conn.exchange(self.request(target).data, limit=_RAW_BUFFER, done=resp, deadline=deadline)
                if not resp.got and attempt:
                    conn.close()
                    continue
                resp.finish()
            except OSError:
                conn.close()
                if attempt:
                    continue
                raise
            except BaseException:  # not HTTP, a timeout, a cancel: the connection is in an unknown state
                conn.close()
                raise
            if resp.reusable and not conn.eof:
                self._kept = conn
            else:
                conn.close()
            return resp
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _check_status(self, head: _http1.Head) -> None:
        if self.spec.accepts(head.status):
            return
        where = head.headers.get("location")
        more = f" -> {where}" if where and 300 <= head.status < 400 else ""
        raise ProbeFailure(Kind.STATUS,
                           f"status {head.status} {head.phrase}{more} (expected {_ranges(self.spec)})".replace(
                               "  ", " "))

    def _check_body(self, resp: _http1.Response, head: _http1.Head) -> str:
        spec = self.spec
        body = bytes(resp.body)
        cut = f" (first {len(body)} bytes)" if resp.truncated else ""
        if spec.receive is not None and spec.receive.encode() not in body:
            raise ProbeFailure(Kind.RECEIVE, f"body lacks {spec.receive!r}{cut}")
        text = body.decode("utf-8", "replace") if (self.regex or self.regex_no_match) else ""
        if self.regex is not None and not self.regex.search(text):
            raise ProbeFailure(Kind.RECEIVE, f"body does not match /{self.regex.pattern}/{cut}")
        if self.regex_no_match is not None and self.regex_no_match.search(text):
            raise ProbeFailure(Kind.RECEIVE, f"body matches /{self.regex_no_match.pattern}/")
        if spec.digest is not None and resp.md5 != spec.digest:
            raise ProbeFailure(Kind.RECEIVE, f"body digest {resp.md5}, expected {spec.digest} ({resp.seen} bytes)")
        return f"{head.status} {head.phrase}, body ok".replace("  ", " ")
