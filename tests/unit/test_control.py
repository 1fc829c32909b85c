"""The control socket end to end: status, drain/undrain (surviving a restart), maintenance_dir, reload, events,
and who may connect — against the fake kernel and real loopback HTTP servers."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import pwd
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipvsd.errors import IpvsdError
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import DestKey
from ipvsd.shell import control
from tests.support.daemon import VIP, Harness, write_config
from tests.support.pages import Pages, until

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    pages = Pages()
    ports = [await pages.start() for _ in range(2)]
    h = Harness(tmp_path, pages, ports, FakeKernel(), str(tmp_path / "control.sock"))
    write_config(h.path, ports)
    await h.start()
    try:
        yield h
    finally:
        if h.daemon is not None:
            await h.stop()
        pages.close()


async def test_status_reports_each_real_with_reason_and_weights(harness: Harness) -> None:
    p1, p2 = harness.ports
    await until(harness.has({p1: 1, p2: 1}), "both reals in")
    await until(lambda: _states_are(harness, {p1: "up", p2: "up"}), "both up in status")
    harness.pages.body[p1] = "debian10"
    await until(harness.has({p2: 1}), "rs1 out")
    answer = await harness.ask("status")
    reals = {r["real"]: r for r in answer["services"][0]["reals"]}
    r1, r2 = reals[f"127.0.0.1:{p1}"], reals[f"127.0.0.1:{p2}"]
    assert answer["services"][0]["service"] == "TCP 10.2.0.240:80"
    assert r1["state"] == "down" and "debian11" in r1["reason"] and r1["kernel_weight"] is None
    assert r1["checks"][0]["kind"] == "receive" and r1["checks"][0]["failures"] >= 1
    assert r2["state"] == "up" and r2["weight"] == 1 and r2["kernel_weight"] == 1
    assert r1["since"] > r2["since"] - 60


async def _states_are(h: Harness, want: dict[int, str]) -> bool:
    return await h.real_states() == want


async def test_drain_quiesces_at_once_deletes_when_idle_and_survives_a_restart(harness: Harness) -> None:
    p1, p2 = harness.ports
    await until(harness.has({p1: 1, p2: 1}), "both reals in")
    rs1 = DestKey.of("127.0.0.1", p1)
    harness.kernel.set_counters(VIP, rs1, active_conns=3)  # a client is still connected to rs1
    answer = await harness.ask("drain", real=f"127.0.0.1:{p1}", reason="kernel upgrade")
    assert answer["applied"] and answer["reals"] == [f"TCP 10.2.0.240:80 -> 127.0.0.1:{p1}"]
    assert await harness.weights() == {p1: 0, p2: 1}, "weight 0 by the time drain answers"
    assert (await harness.real_states())[p1] == "maint"
    assert json.loads((harness.tmp / "state" / "maintenance.json").read_text())["maintenance"][0]["reason"] \
        == "kernel upgrade"
    harness.kernel.set_counters(VIP, rs1, active_conns=0)  # the connection ended
    assert harness.daemon is not None
    harness.daemon.dirty.set()
    await until(harness.has({p2: 1}), "the idle drained real deleted")

    await harness.stop()
    await harness.start()
    assert harness.daemon is not None
    await until(lambda: _synced(harness), "a pass with every check's result after the restart")
    assert await harness.weights() == {p2: 1}, "still drained after a restart"
    assert (await harness.real_states())[p1] == "maint"

    answer = await harness.ask("undrain", real="127.0.0.1")  # no port: every entry of that address
    assert [m["port"] for m in answer["removed"]] == [p1]
    await until(harness.has({p1: 1, p2: 1}), "rs1 back after undrain")
    with pytest.raises(control.ControlError, match="not drained"):
        await harness.ask("undrain", real=f"127.0.0.1:{p1}")


async def _synced(h: Harness) -> bool:
    assert h.daemon is not None
    d = h.daemon
    return bool(d.probes.jobs) and d.settled >= set(d.probes.jobs) and d.passes.done > 1


async def test_drain_refuses_unknown_reals_and_past_deadlines(harness: Harness) -> None:
    with pytest.raises(control.ControlError, match="matches no configured real"):
        await harness.ask("drain", real="192.0.2.77")
    with pytest.raises(control.ControlError, match="past"):
        await harness.ask("drain", real="127.0.0.1", until=1.0)
    for bad in (float("nan"), float("inf"), "soon", [1]):
        with pytest.raises(control.ControlError, match="until"):
            await harness.ask("drain", real="127.0.0.1", until=bad)
    assert not (harness.tmp / "state" / "maintenance.json").exists(), "nothing was drained"
    with pytest.raises(control.ControlError, match="no such virtual service"):
        await harness.ask("drain", real="127.0.0.1", service="10.9.9.9:80")


async def test_drain_until_expires_by_itself(harness: Harness) -> None:
    p1, p2 = harness.ports
    await until(harness.has({p1: 1, p2: 1}), "both reals in")
    await harness.ask("drain", real=f"127.0.0.1:{p1}", service="TCP 10.2.0.240:80", until=time.time() + 0.5)
    assert await harness.weights() == {p2: 1}
    assert harness.daemon is not None

    async def expired() -> bool:
        assert harness.daemon is not None
        harness.daemon.dirty.set()  # the resync timer would do it too, later
        return await harness.weights() == {p1: 1, p2: 1}

    await until(expired, "the drain to expire and rs1 to come back")


async def test_maintenance_dir_file_drains_and_its_removal_undrains(harness: Harness) -> None:
    p1, p2 = harness.ports
    await until(harness.has({p1: 1, p2: 1}), "both reals in")
    mdir = harness.tmp / "maint"
    mdir.mkdir()
    (mdir / f"127.0.0.1:{p2}").touch()
    assert harness.daemon is not None
    harness.daemon.dirty.set()
    await until(harness.has({p1: 1}), "the file's real drained and deleted (idle)")
    with pytest.raises(control.ControlError, match="maintenance_dir"):
        await harness.ask("undrain", real=f"127.0.0.1:{p2}")
    (mdir / f"127.0.0.1:{p2}").unlink()
    harness.daemon.dirty.set()
    await until(harness.has({p1: 1, p2: 1}), "back once the file is gone")


async def test_events_stream_transitions_reloads_and_drift(harness: Harness) -> None:
    p1, p2 = harness.ports
    await until(harness.has({p1: 1, p2: 1}), "both reals in")
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in control.events(harness.sock):
            got.append(event)

    reader = asyncio.create_task(read())
    try:
        await until(lambda: _subscribed(harness), "the subscription")
        harness.pages.body[p1] = "debian10"
        await until(lambda: _has(got, "transition"), "a transition event")
        t = next(e for e in got if e["type"] == "transition")
        assert (t["real"], t["state"], t["kind"], t["service"]) == \
            (f"127.0.0.1:{p1}", "down", "receive", "TCP 10.2.0.240:80")
        assert t["ts"].endswith("Z") and t["reason"]
        await harness.kernel.del_dest(VIP, DestKey.of("127.0.0.1", p2))  # behind ipvsd's back
        assert harness.daemon is not None
        harness.daemon.wake(read=True)  # as the resync timer does, sooner
        await until(lambda: _has(got, "drift"), "a drift event")
        assert "-a -t 10.2.0.240:80 -r 127.0.0.1:" in next(e for e in got if e["type"] == "drift")["op"]
        harness.path.write_text(harness.path.read_text().replace('scheduler = "rr"', 'schedulr = "rr"'))
        with pytest.raises(control.ControlError, match="reload rejected"):
            await harness.ask("reload")
        reload = next(e for e in got if e["type"] == "reload")
        assert reload["outcome"] == "error" and "schedulr" in reload["reason"]
    finally:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader


async def _subscribed(h: Harness) -> bool:
    assert h.daemon is not None
    return bool(h.daemon.events._subs)


async def _has(events: list[dict[str, Any]], kind: str) -> bool:
    return any(e["type"] == kind for e in events)


async def test_events_file_sink_follows_rotation(tmp_path: Path) -> None:
    from ipvsd.shell.event_log import EventLog

    path = tmp_path / "events.jsonl"
    bus = EventLog(str(path))
    bus.publish("reload", "new configuration", outcome="ok")
    path.rename(tmp_path / "events.jsonl.1")  # logrotate
    bus.publish("drift", "repaired", op="-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1")
    bus.close()
    old = [json.loads(x) for x in (tmp_path / "events.jsonl.1").read_text().splitlines()]
    new = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["type"] for e in old] == ["reload"] and [e["type"] for e in new] == ["drift"]
    assert new[0]["op"].startswith("-a -t") and new[0]["ts"].endswith("Z")


async def test_a_slow_subscriber_is_told_what_it_lost() -> None:
    from ipvsd.shell.event_log import EventLog

    bus = EventLog(queue=3)
    sub = bus.subscribe()
    for i in range(5):
        bus.publish("drift", f"n{i}")
    first = await sub.get()
    assert first["type"] == "lost" and first["count"] == 2
    assert [(await sub.get())["reason"] for _ in range(3)] == ["n2", "n3", "n4"]
    sub.close()
    assert not bus._subs


async def test_the_socket_refuses_a_client_that_is_not_root_nor_the_daemons_user(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as nobody")
    pages = Pages()
    ports = [await pages.start()]
    # nobody must be able to reach the socket's directory for the credential check to be what refuses it
    sockdir = Path(tempfile.mkdtemp(prefix="ipvsd-ctl-"))
    sockdir.chmod(0o755)
    h = Harness(tmp_path, pages, ports, FakeKernel(), str(sockdir / "control.sock"))
    write_config(h.path, ports)
    await h.start()
    try:
        mode = os.stat(h.sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        out = await asyncio.to_thread(_client_as_nobody, h.sock)
        assert out == f"connect: errno {errno.EACCES}", out  # the file mode stops it at connect()
        os.chmod(h.sock, 0o666)
        out = await asyncio.to_thread(_client_as_nobody, h.sock)
        assert "only root and the daemon's user" in out, out  # SO_PEERCRED stops it
        assert (await h.ask("status"))["services"], "root is served"
    finally:
        await h.stop()
        pages.close()
        shutil.rmtree(sockdir, ignore_errors=True)
    assert not Path(h.sock).exists(), "the socket is removed on stop"


def _client_as_nobody(sock: str) -> str:
    """Ask for `status` as nobody, from a forked child that drops root and speaks the protocol over a plain socket.

    Nothing is executed or imported as nobody, so the test works wherever the checkout and the interpreter are
    (a /root or mktemp -d checkout that nobody cannot read).
    """
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls until os._exit
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(sock)
                    s.sendall(b'{"cmd": "status"}\n')
                    answer = s.makefile("rb").readline()
                os.write(w, b"answer: " + answer.strip())
            except OSError as e:
                os.write(w, f"connect: errno {e.errno}".encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


async def test_a_second_daemon_does_not_steal_a_live_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")

    async def status(req: dict[str, Any]) -> dict[str, Any]:
        return {"n": 1}

    first = control.ControlServer(path, {"status": status}, lambda: None)  # type: ignore[arg-type,return-value]
    await first.start()
    second = control.ControlServer(path, {}, lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(IpvsdError, match="another ipvsd"):
        await second.start()
    assert (await control.request(path, "status"))["n"] == 1
    await first.close()
    assert not Path(path).exists()
    Path(path).touch()
    with pytest.raises(IpvsdError, match="not a socket"):
        await second.start()


def test_socket_path_follows_socket_then_state_dir_then_config() -> None:
    assert control.socket_path(socket="/a.sock", state_dir="/s", configured="/c.sock") == "/a.sock"
    assert control.socket_path(state_dir="/s", configured="/c.sock") == "/s/control.sock"
    assert control.socket_path(configured="/c.sock") == "/c.sock"
    assert control.socket_path() == "/run/ipvsd/control.sock"


async def test_cli_status_and_events_through_the_socket(harness: Harness) -> None:
    p1, p2 = harness.ports
    await until(harness.has({p1: 1, p2: 1}), "both reals in")
    events = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ipvsd", "events", "--type", "reload", "-n", "1", "--socket", harness.sock, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await until(lambda: _subscribed(harness), "the CLI's subscription", timeout=20)
    assert harness.daemon is not None
    await harness.daemon.reload("test")  # unchanged
    out, err = await asyncio.wait_for(events.communicate(), 20)
    assert events.returncode == 0, err
    event = json.loads(out)
    assert (event["type"], event["outcome"], event["trigger"]) == ("reload", "unchanged", "test")

    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ipvsd", "status", "-v", "--socket", harness.sock, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(status.communicate(), 20)
    assert status.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0].startswith("TCP 10.2.0.240:80  rr")
    assert lines[1].split()[:5] == ["REAL", "STATE", "WEIGHT", "KERNEL", "CONNS"]
    row = next(x for x in lines if x.strip().startswith(f"127.0.0.1:{p1}"))
    assert row.split()[1:4] == ["up", "1", "1"]
    assert any(x.strip().startswith(f"http 127.0.0.1:{p1}") for x in lines), "-v shows each check"


def test_status_render_marks_maintenance_and_missing_kernel_entries() -> None:
    from ipvsd.commands.status import age, render

    answer = {"services": [{"service": "TCP 10.0.0.1:80", "scheduler": "wlc", "in_kernel": True, "quorum": False,
                            "fail_open": False, "reals": [
                                {"real": "10.0.0.2:80", "name": "web1", "state": "maint",
                                 "reason": "maintenance (ipvsd drain): disk", "since": 1000.0, "weight": 3,
                                 "kernel_weight": None, "active": 0, "inactive": 2, "checks": [],
                                 "maintenance": {"addr": "10.0.0.2", "port": 0, "until": None}}]}],
              "maintenance": [{"addr": "10.9.9.9", "port": 0, "source": "ipvsd drain"}]}
    text = render(answer, now=1000.0 + 3 * 3600 + 5)
    assert "QUORUM LOST" in text.splitlines()[0]
    row = text.splitlines()[2].split()
    assert row[:7] == ["10.0.0.2:80", "(web1)", "maint", "3", "-", "0/2", "3h"]
    assert "10.9.9.9 matches no real" in text
    assert [age(t, 100.0) for t in (99.0, 40.0, 100 - 7200, None)] == ["1s", "1m", "2h", "-"]


def test_maintenance_store_round_trip_and_current(tmp_path: Path) -> None:
    from ipvsd.core.maintenance import MaintenanceKey, new_entry
    from ipvsd.shell import maintenance_store as maintenance

    store = maintenance.Store(tmp_path / "maintenance.json")
    keep = new_entry(MaintenanceKey("10.0.0.2", 80, VIP), now=time.time(), reason="disk", until=time.time() + 3600)
    old = new_entry(MaintenanceKey("10.0.0.3"), now=time.time(), until=time.time() - 1)
    store.add(keep)
    store.add(old)
    again = maintenance.Store(tmp_path / "maintenance.json")
    again.load()
    assert again.entries == store.entries
    mdir = tmp_path / "maint"
    mdir.mkdir()
    for name in ("10.0.0.4", "[2001:db8::5]:443", "web6:8080", "nohost", ".hidden"):
        (mdir / name).touch()
    keys = maintenance.current(tmp_path, str(mdir), {"web6": "10.0.0.6"}.get, now=time.time())
    assert keys == {MaintenanceKey("10.0.0.2", 80, VIP), MaintenanceKey("10.0.0.4"),
                    MaintenanceKey("2001:db8::5", 443), MaintenanceKey("10.0.0.6", 8080)}
    assert [e.key for e in again.expire(time.time())] == [MaintenanceKey("10.0.0.3")]
    (tmp_path / "maintenance.json").write_text("{")
    with pytest.raises(IpvsdError, match="unreadable"):
        maintenance.Store(tmp_path / "maintenance.json").load()


def test_parse_real_and_until() -> None:
    from ipvsd.core.maintenance import parse_real, parse_until

    assert parse_real("10.0.0.1") == ("10.0.0.1", 0)
    assert parse_real("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_real("2001:db8::1") == ("2001:db8::1", 0)
    assert parse_real("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_real("web1:8080") == ("web1", 8080)
    with pytest.raises(ValueError):
        parse_real("10.0.0.1:http")
    assert parse_until("90", now=1000.0) == 1090.0
    assert parse_until("15m", now=0.0) == 900.0 and parse_until("2h", now=0.0) == 7200.0
    assert parse_until("2030-01-01T00:00:00+00:00", now=0.0) == 1893456000.0
    with pytest.raises(ValueError, match="duration"):
        parse_until("tomorrow", now=0.0)


async def test_bad_requests_get_an_answer_and_the_socket_keeps_serving(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")

    async def status(req: dict[str, Any]) -> dict[str, Any]:
        return {"n": 1}

    server = control.ControlServer(path, {"status": status}, lambda: None)  # type: ignore[arg-type,return-value]
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=control.LIMIT)
        for raw in (b"[" * 200_000 + b"\n", b"{" * 100_000 + b"\n", b"not json\n", b"[1, 2]\n",
                    b'{"cmd": "status"}\n'):
            writer.write(raw)
            await writer.drain()
            answers = json.loads(await asyncio.wait_for(reader.readline(), 10))
            if raw.startswith(b'{"cmd"'):
                assert answers == {"ok": True, "n": 1}
            else:
                assert answers["ok"] is False and answers["error"].startswith("bad request"), answers
        writer.close()
    finally:
        await server.close()


async def test_closing_with_an_events_client_connected_logs_no_error(tmp_path: Path) -> None:
    # Found by the fuzz (scripts/reliability_lab/fuzz.py): Python 3.11's stream server asks a cancelled client
    # task for its exception, and asyncio logged "Exception in callback ... CancelledError" at every stop that
    # had an `ipvsd events` client connected.
    from ipvsd.shell.event_log import EventLog

    path = str(tmp_path / "c.sock")
    server = control.ControlServer(path, {}, EventLog().subscribe)
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    await server.start()
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b'{"cmd": "events"}\n')
    assert json.loads(await asyncio.wait_for(reader.readline(), 10)) == {"ok": True}
    await server.close()
    await asyncio.sleep(0.01)  # the stream server's done-callback runs after the task ends
    writer.close()
    assert errors == []
