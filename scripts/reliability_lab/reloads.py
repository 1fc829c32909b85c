"""Scenario 2, reloads: edits applied by autoreload or SIGHUP under traffic, half of them invalid.

A valid edit must be applied with exactly the kernel operations it needs (one `-e` for a weight, one `-a` for a
new real, three for a new service with two reals...) and nothing else may move. An invalid one (a syntax error,
a semantic error, a file caught mid-write, a drop-in that breaks a rule) must be rejected with an error that
names the file and line (or key), and the running configuration kept: no table change until it is fixed.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from scripts.reliability_lab.rig import (
    Layout,
    Real,
    Result,
    Rig,
    Say,
    Service,
    expected,
    failed,
    ops_in,
    set_weight,
    total,
    traffic,
    write_atomic,
)

OUTCOME = re.compile(r"reload \((?P<why>[^)]*)\)(?:: (?P<ok>new configuration|configuration unchanged)| rejected, "
                     r"the running configuration stays: (?P<err>.*))$", re.M)
LOCATED = re.compile(r"\.toml(:\d+|, line \d+| line \d+|: \[|: services|:\s*key)|line \d+")


@dataclass(frozen=True)
class Edit:
    kind: str
    valid: bool
    apply: Callable[[Rig], None]
    """Writes the file(s); for a valid edit the rig's layout becomes the new one."""
    ops: int = 0
    """A valid edit's kernel operations."""
    restore: Callable[[Rig], None] | None = None
    """For an invalid edit: put the last good files back."""


def valid_edits(rig: Rig, rng: random.Random) -> Edit:
    """A random valid edit of the current layout."""
    lab, lay = rig.lab, rig.layout
    rs1, rs4 = lab.real("rs1").addr, lab.real("rs4").addr
    web, api = lay.service("web"), lay.service("api")
    choices: list[tuple[str, Layout, int]] = []
    w = next(r.weight for r in web.reals if r.addr == rs1)
    choices.append((f"weight of rs1 in web {w} -> {w % 5 + 1}", set_weight(lay, "web", f"{rs1}:80", w % 5 + 1), 1))
    if any(r.addr == rs4 for r in api.reals):
        choices.append(("remove rs4 from api", lay.with_service(
            replace(api, reals=tuple(r for r in api.reals if r.addr != rs4))), 1))
    else:
        choices.append(("add rs4 to api", lay.with_service(replace(api, reals=(*api.reals, Real(rs4)))), 1))
    choices.append((f"scheduler of api {api.scheduler} -> {'wrr' if api.scheduler == 'rr' else 'rr'}",
                    lay.with_service(replace(api, scheduler="wrr" if api.scheduler == "rr" else "rr")), 1))
    if any(s.name == "extra" for s in lay.services):
        choices.append(("delete the drop-in extra.toml", lay.without("extra"), 1))
    else:
        choices.append(("a new drop-in extra.toml (a service, two reals)", lay.with_service(
            Service("extra", 82, (Real(rs1), Real(lab.real("rs2").addr)))), 3))
    kind, new, ops = rng.choice(choices)
    if kind.startswith("weight") and rng.random() < 0.5:
        return Edit(f"{kind}, written in place in two halves 0.3 s apart", True, lambda r: in_halves(r, new), ops)
    return Edit(kind, True, lambda r: r.write(new), ops)


def in_halves(rig: Rig, new: Layout) -> None:
    """What an editor that writes in place does, slowly: the watcher sees the first part (it waits 50 ms for
    quiet), which must be rejected, and then the whole file. The cut is inside a quoted address, so the first
    part is not TOML; a first part that happened to be a valid configuration on its own would be applied, as by
    keepalived or ldirectord (write a file and rename it, as `rig.write` does, to be safe from that)."""
    text = new.service("web").toml()
    cut = text.rindex('address = "') + len('address = "10.2')
    with rig.dropin("web").open("w") as f:
        f.write(text[:cut])
        f.flush()
        time.sleep(0.3)
        f.write(text[cut:])
    rig.layout = new


