"""Faults around ipvsd (issue 19, scenario 5), on the fake kernel and virtual time: the daemon keeps serving the
table it has, says what is wrong once, and recovers when the fault goes.

Each test drives the real daemon wiring (`tests.unit.test_daemon_shell.Shell`: scripted probes and resolver)
through healthy -> fault -> fault removed. Faults the host cannot be made to have natively are injected at the
edge where the kernel would report them: the file-system calls of the state directory (a read-only mount, a
full disk), the fake kernel's errno hook (netlink errors), the daemon's wall clock (a step), the resolver.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipvsd import config as configmod
from ipvsd.model import DestAttrs, DestKey, Fwd, ServiceAttrs
from ipvsd.shell import bus, control, statefile
from ipvsd.shell.clock import StepWatch
from ipvsd.shell.daemon import Daemon, Options
from tests.unit.test_daemon_shell import VIP, Shell, no_traceback, run


@dataclass
class FaultShell(Shell):
    """`Shell` with its control socket at hand and a wall clock a test can step (`step`)."""

    offset: float = 0.0  # the wall clock minus the loop's: a test steps it

    def wall(self) -> float:
        return 1_700_000_000.0 + asyncio.get_running_loop().time() + self.offset

    @property
    def sock(self) -> str:
        return str(self.tmp / "control.sock")

    async def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        return await control.request(self.sock, cmd, **args)

    async def start(self, **kw: Any) -> Daemon:
        config, _ = configmod.load(str(self.path))
        self.daemon = Daemon(Options(config_path=str(self.path), watch=False, **kw), config, lambda: self.kernel,
                             lookup=self.lookup, probe_factory=self.probes, wall=self.wall)
        self.daemon.bus.subscribe(self.events.append)
        self.task = asyncio.create_task(self.daemon.run())
        return self.daemon


# --- the state directory: read-only, full ---------------------------------------------------------------------


@contextmanager
def broken_dir(monkeypatch: pytest.MonkeyPatch, where: Path, err: int) -> Iterator[None]:
    """Make the file system under `where` fail as a read-only mount (EROFS: nothing is created, renamed or
    removed there) or a full disk (ENOSPC: data does not reach the disk, which fsync reports) would."""
    real_open, real_replace, real_fsync = os.open, os.replace, os.fsync
    root = str(where.resolve())

    def under(path: Any) -> bool:
        return os.path.abspath(os.fsdecode(path)).startswith(root + os.sep)

    def fail(what: Any) -> OSError:
        return OSError(err, os.strerror(err), os.fsdecode(what))

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if err == errno.EROFS and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and under(path):
            raise fail(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        if err == errno.EROFS and (under(src) or under(dst)):
            raise fail(dst)
        real_replace(src, dst, **kw)

    def fsync(fd: int) -> None:
        if err == errno.ENOSPC and under(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(err, os.strerror(err))
        real_fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "open", open_)
        m.setattr(os, "replace", replace)
        m.setattr(os, "fsync", fsync)
        yield


def said(caplog: pytest.LogCaptureFixture, *words: str, level: int = logging.WARNING) -> list[str]:
    """The log lines at `level` or above that contain every one of `words`."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= level and all(w in r.getMessage() for w in words)]


