"""`ipvsd run` on the seed topology: the seed's ldirectord.cf verbatim, and the native format, on a real kernel.

Timing budgets follow the issue: a lost receive string is out within interval + timeout + 0.5 s.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.kernel.daemon import Ipvsd, keepalive_request
from tests.kernel.lab import Lab, run_in, wait_until

ROOT = Path(__file__).resolve().parents[2]
SEED_LDIRECTORD = ROOT / "etc" / "ldirectord.cf"  # seed 003's file, verbatim (checkinterval 1, checktimeout 3)
RS1, RS2, RS3 = "10.2.1.242:80", "10.2.1.243:80", "10.2.1.244:80"
FALLBACK = "127.0.0.1:80"


def timed(lab: Lab, cond: object, *, budget: float, what: str) -> float:
    t0 = time.monotonic()
    wait_until(cond, timeout=budget, what=what)  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    print(f"{what}: {elapsed:.2f}s (budget {budget}s)")
    return elapsed


def test_seed_ldirectord_cf(lab: Lab, tmp_path: Path) -> None:
    cfg = tmp_path / "ldirectord.cf"
    cfg.write_text(SEED_LDIRECTORD.read_text())
    lab.ipvsadm("-A", "-t", "10.2.0.99:22", "-s", "wlc")  # foreign: made by hand, never touched
    lab.ipvsadm("-a", "-t", "10.2.0.99:22", "-r", "10.2.1.99:22", "-m", "-w", "7")
    foreign = lab.table()["TCP 10.2.0.99:22"]
    d = Ipvsd(lab, cfg, tmp_path / "state").start()
    try:
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=90, what="rs1 and rs2 in the table")
        # A cold start programs after the first round of checks: the fallback never came in meanwhile.
        d.wait_log("table reconciled with every check's result", timeout=30)
        assert not [op for op in d.ops() if FALLBACK in op], d.ops()

        # 1. round-robin from the client
        served = [lab.get()[1].strip() for _ in range(4)]
        assert sorted(set(served)) == ["debian11-rs1", "debian11-rs2"], served

        # 2. the page loses the receive string -> out; fixed -> back with its weight
        budget = 1 + 3 + 0.5  # checkinterval + checktimeout + 0.5
        lab.real("rs1").set_page("debian10\n")
        timed(lab, lambda: RS1 not in lab.weights(), budget=budget, what="receive string lost -> rs1 out")
        assert lab.weights() == {RS2: 1}
        lab.real("rs1").set_page("debian11-rs1\n")
        timed(lab, lambda: lab.weights().get(RS1) == 1, budget=budget, what="page fixed -> rs1 back")

        # 3. server killed -> out; both down -> fallback in; one back -> fallback out
        lab.real("rs1").stop(signal.SIGKILL)
        timed(lab, lambda: RS1 not in lab.weights(), budget=budget, what="rs1 killed -> out")
        lab.real("rs2").stop()
        timed(lab, lambda: lab.weights() == {FALLBACK: 1}, budget=budget, what="both down -> fallback in")
        lab.real("rs1").start()
        timed(lab, lambda: lab.weights() == {RS1: 1}, budget=budget, what="rs1 back -> fallback out")
        lab.real("rs2").start()
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=budget, what="rs2 back")

        # 6. drift: an owned real deleted by hand is restored within one resync; foreign service untouched
        lab.ipvsadm("-d", "-t", "10.2.0.240:80", "-r", RS2)
        timed(lab, lambda: lab.weights().get(RS2) == 1, budget=d.resync + 1.5, what="ipvsadm -d repaired")
        # the log line follows the kernel change, so it may lag the table by a moment
        d.wait_log(rf"ipvsadm -a -t 10\.2\.0\.240:80 -r {re.escape(RS2)} .*\(drift repair\)", timeout=5)
        assert lab.table()["TCP 10.2.0.99:22"] == foreign
        assert not [op for op in d.ops() if "10.2.0.99" in op]
    finally:
        rc = d.stop()
    assert rc == 0
    # ldirectord's cleanstop (default yes for ldirectord.cf) removes what ipvsd owns, and only that
    assert lab.table() == {"TCP 10.2.0.99:22": foreign}


NATIVE = """
[settings]
metrics_listen = ""
watch_config = true
clean_stop = false
drain_timeout = 3

[check_defaults]
interval = 1
timeout = 1
rise = 1
fall = 1
alpha = true

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"

