"""Scenario 1, restarts: `kill -9` of the daemon at random moments (and SIGTERM), each followed by a start.

The table must not move: clean_stop is false, so the kernel keeps serving while no daemon runs, and a new
daemon adopts what it finds (its state file says what it owns and what each real's health was). Measured per
restart: requests that failed from the kill to one second after READY, table changes in that window, ops the new
daemon logged, and the time from start to READY=1. A kill may land before the previous daemon was ready.
"""

from __future__ import annotations

import random
import signal
import time

from scripts.reliability_lab.rig import Result, Rig, Say, expected, failed, ops_in, total, traffic


def run(rig: Rig, say: Say, *, kills: int, terms: int, rng: random.Random, deadline: float) -> Result:
    want = expected(rig.layout, set(), set())
    if not rig.running:
        t0 = rig.start()
        if rig.wait_ready(t0) is None or rig.settle(want, since=t0, timeout=60) is None:
            return {"error": "ipvsd did not start serving the base table"}
    rounds: list[Result] = []
    order = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms
    rng.shuffle(order)
    with traffic(rig.lab) as (reqs, ll):
        time.sleep(2)
        for i, sig in enumerate(order):
            if time.monotonic() > deadline:
                say(f"restarts: out of time after {i} of {len(order)}")
                break
            # A random moment: sometimes while the previous daemon is still starting up.
            time.sleep(rng.uniform(0.0, 6.0))
            offset = rig.log_size()
            t_kill = time.monotonic()
            rc = rig.kill(sig)
            t_start = rig.start()
            t_ready = rig.wait_ready(t_start)
            t_end = (t_ready or time.monotonic()) + 1.0
            time.sleep(max(0.0, t_end - time.monotonic()))
            counts = reqs.between(t_kill, t_end)
            r: Result = {
                "signal": "KILL" if sig == signal.SIGKILL else "TERM",
                "exit": rc,
                "ready_s": None if t_ready is None else round(t_ready - t_start, 2),
                "requests": total(counts),
                "failed": failed(counts),
                "long_lived_breaks": ll.between(t_kill, t_end),
                "table_changes": rig.changes(t_kill, t_end),
                "ops": ops_in(rig.log_since(offset)),
                "table_ok": rig.table() == want,
            }
            rounds.append(r)
            say(f"restart {i + 1}/{len(order)} ({r['signal']}): ready {r['ready_s']} s, failed "
                f"{r['failed']}/{r['requests']}, table changes {r['table_changes']}, ops {len(r['ops'])}")
            if t_ready is None:
                say("restarts: the daemon did not become ready; stopping the scenario")
                break
    return {"rounds": rounds, "long_lived_requests": ll.requests}
