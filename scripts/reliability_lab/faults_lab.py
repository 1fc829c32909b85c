"""Scenario 5 on the real kernel: faults made around the running daemon in the lab VM, under traffic.

The state directory made read-only (a read-only bind mount) and full (a small tmpfs, filled), a corrupt state
file at a start, the control socket removed, the VM's wall clock stepped an hour forward and back, a real's name
that stops resolving (/etc/hosts, bind-mounted). For each: the table must stay what it should be (and follow the
reals while the fault lasts), no request may fail, the daemon must say what is wrong once, and recover when the
fault goes. Netlink errors, which a real kernel cannot be made to return on demand, are left to the fake kernel
(tests/unit/test_faults.py, run natively by scripts/reliability).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from scripts.bench_lab.poll import Table
from scripts.reliability_lab.rig import (
    VIP,
    Real,
    Result,
    Rig,
    Say,
    Service,
    expected,
    failed,
    total,
    traffic,
)
from tests.netns import sh

HOSTS = Path("/etc/hosts")


def _wait(cond: Callable[[], bool], timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic()
        time.sleep(0.1)
    return None


def run(rig: Rig, say: Say) -> Result:
    lab = rig.lab
    state = rig.work / "state"
    # The real the faults make die and come back serves a side service (VIP:84), not the one the traffic uses:
    # requests in flight to a real as it dies would fail whatever ipvsd does.
    rs3 = lab.real("rs3")
    rs3.start()
    rig.write(rig.layout.with_service(Service("side", 84, (Real(rs3.addr),))))
    base = expected(rig.layout, set(), set())
    faults: list[Result] = []

    def said(offset: int, pattern: str) -> int:
        return len(re.findall(pattern, rig.log_since(offset), re.M))

    def logged(offset: int, pattern: str) -> bool:
        return said(offset, pattern) > 0

    def record(name: str, t0: float, offset: int, *, once: str, recovered: float | None, table_ok: bool,
               extra: Result | None = None) -> None:
        counts = reqs.between(t0, time.monotonic())
        r: Result = {"fault": name, "said": said(offset, once), "recovered_s": None if recovered is None else
                     round(recovered - t0, 2), "table_ok": table_ok, "requests": total(counts),
                     "failed": failed(counts), "running": rig.running, **(extra or {})}
        r["ok"] = r["said"] == 1 and recovered is not None and table_ok and r["failed"] == 0 and r["running"]
        faults.append(r)
        say(f"fault {name}: {'ok' if r['ok'] else 'NOT OK'} {r}")

    def follow_reals(offset: int) -> bool:
        """While the fault lasts the daemon must still manage the table: rs3 out when it dies, back after."""
        t = time.monotonic()
        rs3.stop()
        gone = rig.settle(expected(rig.layout, {f"{rs3.addr}:80"}, set()), since=t, timeout=15)
        t = time.monotonic()
        rs3.start()
        back = rig.settle(expected(rig.layout, set(), set()), since=t, timeout=15)
        return gone is not None and back is not None

    def follow_edits() -> bool:
        """...and a service added and removed again: what ipvsd owns changes, so its state file must be written
        (which the fault refuses)."""
        layout = rig.layout
        rig.write(layout.with_service(Service("extra", 82, (Real(lab.real("rs1").addr),))))
        added = rig.settle(expected(rig.layout, set(), set()), since=time.monotonic(), timeout=15)
        rig.write(layout)
        removed = rig.settle(expected(rig.layout, set(), set()), since=time.monotonic(), timeout=15)
        return added is not None and removed is not None

    def restart(prepare: Callable[[], None] = lambda: None) -> float | None:
        rig.kill(signal.SIGTERM)
        prepare()
        t = rig.start()
        return rig.wait_ready(t)

    with traffic(lab, long_lived=0) as (reqs, _ll):
        if rig.settle(base, since=time.monotonic(), timeout=30) is None:
            return {"error": f"the table never became the expected one: {rig.table()}"}

        # 1. read-only state directory: real EROFS, for root as for the daemon's own user. `ip netns exec` gave the
        # daemon its own copy of the mount table: the read-only bind mount is made in there.
        t0, off = time.monotonic(), rig.log_size()
        assert rig.proc is not None
        inside = ("nsenter", "-t", str(rig.proc.pid), "-m", "--")
        sh(*inside, "mount", "--bind", str(state), str(state))
        sh(*inside, "mount", "-o", "remount,ro,bind", str(state))
        managed = follow_edits() and follow_reals(off) and follow_edits()
        sh(*inside, "umount", str(state))
        back = _wait(lambda: said(off, r"state\.json written again") > 0, 30)
        record("state directory read-only", t0, off, once=r"kept in memory only", recovered=back,
               table_ok=managed and rig.table() == base)

        # 2. full: the state directory on a 256 KiB tmpfs, filled
        saved = rig.work / "state.saved"

        def aside() -> None:  # regular files only: the control socket is made again by the daemon
            saved.mkdir(exist_ok=True)
            for f in state.iterdir():
                if f.is_file():
                    shutil.copy2(f, saved / f.name)

        def onto_tmpfs() -> None:
            aside()
            sh("mount", "-t", "tmpfs", "-o", f"size=256k,mode=0700,uid={state.stat().st_uid},"
               f"gid={state.stat().st_gid}", "tmpfs", str(state))
            for f in saved.iterdir():
                if f.is_file():
                    shutil.copy2(f, state / f.name)
                    os.chown(state / f.name, state.stat().st_uid, state.stat().st_gid)

        if restart(onto_tmpfs) is None:
            return {"faults": faults, "error": "no READY after moving the state directory onto a tmpfs"}
        t0, off = time.monotonic(), rig.log_size()
        with contextlib.suppress(OSError), (state / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        managed = follow_edits() and follow_reals(off) and follow_edits()
        (state / "filler").unlink()
        back = _wait(lambda: said(off, r"state\.json written again") > 0, 30)
        record("state directory full", t0, off, once=r"kept in memory only", recovered=back,
               table_ok=managed and rig.table() == base)

        def off_tmpfs() -> None:
            aside()
            sh("umount", str(state))
            for f in saved.iterdir():
                shutil.copy2(f, state / f.name)

        if restart(off_tmpfs) is None:
            return {"faults": faults, "error": "no READY after leaving the tmpfs"}

        # 3. a corrupt state file at a start (after a crash)
        t0, off = time.monotonic(), rig.log_size()
        rig.kill(signal.SIGKILL)
        (state / "state.json").write_text('{"version": 1, "owned": [tru')
        t_start = rig.start()
        ready = rig.wait_ready(t_start)
        changes = rig.changes(t0, (ready or time.monotonic()) + 1.0)

        def good() -> bool:
            with contextlib.suppress(OSError, ValueError):
                return isinstance(json.loads((state / "state.json").read_text()), dict)
            return False

        back = _wait(good, 30) if ready else None
        record("corrupt state file at start", t0, off, once=r"starting without it", recovered=back,
               table_ok=changes == 0 and rig.table() == base, extra={"table_changes": changes})

        # 4. the control socket removed
        t0, off = time.monotonic(), rig.log_size()
        sock = state / "control.sock"
        sock.unlink()
        back = _wait(lambda: sock.exists() and rig.control("status").get("ok") is True, 30)
        record("control socket removed", t0, off, once=r"had been removed; listening there again", recovered=back,
               table_ok=rig.table() == base)

        # 5. the wall clock stepped an hour forward, then back (the VM's own clock; the suite times with monotonic)
        for step, word in ((3600, "forward"), (-3600, "back")):
            t0, off = time.monotonic(), rig.log_size()
            sh("date", "-s", f"@{int(time.time()) + step}")
            seen = _wait(functools.partial(logged, off, r"wall clock stepped"), 30)
            time.sleep(4)  # passes after the step: nothing may move
            managed = follow_reals(off)
            record(f"wall clock stepped an hour {word}", t0, off, once=r"wall clock stepped", recovered=seen,
                   table_ok=managed and rig.table() == base)

        # 6. a real's name that stops resolving (and resolves again)
        rs4 = lab.real("rs4")
        rs4.start()
        layout = rig.layout
        hosts = rig.work / "hosts"
        hosts.write_text(HOSTS.read_text() + f"{rs4.addr} rs4.lab\n")
        sh("mount", "--bind", str(hosts), str(HOSTS))
        try:
            # `ip netns exec` gives the daemon a copy of the mount table when it starts: start it again to give
            # it this /etc/hosts (the same file, written in place from here on, so it sees every change)
            if restart() is None:
                return {"faults": faults, "error": "no READY after binding /etc/hosts"}
            named = rig.layout.with_service(Service("named", 83, (Real("rs4.lab"),)))
            rig.write(named)
            want: Table = {**base, f"TCP {VIP}:83": {f"{rs4.addr}:80": 1}}
            if rig.settle(want, since=time.monotonic(), timeout=30) is None:
                return {"faults": faults, "error": f"the named real never came in: {rig.table()}"}
            t0, off = time.monotonic(), rig.log_size()
            hosts.write_text(HOSTS.read_text().replace(f"{rs4.addr} rs4.lab\n", ""))  # in place: the mount pins it
            lost = _wait(lambda: said(off, r"cannot resolve rs4\.lab") > 0, 30)
            time.sleep(4)
            kept = rig.table() == want
            with hosts.open("a") as h:
                h.write(f"{rs4.addr} rs4.lab\n")
            back = _wait(lambda: said(off, r"rs4\.lab resolves again") > 0, 30) if lost else None
            record("a real's name stops resolving", t0, off, once=r"cannot resolve rs4\.lab", recovered=back,
                   table_ok=kept and rig.table() == want)
        finally:
            sh("umount", str(HOSTS), check=False)
            rig.write(layout)
    return {"faults": faults}