[[services.checks]]
type = "http"
path = "/index.html"
receive = "debian11"
"""


def native(*reals: str) -> str:
    return NATIVE + "".join(f'\n[[services.reals]]\naddress = "{r.split(":")[0]}"\nport = 80\n' for r in reals)


@pytest.mark.parametrize("lab", [3], indirect=True)
def test_native_reload_and_hitless_restart(lab: Lab, tmp_path: Path) -> None:
    cfg = tmp_path / "ipvsd.toml"
    cfg.write_text(native(RS1, RS2))
    d = Ipvsd(lab, cfg, tmp_path / "state").start()
    long_lived: socket.socket | None = None
    try:
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=90, what="rs1 and rs2 in the table")
        long_lived = run_in(lab.client, lambda: socket.create_connection((lab.vip, 80), timeout=10))
        first = keepalive_request(long_lived)
        keep, drop = (RS1, RS2) if first == "debian11-rs1" else (RS2, RS1)  # never drain the long-lived one
        for _ in range(4):
            lab.get()

        def conns(text: str) -> dict[str, int]:
            return {rs: next(int(ln.split()[2]) for ln in text.splitlines() if rs in ln) for rs in (RS1, RS2)}

        # The kernel publishes per-dest counters from its 2 s estimator tick, not per packet.
        wait_until(lambda: min(conns(lab.ipvsadm("-Ln", "--stats")).values()) > 0, timeout=10,
                   what="both reals' connection counters published")
        before = conns(lab.ipvsadm("-Ln", "--stats"))

        # 4a. add rs3: in within 2 s, rs1/rs2 untouched (no op on them, counters not reset)
        seen = len(d.ops())
        cfg.write_text(native(RS1, RS2, RS3))
        timed(lab, lambda: lab.weights() == {RS1: 1, RS2: 1, RS3: 1}, budget=2.0, what="rs3 added by an edit")
        assert not [op for op in d.ops()[seen:] if RS1 in op or RS2 in op], d.ops()
        after = conns(lab.ipvsadm("-Ln", "--stats"))
        assert all(after[rs] >= before[rs] > 0 for rs in (RS1, RS2)), (before, after)

        # 4b. invalid edit: kernel unchanged, the error located at file:line
        table = lab.table()
        cfg.write_text(native(RS1, RS2, RS3).replace('scheduler = "rr"', 'scheduler = "rr"\nweigth = 3'))
        d.wait_log(rf"rejected.*{cfg.name}:\d+", timeout=10)
        assert lab.table() == table

        # 4c. remove a real: drained (weight 0) first, then deleted (drain_timeout 3 s)
        cfg.write_text(native(keep, RS3))
        wait_until(lambda: lab.weights().get(drop) == 0, timeout=5, what="removed real drained to weight 0")
        timed(lab, lambda: drop not in lab.weights(), budget=3 + d.resync + 2, what="drained real deleted")
        assert lab.weights() == {keep: 1, RS3: 1}

        # 4d. a real whose name does not resolve and one on a closed port: the reload is applied whole (both
        # are down, the table is unchanged, status agrees), and nothing crashes
        table = lab.table()
        extra = ('\n[[services.reals]]\naddress = "nonexistent.invalid"\nport = 80\n'
                 f'\n[[services.reals]]\naddress = "{RS1.split(":")[0]}"\nport = 81\n')
        cfg.write_text(native(keep, RS3) + extra)
        d.wait_log(r"reload \(file changed\): new configuration", timeout=10)
        d.wait_log(r"real nonexistent.invalid in TCP 10\.2\.0\.240:80 is down: dns", timeout=10)
        status = d.status()
        reals = {r["real"]: r for r in status["services"][0]["reals"]}
        assert reals["nonexistent.invalid:80"]["state"] == "down"
        assert reals["nonexistent.invalid:80"]["reason"].startswith("dns:")
        closed = f"{RS1.split(':')[0]}:81"

        def state_of(real: str) -> str:
            return str(next(r["state"] for r in d.status()["services"][0]["reals"] if r["real"] == real))

        wait_until(lambda: state_of(closed) == "down", timeout=30, what="the closed-port real down in status")
        assert lab.table() == table
        assert "Traceback" not in d.log() and "Task exception" not in d.log()
        d.reload()
        d.wait_log(r"reload \(control socket\): configuration unchanged", timeout=10)
        applied = r"reload \(file changed\): new configuration"
        n = len(re.findall(applied, d.log()))
        cfg.write_text(native(keep, RS3))
        wait_until(lambda: len(re.findall(applied, d.log())) > n, timeout=10, what="the two reals removed again")

        # 5. kill -9 and start again: zero IPVS changes; the long-lived connection survives
        settled = lab.table()
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        d.start()
        d.wait_log("table reconciled with every check's result", timeout=90, run=d.starts)
        assert d.ops(run=d.starts) == [], d.log(run=d.starts)
        assert lab.table() == settled
        assert keepalive_request(long_lived) == first
    finally:
        if long_lived is not None:
            long_lived.close()
        if d.proc is not None:
            d.stop()
