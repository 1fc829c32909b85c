"""VIP roles from a real `ipvsd run` process: the rtnetlink watcher `ipvsd run` wires in, seen through
`ipvsd status` (the unit tests drive the watcher and the daemon in-process, with the fake kernel)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernel.lab import wait_until
from tests.netns import ip_batch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[settings]
clean_stop = true
vips = ["10.9.0.2"]

[[services]]
address = "10.9.0.1"
port = 80
scheduler = "rr"

[[services.reals]]
address = "10.9.1.1"
port = 80
"""


@pytest.mark.kernel
def test_ipvsd_run_reports_the_vips_it_holds(netns: str, tmp_path: Path) -> None:
    cfg = tmp_path / "ipvsd.toml"
    cfg.write_text(CONFIG)
    state = tmp_path / "state"
    log_path = tmp_path / "ipvsd.log"
    # the direct-routing recipe: the VIP on lo everywhere; the holder has it on its ethernet interface too
    ip_batch(["link add v0 type veth peer name v1", "link set v0 up", "link set v1 up", "addr add 10.9.0.1/32 dev lo",
              "addr add 10.9.0.2/32 dev lo"], ns=netns)

    def cli(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "ipvsd", *args, "--state-dir", str(state)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (p.stdout, p.stderr, log_path.read_text())
        return p.stdout

    def vips() -> dict[str, tuple[bool, list[str]]] | None:
        if not (state / "control.sock").exists():
            return None
        answer = json.loads(cli("status", "--json"))
        if answer.get("vips") is None:
            return None
        return {v["vip"]: (v["held"], v["interfaces"]) for v in answer["vips"]}

    with log_path.open("w") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "ipvsd", "run", "-c", str(cfg),
                                 "--state-dir", str(state), "--metrics", "off"], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    try:
        wait_until(lambda: vips() == {"10.9.0.1": (False, []), "10.9.0.2": (False, [])}, timeout=90,
                   what="both VIPs reported, held by no one (only on lo)")
        assert "this director holds none of its 2 VIPs" in log_path.read_text()

        ip_batch(["addr add 10.9.0.2/32 dev v0"], ns=netns)  # what keepalived does on the new master
        wait_until(lambda: vips() == {"10.9.0.1": (False, []), "10.9.0.2": (True, ["v0"])}, timeout=30,
                   what="10.9.0.2 held on v0")
        assert "10.9.0.2 is now held by this director (on v0)" in log_path.read_text()
        rows = [line.split() for line in cli("status").splitlines()[:3]]
        assert [(r[0], r[1]) for r in rows] == [("VIP", "ROLE"), ("10.9.0.1", "not"), ("10.9.0.2", "held")], rows

        ip_batch(["link set v0 down"], ns=netns)  # a director losing its link no longer holds the VIP
        wait_until(lambda: vips() == {"10.9.0.1": (False, []), "10.9.0.2": (False, [])}, timeout=30,
                   what="10.9.0.2 not held once v0 is down")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, log_path.read_text()
    assert "10.9.0.2 is no longer held by this director (it was on v0)" in log_path.read_text()
