"""`ipvsd probe`: every configured check once, one line per real and check, exit 0 only when all are up."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsd.cli import main


@pytest.fixture
def listening() -> Iterator[int]:
    """A TCP listener on 127.0.0.1; the kernel completes handshakes into its backlog."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, up: int, down: int) -> str:
    path = tmp_path / "ipvsd.toml"
    path.write_text(f"""
[[services]]
address = "10.0.0.1"
port = 80
checks = [{{ type = "tcp", timeout = 1 }}]
reals = [{{ address = "127.0.0.1", port = {up} }}, {{ address = "127.0.0.1", port = {down} }}]

[[services]]
address = "10.0.0.2"
port = 80
checks = [{{ type = "tcp", timeout = 1 }}, {{ type = "on" }}]
reals = [{{ address = "127.0.0.1", port = {up} }}]
""")
    return str(path)


def test_probe_prints_one_line_per_real_and_check(tmp_path: Path, listening: int,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    down = closed_port()
    code = main(["probe", "-c", write_config(tmp_path, listening, down)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == 3  # the shared real's tcp check runs once for both services
    assert any(line.startswith("UP ") and f":{listening}" in line and "connected" in line for line in out)
    assert any(line.startswith("DOWN ") and f":{down}" in line and "refused" in line for line in out)
    assert any(line.startswith("UP ") and " on " in line for line in out)


def test_probe_one_real_json_exit_zero(tmp_path: Path, listening: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["probe", "-c", write_config(tmp_path, listening, closed_port()), "--real", f"127.0.0.1:{listening}",
                 "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {r["check"] for r in rows} == {"tcp", "on"}
    tcp = next(r for r in rows if r["check"] == "tcp")
    assert tcp["up"] and tcp["kind"] == "ok" and sorted(tcp["services"]) == ["-t 10.0.0.1:80", "-t 10.0.0.2:80"]
    assert tcp["latency_ms"] >= 0


def test_probe_bad_config_exits_one_like_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[services]]\naddress = 'nope'\n")
    assert main(["probe", "-c", str(path)]) == 1
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ipvsd probe: {path}") and f"ipvsd check: {path}" in err




@pytest.fixture
def http_server() -> Iterator[int]:
    """A stdlib HTTP server on 127.0.0.1 in a thread, answering 'ok' on / and 404 elsewhere."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok\n" if self.path == "/" else b"nope\n"
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probe_reads_an_ldirectord_config(tmp_path: Path, http_server: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ldirectord.cf"
    path.write_text(f"""checktimeout=2
virtual=10.0.0.1:80
\treal=127.0.0.1:{http_server} gate
\tservice=http
\tcheckport={http_server}
\trequest="/"
\treceive="ok"
\tchecktype=negotiate
""")
    code = main(["probe", "-c", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("UP ") and "http GET /" in out and "200 OK" in out


def test_probe_real_not_in_the_config_is_an_error_naming_it(tmp_path: Path, listening: int,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, listening, closed_port())
    assert main(["probe", "-c", path, "--real", "127.0.0.9"]) == 2
    assert main(["probe", "-c", path, "--real", "127.0.0.1:1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"ipvsd probe: --real 127.0.0.9: no such real server in {path}",
                                f"ipvsd probe: --real 127.0.0.1:1: no such real server in {path}"]


def test_probe_takes_format_like_check(tmp_path: Path, listening: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "director.conf"  # a name that says nothing of the format
    path.write_text(f"virtual=127.0.0.1:{listening}\n\treal=127.0.0.1:{listening} masq\n\tservice=none\n")
    assert main(["probe", "--format", "ldirectord", "-c", str(path)]) == 0
    assert capsys.readouterr().out.startswith("UP ")
    assert main(["probe", "--format", "keepalived", "-c", str(path)]) == 1  # not keepalived syntax


def test_probe_names_a_real_whose_host_does_not_resolve(tmp_path: Path, listening: int,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # .invalid never resolves (RFC 6761); the host's resolver is asked, which is fine for that name.
    path = tmp_path / "ipvsd.toml"
    path.write_text(f"""
[[services]]
address = "10.0.0.1"
port = {listening}
checks = [{{ type = "tcp", timeout = 1 }}]
reals = [{{ address = "127.0.0.1" }}, {{ address = "backend.ipvsd-test.invalid" }}]
""")
    assert main(["probe", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if "backend.ipvsd-test.invalid" in x)
    assert line.startswith(f"DOWN  backend.ipvsd-test.invalid:{listening}  tcp ")
    assert "dns: backend.ipvsd-test.invalid does not resolve (check not run)" in line
    assert any(x.startswith("UP ") and f"127.0.0.1:{listening}" in x for x in out.splitlines())
    assert all(x.startswith("ipvsd probe: cannot resolve backend.ipvsd-test.invalid") for x in err.splitlines())
    # --real takes the name as the configuration writes it
    assert main(["probe", "-c", str(path), "--real", "backend.ipvsd-test.invalid", "--json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["real"] == f"backend.ipvsd-test.invalid:{listening}" and row["kind"] == "dns"
    assert row["check"] == "tcp" and row["up"] is False
