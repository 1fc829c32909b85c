"""Scenario 6, soak: random real failures, recoveries, drains and edits for a bounded time, with an invariant.

The rig knows what it did (which reals it stopped, which it drained, the configuration it wrote), so at every
sample the table the kernel holds must be the one those facts give (`rig.expected`). Each event is allowed
BUDGET seconds to show: until then the table may still be the one before it. Events are spaced wider than the
budget, so at most one is pending at a time. A sample that matches neither is a violation. A drained real is at
weight 0 or, once idle, deleted: both conform.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

from scripts.bench_lab.poll import Table
from scripts.reliability_lab.rig import (
    Layout,
    Real,
    Result,
    Rig,
    Say,
    expected,
    failed,
    set_weight,
    total,
    traffic,
)

BUDGET = 4.0  # a failure is seen within interval + timeout (2 s); an edit or a drain within a pass; lab slack


def conforms(seen: Table, want: Table, drained: set[str]) -> bool:
    """`seen` is `want`, except that a drained real may already be gone: a drain is weight 0 until the real
    is idle, then the real is deleted (desired.py, Rule 1)."""
    if seen.keys() != want.keys():
        return False
    for svc, dests in want.items():
        have = seen[svc]
        if {d: w for d, w in have.items() if d not in drained} != {d: w for d, w in dests.items() if d not in drained}:
            return False
        if any(have[d] != 0 for d in have if d in drained):
            return False
    return True


def soak_layout(rig: Rig) -> Layout:
    reals = tuple(Real(rig.lab.real(n).addr) for n in ("rs1", "rs2", "rs4"))
    lay = rig.layout
    for name in ("web", "api"):
        lay = lay.with_service(replace(lay.service(name), reals=reals, scheduler="rr"))
    return Layout(tuple(s for s in lay.services if s.name in ("web", "api")))


def run(rig: Rig, say: Say, *, minutes: float, rng: random.Random) -> Result:
    lab = rig.lab
    names = ("rs1", "rs2", "rs4")
    for n in names:
        lab.real(n).start()
    rig.write(soak_layout(rig))
    down: set[str] = set()
    drained: set[str] = set()
    dest = {n: f"{lab.real(n).addr}:80" for n in names}
    timeline: list[tuple[float, Table, set[str]]] = [(time.monotonic(), expected(rig.layout, down, drained),
                                                      set(drained))]
    if rig.settle(timeline[0][1], since=timeline[0][0], timeout=60) is None:
        return {"error": f"the soak's table never became the expected one: {rig.table()}"}
    events: dict[str, int] = {}
    violations: list[Result] = []
    samples = 0
    with traffic(lab, long_lived=0) as (reqs, _ll):
        t_begin = time.monotonic()
        t_stop = t_begin + minutes * 60
        next_event = t_begin + rng.uniform(5, 10)
        while time.monotonic() < t_stop:
            now = time.monotonic()
            if now >= next_event:
                up = [n for n in names if dest[n] not in down]
                choices = ["fail"] * (len(up) > 1) + ["recover"] * bool(down) + ["drain"] * 1 + \
                    ["undrain"] * bool(drained) + ["edit"]
                what = rng.choice(choices)
                if what == "fail":
                    n = rng.choice(up)
                    lab.real(n).stop()
                    down.add(dest[n])
                elif what == "recover":
                    gone = rng.choice(sorted(down))
                    n = next(k for k in names if dest[k] == gone)
                    lab.real(n).start()
                    down.discard(dest[n])
                elif what == "drain":
                    n = rng.choice(names)
                    rig.control("drain", real=dest[n], reason="soak")
                    drained.add(dest[n])
                elif what == "undrain":
                    back = rng.choice(sorted(drained))
                    n = next(k for k in names if dest[k] == back)
                    rig.control("undrain", real=dest[n])
                    drained.discard(dest[n])
                else:
                    n = rng.choice(names)
                    svc = rng.choice(("web", "api"))
                    rig.write(set_weight(rig.layout, svc, dest[n], rng.randint(1, 5)))
                    hup = rng.random() < 0.5
                    if hup:
                        rig.hup()
                    what = f"edit ({'SIGHUP' if hup else 'autoreload'})"
                events[what] = events.get(what, 0) + 1
                timeline.append((time.monotonic(), expected(rig.layout, down, drained), set(drained)))
                next_event = time.monotonic() + rng.uniform(BUDGET + 1, BUDGET + 8)
            samples += 1
            seen = rig.table()
            t = time.monotonic()
            t_last, want, _ = timeline[-1]
            allowed = timeline[-1:] if t >= t_last + BUDGET or len(timeline) < 2 else timeline[-2:]
            if not any(conforms(seen, w, d) for _, w, d in allowed):
                violations.append({"t": round(t - t_begin, 2), "seen": seen, "want": want,
                                   "since_event_s": round(t - t_last, 2)})
            if not rig.running:
                violations.append({"t": round(t - t_begin, 2), "crashed": True})
                break
            time.sleep(0.25)
        counts = reqs.between(t_begin, time.monotonic())
    for n in names:
        lab.real(n).start()
    for d in sorted(drained):
        rig.control("undrain", real=d)
    say(f"soak: {minutes} min, {sum(events.values())} events {events}, {samples} samples, "
        f"{len(violations)} violations")
    return {"minutes": minutes, "events": events, "samples": samples, "violations": len(violations),
            "violation_examples": violations[:5], "requests": total(counts), "failed": failed(counts)}