def passes(sh: Shell) -> int:
    return sum(1 for e in sh.events if isinstance(e, bus.PassDone))


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC], ids=["read-only", "full"])
def test_state_dir_read_only_or_full_keeps_managing_the_table_says_it_once_and_writes_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], settings="drain_timeout = 600")
    state = tmp_path / "state"
    text = os.strerror(err)

    async def go() -> None:
        d = await sh.start(resync=5.0)
        await sh.until(lambda: d.control is not None, "the control socket")
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 1, ("127.0.0.1", 3): 1}), "the table")
        assert (state / "state.json").exists()
        sh.kernel.set_counters(VIP, DestKey.of("127.0.0.1", 2), active_conns=3)  # so its drain lasts
        with broken_dir(monkeypatch, state, err):
            # A drain changes both files (maintenance.json and the drain's start in state.json), and a real
            # going down changes the table: neither may wait for the disk.
            answer = await sh.ask("drain", real="127.0.0.1:2")
            assert answer["applied"] is True
            sh.probes.ok[3] = False
            await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 0}), "the drain and the real down")
            n = passes(sh)
            await sh.until(lambda: passes(sh) >= n + 5, "five more passes", timeout=120)
            assert d.reconciler is not None and d.reconciler.memory.drains, "the drain is kept in memory"
            assert not any(isinstance(e, bus.PassFailed) or (isinstance(e, bus.PassDone) and e.error)
                           for e in sh.events), "no pass failed for the disk"
            for name in ("state.json", "maintenance.json"):
                lines = said(caplog, f"cannot write {state / name}: {text}", level=logging.ERROR)
                assert len(lines) == 1, (name, lines)  # once, not every pass
            assert not (state / "maintenance.json").exists(), "nothing was written while the fault lasted"
        # The fault goes: the next pass writes both files, and says so once.
        await sh.until(lambda: bool(said(caplog, f"{state / 'state.json'} written again", level=logging.INFO)),
                       "state.json written again", timeout=60)
        await sh.until(lambda: bool(said(caplog, f"{state / 'maintenance.json'} written again",
                                         level=logging.INFO)), "maintenance.json written again", timeout=60)
        saved = statefile.load(state / "state.json")
        assert VIP in saved.owned and (VIP, DestKey.of("127.0.0.1", 2)) in saved.drains
        assert "127.0.0.1" in (state / "maintenance.json").read_text()
        assert await sh.weights() == {("127.0.0.1", 1): 1, ("127.0.0.1", 2): 0}
        assert await sh.stop() == 0

    run(go)
    no_traceback(caplog)


# --- a corrupt state file at start ----------------------------------------------------------------------------

GOOD = {"version": 1, "owned": [{"af": 2, "protocol": 6, "addr": "10.2.0.240", "port": 80, "fwmark": 0}],
        "drains": [], "maintenance": [], "quorum": [], "daemons": [], "ramps": []}


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00\xff\xfe garbage \x89PNG")


def _truncated(p: Path) -> None:
    p.write_text(json.dumps(GOOD)[:57])


def _wrong_types(p: Path) -> None:
    p.write_text(json.dumps({**GOOD, "owned": [{"af": "inet", "addr": 7}], "drains": "none"}))


def _a_list(p: Path) -> None:
    p.write_text(json.dumps([GOOD]))


def _a_directory(p: Path) -> None:
    p.mkdir()
    (p / "oops").write_text("an operator's mistake")


@pytest.mark.parametrize("spoil", [_garbage, _truncated, _wrong_types, _a_list, _a_directory],
                         ids=["garbage", "truncated", "wrong-types", "a-list", "a-directory"])
def test_a_corrupt_state_file_at_start_is_set_aside_the_table_adopted_and_a_good_one_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, spoil: Callable[[Path], None]) -> None:
    caplog.set_level(logging.INFO)
    sh = Shell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2"])
    state = tmp_path / "state"
    state.mkdir()
    spoil(state / "state.json")

    async def go() -> None:
        # What a previous run left in the kernel: the daemon must adopt it, not rebuild it nor wait for checks.
        await sh.kernel.add_service(VIP, ServiceAttrs(scheduler="rr"))
        for port in (1, 2):
            await sh.kernel.add_dest(VIP, DestKey.of("127.0.0.1", port), DestAttrs(fwd=Fwd.MASQ, weight=1))
        before = await sh.kernel.services()
        await sh.start(resync=5.0)
        await sh.until(lambda: passes(sh) >= 3, "three passes", timeout=60)
        assert await sh.kernel.services() == before, "the table it found is served as it was"
        saved = statefile.load(state / "state.json")  # a good file again (raises if not)
        assert saved.owned == {VIP}
        assert await sh.stop() == 0

    run(go)
    lines = said(caplog, str(state / "state.json"), "unreadable state file", level=logging.ERROR)
    assert len(lines) == 1, lines
    assert f"kept as {state / 'state.json.corrupt'}" in lines[0]
    assert (state / "state.json.corrupt").exists(), "the bad file is kept for the operator"
    no_traceback(caplog)


# --- netlink errors -------------------------------------------------------------------------------------------

WRITES = ("-a ", "-e ", "-d ", "-A ", "-E ", "-D ")


