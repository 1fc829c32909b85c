"""Scenario 1, restarts: `kill -9` of the daemon at random moments (and SIGTERM), each followed by a start.

The table must not move: clean_stop is false, so the kernel keeps serving while no daemon runs, and a new
daemon adopts what it finds (its state file says what it owns and what each real's health was). Measured per
restart: requests that failed from the kill to one second after READY, table changes in that window, ops the new
daemon logged, and the time from start to READY=1. A fifth of the kills land while a daemon is starting up.
"""

from __future__ import annotations

import random
import signal
import time

from scripts.reliability_lab.rig import Result, Rig, Say, expected, failed, ops_in, total, traffic

STARTUP = "KILL during start-up"


def run(rig: Rig, say: Say, *, kills: int, terms: int, rng: random.Random, deadline: float) -> Result:
    """`kills` kill -9 in all, a fifth of them while the daemon is starting up (a round of those kills a ready
    daemon, starts one and kills it again at a random moment before READY), and `terms` SIGTERMs."""
    want = expected(rig.layout, set(), set())
    if not rig.running:
        t0 = rig.start()
        if rig.wait_ready(t0) is None or rig.settle(want, since=t0, timeout=60) is None:
            return {"error": "ipvsd did not start serving the base table"}
    rounds: list[Result] = []
    early = max(1, kills // 5) if kills >= 2 else 0
    order = [STARTUP] * early + ["KILL"] * (kills - 2 * early) + ["TERM"] * terms
    rng.shuffle(order)
    ready_typical = 15.0  # seconds; replaced by the last READY measured
    with traffic(rig.lab) as (reqs, ll):
        time.sleep(2)
        for i, kind in enumerate(order):
            if time.monotonic() > deadline:
                say(f"restarts: out of time after {i} of {len(order)}")
                break
            time.sleep(rng.uniform(0.0, 6.0))  # a random moment of a ready daemon's life
            offset = rig.log_size()
            t_kill = time.monotonic()
            rc = rig.kill(signal.SIGTERM if kind == "TERM" else signal.SIGKILL)
            t_start = rig.start()
            killed_at = None
            if kind == STARTUP:  # again, before this one is ready: reading the table, checking, binding...
                time.sleep(rng.uniform(0.1, 0.9) * ready_typical)
                if rig.notify.wait("READY=1", since=t_start, timeout=0) is None:
                    killed_at = round(time.monotonic() - t_start, 2)
                rig.kill(signal.SIGKILL)
                t_start = rig.start()
            t_ready = rig.wait_ready(t_start)
            t_end = (t_ready or time.monotonic()) + 1.0
            time.sleep(max(0.0, t_end - time.monotonic()))
            counts = reqs.between(t_kill, t_end)
            r: Result = {
                "signal": kind,
                "exit": rc,
                "ready_s": None if t_ready is None else round(t_ready - t_start, 2),
                "killed_in_start_up_at_s": killed_at,
                "requests": total(counts),
                "failed": failed(counts),
                "long_lived_breaks": ll.between(t_kill, t_end),
                "table_changes": rig.changes(t_kill, t_end),
                "ops": ops_in(rig.log_since(offset)),
                "table_ok": rig.table() == want,
            }
            rounds.append(r)
            if t_ready is not None:
                ready_typical = t_ready - t_start
            say(f"restart {i + 1}/{len(order)} ({kind}{f' at {killed_at} s' if killed_at else ''}): ready "
                f"{r['ready_s']} s, failed {r['failed']}/{r['requests']}, table changes {r['table_changes']}, "
                f"ops {len(r['ops'])}")
            if t_ready is None:
                say("restarts: the daemon did not become ready; stopping the scenario")
                break
    return {"rounds": rounds, "long_lived_requests": ll.requests}
