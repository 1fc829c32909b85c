"""`ipvsd genhash`: the MD5 of a live page, as `digest` expects it; errors in one line and a non-zero exit."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsd.cli import main

BODY = bytes(range(256)) * 400  # 100 KiB: over max_body_bytes, which bounds matching, not the digest


@pytest.fixture
def page() -> Iterator[tuple[int, list[bytes]]]:
    """A one-thread loopback server that answers each connection with BODY, chunked; yields (port, requests)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)  # a test that never connects still ends
    requests: list[bytes] = []
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (BODY[:1000], BODY[1000:]))
             + b"0\r\nX-Trailer: 1\r\n\r\n")

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(4096)
                    if not data:
                        break
                    head += data
                requests.append(head)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], requests
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone would not, on Linux)
        listener.close()
        thread.join(10)
        assert not thread.is_alive()


def test_genhash_prints_the_md5_of_the_whole_body(page: tuple[int, list[bytes]],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    port, requests = page
    assert main(["genhash", f"http://127.0.0.1:{port}/status?full=1"]) == 0
    assert capsys.readouterr().out == hashlib.md5(BODY).hexdigest() + "\n"
    assert requests[0].startswith(b"GET /status?full=1 HTTP/1.1\r\n")


def test_genhash_keepalived_style_options(page: tuple[int, list[bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    port, requests = page
    assert main(["genhash", "-s", "127.0.0.1", "-p", str(port), "-u", "/x", "-V", "www.example.org", "-v"]) == 0
    out = capsys.readouterr()
    assert out.out == hashlib.md5(BODY).hexdigest() + "\n"
    assert "200 OK" in out.err and f"body: {len(BODY)} bytes" in out.err
    assert b"\r\nHost: www.example.org\r\n" in requests[0]


def test_genhash_https(self_signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener, ctx.wrap_socket(listener.accept()[0], server_side=True) as conn:
            while b"\r\n\r\n" not in conn.recv(4096):
                pass
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert main(["genhash", "-S", "-s", "127.0.0.1", "-p", str(port)]) == 0
    thread.join(10)
    assert capsys.readouterr().out == hashlib.md5(BODY).hexdigest() + "\n"


@pytest.mark.parametrize("argv", [["http://127.0.0.1:{closed}/"], ["-s", "127.0.0.1", "-p", "{closed}"],
                                  ["ftp://127.0.0.1/"], []])
def test_genhash_errors_are_one_line_and_exit_non_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    code = main(["genhash", *(a.format(closed=closed) for a in argv)])
    out = capsys.readouterr()
    assert code != 0 and out.out == ""
    assert out.err.startswith("ipvsd genhash: ") and out.err.count("\n") == 1, out.err
    if argv and "ftp" not in argv[0]:
        assert "connection refused" in out.err