@pytest.mark.parametrize(("err", "ops"), [
    (errno.EPERM, WRITES), (errno.ENOMEM, WRITES), (errno.EBUSY, WRITES),  # the kernel refuses every change
    (errno.EINTR, ("-L",)), (errno.ETIMEDOUT, ("-L",)), (errno.EIO, ("-L",)),  # the table cannot be read
], ids=["EPERM", "ENOMEM", "EBUSY", "EINTR-dump", "ETIMEDOUT-dump", "EIO-dump"])
def test_netlink_errors_keep_the_table_are_said_once_retried_with_backoff_and_recover(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, err: int, ops: tuple[str, ...]) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    sh.probes.ok[3] = False
    text = os.strerror(err)
    tried: list[float] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        d = await sh.start(resync=5.0)
        healthy = {("127.0.0.1", 1): 1, ("127.0.0.1", 2): 1}
        await sh.until(sh.has(healthy), "the healthy table")
        n = passes(sh)
        d.bus.subscribe(lambda e: tried.append(loop.time()) if isinstance(e, bus.PassFailed)
                        or (isinstance(e, bus.PassDone) and e.error) else None)
        sh.kernel.fail = lambda op: err if op.startswith(ops) else None
        if ops is not WRITES:  # passes between resyncs work from the mirror: the dump fails at the resync
            await sh.until(lambda: bool(tried), "the resync's dump failing")
        sh.probes.ok[2], sh.probes.ok[3] = False, True  # the table should change: 2 out, 3 in
        await sh.until(lambda: len(tried) >= 6, "six failed passes", timeout=120)
        assert await sh.weights() == healthy, "the table is served as it was"
        gaps = [b - a for a, b in itertools.pairwise(tried)]
        assert gaps[:4] == pytest.approx([0.5, 1.0, 2.0, 4.0], abs=0.01), gaps  # the backoff doubles
        lines = said(caplog, text, level=logging.ERROR)
        assert len(lines) == 1, lines  # once, not at every retry
        assert ("ipvsadm -" if ops is WRITES else "reconcile failed") in lines[0]
        sh.kernel.fail = None  # the fault goes: the next retry goes through
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 3): 1}), "the table the checks ask for",
                       timeout=60)
        assert passes(sh) > n
        assert await sh.stop() == 0

    run(go)
    assert len(said(caplog, "works again after", level=logging.INFO)) == 1
    no_traceback(caplog)


# --- the control socket's directory removed -------------------------------------------------------------------


def test_the_control_sockets_directory_removed_is_made_again_after_the_next_pass(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["127.0.0.1:1"])
    run_dir = tmp_path / "run" / "ipvsd"  # as /run/ipvsd, which tmpfiles or an operator may remove
    sock = str(run_dir / "control.sock")

    async def go() -> None:
        d = await sh.start(resync=5.0, socket=sock)
        await sh.until(lambda: d.control is not None, "the control socket")
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "the table")
        assert (await control.request(sock, "status"))["services"]
        reader, writer = await asyncio.open_unix_connection(sock)  # a client connected before the fault
        shutil.rmtree(tmp_path / "run")
        with pytest.raises(control.ControlError, match="no such socket"):
            await control.request(sock, "status")
        n = passes(sh)
        await sh.until(lambda: passes(sh) > n, "the next pass (the resync)", timeout=10)
        answer = await control.request(sock, "status")  # back, with no restart
        assert answer["services"][0]["reals"][0]["state"] == "up"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        await sh.until(lambda: passes(sh) > n + 3, "three more passes", timeout=30)
        assert await sh.weights() == {("127.0.0.1", 1): 1}
        writer.write(b'{"cmd": "status"}\n')  # ... is still served on its connection
        assert json.loads(await reader.readline())["ok"] is True
        writer.close()
        assert await sh.stop() == 0
        assert not os.path.exists(sock), "a clean stop removes the socket it made again"

    run(go)
    lines = said(caplog, sock, "removed")
    assert lines == [f"control socket {sock} had been removed; listening there again"], lines
    no_traceback(caplog)


