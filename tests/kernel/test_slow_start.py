"""Slow start on a real kernel: a real killed and started again comes back at 25, 50, 75 and 100 % of its weight,
one step a second (slow_start 4 s), as the kernel's table shows it, and nothing moves after."""

from __future__ import annotations

import itertools
import re
import signal
import time
from pathlib import Path

from tests.kernel.daemon import Ipvsd
from tests.kernel.lab import Lab, wait_until

RS1, RS2 = "10.2.1.242:80", "10.2.1.243:80"
SETTLE = 3.0  # seconds watched after the last step: longer than a resync (2 s), which would repair any drift

CONFIG = """
[settings]
metrics_listen = ""
watch_config = false

[check_defaults]
interval = 1
timeout = 1
rise = 1
fall = 1

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "wrr"
slow_start = 4.0

[[services.checks]]
type = "http"
path = "/index.html"
receive = "debian11"

[[services.reals]]
address = "10.2.1.242"
weight = 100

[[services.reals]]
address = "10.2.1.243"
weight = 100
"""


def test_a_real_that_comes_back_ramps_in_four_steps(lab: Lab, tmp_path: Path) -> None:
    cfg = tmp_path / "ipvsd.toml"
    cfg.write_text(CONFIG)
    d = Ipvsd(lab, cfg, tmp_path / "state").start()
    try:
        wait_until(lambda: lab.weights() == {RS1: 100, RS2: 100}, timeout=90, what="both reals at weight 100")
        d.wait_log("table reconciled with every check's result", timeout=30)
        assert re.findall(r" -w (\d+)", "\n".join(d.ops())) == ["100", "100"]  # no ramp at start
        lab.real("rs1").stop(signal.SIGKILL)
        d.wait_log(r"ipvsadm -d -t 10\.2\.0\.240:80 -r 10\.2\.1\.242:80", timeout=10)  # logged after the kernel did it
        before = len(d.ops())
        lab.real("rs1").start()  # returns once nginx listens
        t0 = time.monotonic()
        steps: list[tuple[float, int]] = []  # (seconds since rs1 listens, weight) at each change the table shows
        while time.monotonic() - t0 < 30:
            w = lab.weights().get(RS1)
            now = time.monotonic() - t0
            if w is not None and (not steps or steps[-1][1] != w):
                steps.append((now, w))
            if steps and steps[-1][1] == 100 and now > steps[-1][0] + SETTLE:
                break
            time.sleep(0.02)
        print("\nslow start 4 s, weight 100: the weights of rs1 in the kernel after it listens again")
        for i, (t, w) in enumerate(steps):
            print(f"  weight {w:>3} at {t:5.2f} s" + (f"  (+{t - steps[i - 1][0]:.2f} s)" if i else ""))
        ops = d.ops()[before:]
        print("  ops: " + "; ".join(ops))
        assert [w for _, w in steps] == [25, 50, 75, 100], steps
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(steps)]
        assert all(0.6 <= g <= 1.6 for g in gaps), gaps  # slow_start / 4, give or take the emulated CPU
        assert [re.findall(r" -w (\d+)", op) for op in ops if RS1 in op] == [["25"], ["50"], ["75"], ["100"]], ops
        assert len(ops) == 4, ops  # nothing else: no drift repair after the ramp
        assert lab.weights() == {RS1: 100, RS2: 100}
    finally:
        rc = d.stop()
    assert rc == 0