def invalid_edits(rig: Rig, rng: random.Random) -> Edit:
    """A random invalid edit of web's drop-in (or of the main file)."""
    good_web, good_main = rig.dropin("web").read_text(), rig.conf.read_text()
    web = rig.dropin("web")

    def put(path_text: tuple[object, str]) -> Callable[[Rig], None]:
        path, text = path_text
        return lambda r: write_atomic(r.work / str(path), text)

    def restore(r: Rig) -> None:
        write_atomic(web, good_web)
        write_atomic(r.conf, good_main)
        (r.work / "conf.d" / "zz-broken.toml").unlink(missing_ok=True)

    cases: list[tuple[str, Callable[[Rig], None]]] = [
        ("syntax: a value with no closing quote", put((web.relative_to(rig.work), good_web.replace(
            'scheduler = "rr"', 'scheduler = "rr', 1)))),
        ("syntax: a stray token", put((web.relative_to(rig.work), good_web.replace("port = 80", "port = 8 0", 1)))),
        ("semantic: port 99999", put((web.relative_to(rig.work), good_web.replace("port = 80\n", "port = 99999\n",
                                                                                    1)))),
        ("semantic: an unknown scheduler", put((web.relative_to(rig.work), good_web.replace(
            'scheduler = "rr"', 'scheduler = "roundrobin"', 1)))),
        ("semantic: an unknown protocol", put((web.relative_to(rig.work), good_web.replace(
            'forward = "masq"', 'forward = "masq"\nprotocol = "tcpp"', 1)))),
        ("semantic: weight -1", put((web.relative_to(rig.work), good_web.replace("weight = ", "weight = -", 1)))),
        ("a drop-in holding [settings]", put(("conf.d/zz-broken.toml", "[settings]\nresync_interval = 1\n"))),
        ("a drop-in repeating web's VIP:port", put(("conf.d/zz-broken.toml", good_web.replace(
            'name = "web"', 'name = "web2"')))),
        ("main file: an unknown key", put(("ipvsd.toml", good_main.replace("[settings]\n",
                                                                         "[settings]\nresync_intervall = 3\n")))),
        ("main file cut mid-write", put(("ipvsd.toml", good_main[: len(good_main) * 2 // 3].rstrip("\n0123456789")
                                         .rstrip() + " = \n"))),
    ]
    kind, apply = rng.choice(cases)
    return Edit(kind, False, apply, restore=restore)


def outcome(rig: Rig, offset: int, timeout: float, *, rejected: bool = False) -> re.Match[str] | None:
    """The first reload outcome the log shows after `offset` (only a rejection, with `rejected`): a reload the
    watcher started for the edit before may still end after it, "unchanged"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in OUTCOME.finditer(rig.log_since(offset)):
            if not rejected or m.group("err"):
                return m
        time.sleep(0.1)
    return None


def run(rig: Rig, say: Say, *, edits: int, rng: random.Random, deadline: float) -> Result:
    lab = rig.lab
    if not lab.real("rs4").proc:
        lab.real("rs4").start()
    rows: list[Result] = []
    with traffic(lab) as (reqs, ll):
        t_begin = time.monotonic()
        want = expected(rig.layout, set(), set())
        if rig.settle(want, since=t_begin, timeout=30) is None:
            return {"error": f"the table never became the expected one: {rig.table()}"}
        for i in range(edits):
            if time.monotonic() > deadline:
                say(f"reloads: out of time after {i} of {edits}")
                break
            how = "SIGHUP" if i % 2 else "autoreload"
            e = valid_edits(rig, rng) if rng.random() < 0.5 else invalid_edits(rig, rng)
            before = expected(rig.layout, set(), set())
            offset = rig.log_size()
            t0 = time.monotonic()
            e.apply(rig)
            if how == "SIGHUP":
                rig.hup()
            row: Result = {"kind": e.kind, "valid": e.valid, "trigger": how}
            if e.valid:
                after = expected(rig.layout, set(), set())
                done = rig.settle(after, since=t0, timeout=60)
                time.sleep(1.5)  # anything more it would do, it does in this pass or the next
                ops = ops_in(rig.log_since(offset))
                row.update(applied_s=None if done is None else round(done - t0, 2), ops=ops,
                           ok=done is not None and len(ops) == e.ops and rig.table() == after)
            else:
                m = outcome(rig, offset, 30, rejected=True)
                err = (m.group("err") or "") if m else ""
                time.sleep(1.0)
                kept = rig.changes(t0, time.monotonic()) == 0 and rig.table() == before
                row.update(rejected=bool(err), error=err, located=bool(LOCATED.search(err)), kept=kept,
                           ok=bool(err) and bool(LOCATED.search(err)) and kept)
                assert e.restore is not None
                offset2 = rig.log_size()
                e.restore(rig)
                if how == "SIGHUP":
                    rig.hup()
                outcome(rig, offset2, 60)
                if rig.settle(before, since=time.monotonic(), timeout=30) is None:
                    row["ok"] = False
                    row["after_fix"] = rig.table()
            rows.append(row)
            say(f"reload {i + 1}/{edits} [{how}] {'valid' if e.valid else 'INVALID'} {e.kind}: "
                f"{'ok' if row['ok'] else 'NOT OK ' + str(row)}")
        counts = reqs.between(t_begin, time.monotonic())
    return {"edits": rows, "requests": total(counts), "failed": failed(counts), "long_lived_requests": ll.requests,
            "long_lived_breaks": len(ll.breaks)}