def test_a_control_socket_that_cannot_be_made_again_is_said_once_and_made_when_it_can(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["127.0.0.1:1"])
    sock = str(tmp_path / "run" / "control.sock")

    async def go() -> None:
        d = await sh.start(resync=5.0, socket=sock)
        await sh.until(lambda: d.control is not None, "the control socket")
        shutil.rmtree(tmp_path / "run")
        (tmp_path / "run").write_text("a file where the directory was")  # mkdir fails: ENOTDIR/EEXIST
        n = passes(sh)
        await sh.until(lambda: passes(sh) > n + 3, "three passes", timeout=60)
        (tmp_path / "run").unlink()
        await sh.until(lambda: os.path.exists(sock), "the socket made again", timeout=10)
        assert (await control.request(sock, "status"))["services"]
        assert await sh.stop() == 0

    run(go)
    assert len(said(caplog, sock, "cannot be made again", level=logging.ERROR)) == 1
    assert len(said(caplog, sock, "listening there again")) == 1
    no_traceback(caplog)


# --- a real's name that stops resolving -----------------------------------------------------------------------


def test_a_real_whose_name_stops_resolving_keeps_its_address_said_once_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["rs1.example:1", "127.0.0.1:2"])  # docs/operations.md: "a name that stops resolving keeps its
    sh.names["rs1.example"] = "127.0.0.1"       # last address"; ldirectord and keepalived resolve at load only
    table = {("127.0.0.1", 1): 1, ("127.0.0.1", 2): 1}

    async def go() -> None:
        await sh.start(resync=5.0)
        await sh.until(sh.has(table), "the table")
        del sh.names["rs1.example"]  # NXDOMAIN from now on: the resolver's answer, not the real's health
        await sh.until(lambda: bool(said(caplog, "cannot resolve rs1.example")), "the re-resolution", timeout=90)
        n = passes(sh)
        await sh.until(lambda: passes(sh) >= n + 40, "four more dns_ttl rounds", timeout=300)
        assert await sh.weights() == table, "the real keeps its last address in the table"
        assert sh.reals()["127.0.0.1:1"][0] == "up"
        lines = said(caplog, "rs1.example")
        assert lines == ["cannot resolve rs1.example ([Errno -2] Name or service not known); keeping its last "
                         "address 127.0.0.1"], lines  # once, not every dns_ttl
        sh.names["rs1.example"] = "127.0.0.1"
        await sh.until(lambda: bool(said(caplog, "rs1.example resolves again", level=logging.INFO)),
                       "the name resolving again", timeout=90)
        sh.names["rs1.example"] = "127.0.0.3"  # and a new address is followed as before
        await sh.until(sh.has({("127.0.0.3", 1): 1, ("127.0.0.1", 2): 1}), "the new address", timeout=90)
        assert await sh.stop() == 0

    run(go)
    assert said(caplog, "rs1.example resolves again", level=logging.INFO) == ["rs1.example resolves again (to "
                                                                             "127.0.0.1)"]
    no_traceback(caplog)


# --- the wall clock stepped forward and back ------------------------------------------------------------------


async def changes(sh: Shell, port: int, until: Callable[[int | None], bool], timeout: float) -> list[
        tuple[float, int | None]]:
    """Sample the weight of real `port` every 0.25 s (virtual) until `until(weight)`; return (time, weight) at
    each change, time from the call."""
    loop = asyncio.get_running_loop()
    t0, seen = loop.time(), [(0.0, (await sh.weights()).get(("127.0.0.1", port)))]
    while not until(seen[-1][1]):
        assert loop.time() - t0 < timeout, seen
        await asyncio.sleep(0.25)
        w = (await sh.weights()).get(("127.0.0.1", port))
        if w != seen[-1][1]:
            seen.append((loop.time() - t0, w))
    return seen


