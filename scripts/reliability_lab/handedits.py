"""Scenario 3, hand edits: an operator's `ipvsadm` on entries ipvsd owns and on entries it does not.

Owned entries are put back by the next resync (resync_interval, RESYNC seconds); a foreign service (one the
configuration does not name) is never touched, whatever is done to it. Each edit is timed from the moment
ipvsadm returned to the table being whole again, and the foreign service is compared before and after.
"""

from __future__ import annotations

import time

from scripts.bench_lab.poll import Table
from scripts.reliability_lab.rig import RESYNC, VIP, Result, Rig, Say, expected, failed, total, traffic
from tests.netns import sh

FOREIGN = f"TCP {VIP}:9999"


def run(rig: Rig, say: Say) -> Result:
    lab = rig.lab
    rs1, rs2 = lab.real("rs1").addr, lab.real("rs2").addr
    want = expected(rig.layout, set(), set())

    def ipvsadm(*args: str) -> float:
        sh("ipvsadm", *args, ns=lab.lb)
        return time.monotonic()

    def scheduler(port: int) -> str:
        # "TCP  10.2.0.240:80 wlc" (after the title lines, which ipvsadm prints for one service too)
        line = next((x for x in lab.ipvsadm("-Ln", "-t", f"{VIP}:{port}", check=False).splitlines()
                     if x.startswith("TCP ")), "")
        return line.split()[2] if len(line.split()) > 2 else ""

    # What the foreign service holds (None: it does not exist): the rig's own record of what it did to it, never
    # read back from the table, which is what is being checked.
    mine: dict[str, dict[str, int] | None] = {"dests": None}

    def full() -> Table:
        dests = mine["dests"]
        return dict(want) if dests is None else {**want, FOREIGN: dict(dests)}

    def make_foreign() -> None:
        ipvsadm("-A", "-t", f"{VIP}:9999", "-s", "wlc")
        ipvsadm("-a", "-t", f"{VIP}:9999", "-r", f"{rs1}:80", "-m", "-w", "3")
        ipvsadm("-a", "-t", f"{VIP}:9999", "-r", f"{rs2}:80", "-m", "-w", "4")
        mine["dests"] = {f"{rs1}:80": 3, f"{rs2}:80": 4}

    edits: list[Result] = []

    def owned(what: str, *args: str) -> None:
        t_before = time.monotonic()
        t = ipvsadm(*args)
        back: float | None
        if args[0] == "-E":  # the scheduler is not in the watcher's table: ask ipvsadm until it is back
            deadline = t + RESYNC * 3 + 5
            while scheduler(80) != "rr" and time.monotonic() < deadline:
                time.sleep(0.2)
            back = time.monotonic() if scheduler(80) == "rr" else None
        else:
            seen = rig.watcher.wait_for(lambda tb: tb != full(), since=t_before, timeout=5)
            back = rig.settle(full(), since=seen or t, timeout=RESYNC * 3 + 5)
        edits.append({"edit": what, "owned": True, "restored_s": None if back is None else round(back - t, 2),
                      "within_resync": back is not None and back - t <= RESYNC + 1.0})
        say(f"hand edit {what}: restored after {edits[-1]['restored_s']} s")

    def not_owned(what: str, change: dict[str, int | None], *args: str) -> None:
        ipvsadm(*args)
        dests = mine["dests"]
        assert dests is not None
        for d, w in change.items():
            if w is None:
                dests.pop(d, None)
            else:
                dests[d] = w
        sched = scheduler(9999)
        seen = rig.settle(full(), since=time.monotonic(), timeout=5)  # the edit itself, as the watcher sees it
        t = time.monotonic()
        # Two resync passes: a daemon that "repairs" what it does not own would have done it by then.
        time.sleep(RESYNC * 2 + 1)
        touched = seen is None or rig.table() != full() or rig.changes(t, time.monotonic()) > 0 or \
            scheduler(9999) != sched
        edits.append({"edit": what, "owned": False, "touched": touched, "scheduler": sched})
        say(f"hand edit {what} (foreign): {'TOUCHED' if touched else 'left alone'}")

    make_foreign()
    with traffic(lab) as (reqs, _ll):
        t0 = time.monotonic()
        if rig.settle(full(), since=t0, timeout=30) is None:
            return {"error": f"the table never became the expected one: {rig.table()}"}
        web, api = f"{VIP}:80", f"{VIP}:81"
        owned("-e weight of an owned real", "-e", "-t", web, "-r", f"{rs1}:80", "-m", "-w", "7")
        owned("-d an owned real", "-d", "-t", web, "-r", f"{rs2}:80")
        owned("-D an owned service", "-D", "-t", api)
        owned("-E scheduler of an owned service", "-E", "-t", web, "-s", "wlc")
        owned("-a a stray real into an owned service", "-a", "-t", web, "-r", f"{lab.real('rs3').addr}:80", "-m")
        not_owned("-e weight of a foreign real", {f"{rs1}:80": 9}, "-e", "-t", f"{VIP}:9999", "-r", f"{rs1}:80",
                  "-m", "-w", "9")
        not_owned("-d a foreign real", {f"{rs2}:80": None}, "-d", "-t", f"{VIP}:9999", "-r", f"{rs2}:80")
        not_owned("-E scheduler of a foreign service", {}, "-E", "-t", f"{VIP}:9999", "-s", "sh")
        # -C takes the foreign service with it (our hand, not ipvsd's): ipvsd must restore only its own.
        mine["dests"] = None
        owned("-C (everything)", "-C")
        make_foreign()
        rs3 = f"{lab.real('rs3').addr}:80"
        not_owned("a foreign service made again after -C", {rs3: 1}, "-a", "-t", f"{VIP}:9999", "-r", rs3, "-m")
        counts = reqs.between(t0, time.monotonic())
    ipvsadm("-D", "-t", f"{VIP}:9999")
    return {"edits": edits, "requests": total(counts), "failed": failed(counts),
            "note": "requests may fail while an owned entry is missing (the operator removed it): counted, not "
                    "a target"}
