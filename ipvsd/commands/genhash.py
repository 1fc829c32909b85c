"""`ipvsd genhash`: fetch a page with the HTTP check's own transport and print the MD5 that `digest` expects."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import urllib.parse

import pydantic

from ipvsd.checks.base import ProbeTarget, classify
from ipvsd.checks.http import HttpProbe
from ipvsd.config.schema import HttpCheck
from ipvsd.model import addrport, canonical_addr

DEFAULT_TIMEOUT = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fetch a page as the http/https check does and print the MD5 hex digest of its whole body, the value "
        "for a check's `digest` (keepalived's genhash). Give a URL, or keepalived genhash's -s/-p/-u/-S.")
    parser.add_argument("url", nargs="?", metavar="URL",
                        help="http://ADDR[:PORT]/PATH or https://...; an IPv6 address in brackets")
    parser.add_argument("-s", "--server", metavar="ADDR", help="server address (instead of URL)")
    parser.add_argument("-p", "--port", type=int, metavar="PORT", help="server port (default 80, or 443 with -S)")
    parser.add_argument("-u", "--path", "--url-path", dest="path", metavar="PATH", help="request path (default /)")
    parser.add_argument("-S", "--ssl", action="store_true", help="use https (with -s; a URL says it itself)")
    parser.add_argument("-V", "--host", "--virtualhost", dest="host", metavar="NAME",
                        help="Host header (a check's `host`; default: the address, as the check sends)")
    parser.add_argument("--sni", metavar="NAME", help="TLS server name (a check's `sni`)")
    parser.add_argument("-t", "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up after this long (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print the status, the headers and the body size (to standard error)")


class UsageError(Exception):
    """A bad command line, reported in one line."""


def target_of(args: argparse.Namespace) -> tuple[str, str, int, str]:
    """Return (scheme, address, port, path) from a URL or from -s/-p/-u/-S."""
    if args.url is not None:
        if args.server is not None:
            raise UsageError("give a URL or --server, not both")
        url = urllib.parse.urlsplit(args.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(f"not an http:// or https:// URL: {args.url}")
        try:
            port = url.port
        except ValueError as e:
            raise UsageError(f"bad port in {args.url}: {e}") from None
        scheme = url.scheme
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return scheme, url.hostname, port or (443 if scheme == "https" else 80), args.path or path
    if args.server is None:
        raise UsageError("give a URL, or --server ADDR (with --port, --path, --ssl)")
    scheme = "https" if args.ssl else "http"
    return scheme, args.server, args.port or (443 if args.ssl else 80), args.path or "/"


def resolve(host: str) -> str:
    """An IP literal as is; a name to its first address, as the daemon resolves a real given by name."""
    try:
        return canonical_addr(host)
    except ValueError:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])


def fail(message: str, code: int) -> int:
    print(f"ipvsd genhash: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    try:
        scheme, addr, port, path = target_of(args)
        check = HttpCheck.model_validate({"type": scheme, "path": path, "host": args.host, "sni": args.sni})
    except UsageError as e:
        return fail(str(e), 2)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        return fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", 2)
    where = f"{scheme}://{addrport(addr, port)}{path}"
    try:
        target = ProbeTarget(resolve(addr), port)
        head, resp = asyncio.run(HttpProbe(check).fetch(target, timeout=args.timeout))
    except Exception as e:  # one line for an operator, whatever failed: no traceback
        _, why = classify(e)
        if isinstance(e, TimeoutError):
            why = f"timed out after {args.timeout:g}s"
        return fail(f"{where}: {why}", 1)
    if args.verbose:
        print(f"{head.status} {head.phrase}".rstrip(), file=sys.stderr)
        for name, value in head.headers.items():
            print(f"{name}: {value}", file=sys.stderr)
        print(f"body: {resp.seen} bytes", file=sys.stderr)
    if not check.accepts(head.status):
        # Still the digest of what was served, but a check with the default expect_status would fail it.
        print(f"ipvsd genhash: warning: {where}: status {head.status} {head.phrase}".rstrip()
              + " (a check expects 200-299 unless expect_status says otherwise)", file=sys.stderr)
    print(resp.md5)
    return 0