@pytest.mark.parametrize("jump", [3600.0, -3600.0], ids=["forward", "back"])
def test_a_clock_step_neither_cuts_nor_stretches_a_slow_start(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                               jump: float) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2"])
    sh.path.write_text(sh.path.read_text().replace('scheduler = "rr"', 'scheduler = "rr"\nslow_start = 40.0')
                       .replace("port = 2\n", "port = 2\nweight = 100\n"))

    async def go() -> None:
        await sh.start(resync=5.0)
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 100}), "the table")
        sh.probes.ok[2] = False
        await sh.until(sh.has({("127.0.0.1", 1): 1}), "real 2 down")
        sh.probes.ok[2] = True  # back up: ramps 25, 50, 75, 100 over 40 s, a step every 10 s
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 25}), "the ramp's first step")
        await asyncio.sleep(5.0)
        sh.offset += jump  # mid-step; the resync pass (at most 5 s away) sees it
        seen = await changes(sh, 2, lambda w: w == 100, timeout=60)
        # From 5 s into the ramp: 50 at 10 s, 75 at 20 s, 100 at 30 s (a pass runs at each step), as without a
        # step; before the fix +1 h gave 100 at the next pass, -1 h kept 25 for an hour.
        assert [w for _, w in seen] == [25, 50, 75, 100], seen
        assert [round(t) for t, _ in seen[1:]] == [5, 15, 25], seen
        assert await sh.stop() == 0

    run(go)
    lines = said(caplog, "wall clock stepped")
    assert lines == [f"the wall clock stepped {'forward' if jump > 0 else 'back'} by 3600s; drains, slow starts "
                     "and graces under way keep their length"], lines
    no_traceback(caplog)


@pytest.mark.parametrize("jump", [3600.0, -3600.0], ids=["forward", "back"])
def test_a_clock_step_neither_cuts_nor_stretches_a_drain(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch, jump: float) -> None:
    caplog.set_level(logging.INFO)
    sh = FaultShell(tmp_path)
    sh.write(["127.0.0.1:1", "127.0.0.1:2"], settings="drain_timeout = 600")
    state = tmp_path / "state"

    async def go() -> None:
        d = await sh.start(resync=5.0)
        await sh.until(lambda: d.control is not None, "the control socket")
        await sh.until(sh.has({("127.0.0.1", 1): 1, ("127.0.0.1", 2): 1}), "the table")
        sh.kernel.set_counters(VIP, DestKey.of("127.0.0.1", 2), active_conns=3)  # connections that never end
        loop = asyncio.get_running_loop()
        await sh.ask("drain", real="127.0.0.1:2", until=sh.wall() + 7200)  # an absolute time: not moved
        t0 = loop.time()
        since = statefile.load(state / "state.json").drains[(VIP, DestKey.of("127.0.0.1", 2))]
        await asyncio.sleep(100.0)
        assert await sh.weights() == {("127.0.0.1", 1): 1, ("127.0.0.1", 2): 0}
        sh.offset += jump
        seen = await changes(sh, 2, lambda w: w is None, timeout=1200)
        # Deleted once drain_timeout (600 s) has passed, at the resync after it; before the fix +1 h deleted at
        # the next pass (100 s in), -1 h after 4200 s.
        gone = seen[-1][0] + 100.0
        assert 600.0 <= gone <= 606.0, seen
        assert loop.time() - t0 == pytest.approx(gone, abs=0.3)
        saved = statefile.load(state / "state.json")  # the moved start is what a restart would read
        assert (VIP, DestKey.of("127.0.0.1", 2)) not in saved.drains
        entry = json.loads((state / "maintenance.json").read_text())["maintenance"][0]
        assert entry["until"] == pytest.approx(1_700_000_000.0 + t0 + 7200.0, abs=1.0)  # not moved
        assert entry["since"] == pytest.approx(since + jump, abs=1.0)  # moved
        assert await sh.stop() == 0

    run(go)
    assert len(said(caplog, "wall clock stepped")) == 1
    no_traceback(caplog)


def test_the_step_watch_tells_a_step_from_time_passing_and_slewing() -> None:
    wall, mono = [1000.0], [5.0]
    watch = StepWatch(lambda: wall[0], lambda: mono[0])
    assert watch.step() == 0.0  # the first reading
    wall[0] += 30.0
    mono[0] += 30.0
    assert watch.step() == 0.0  # time passing
    wall[0] += 30.5
    mono[0] += 30.0
    assert watch.step() == 0.0  # NTP slewing (well under the tolerance between passes)
    wall[0] -= 3600.0
    mono[0] += 1.0
    assert watch.step() == pytest.approx(-3601.0)
    wall[0] += 1.0
    mono[0] += 1.0
    assert watch.step() == 0.0  # said once: the next reading starts from the stepped clock
