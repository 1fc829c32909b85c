"""`ipvsd run` as an unprivileged uid with only CAP_NET_ADMIN and CAP_NET_RAW, on a real kernel (issue 19, 8).

What etc/ipvsd.service does with User=ipvsd and AmbientCapabilities=, done with setpriv inside the director's
namespace: the table is programmed (with a scheduler module the kernel loads on demand), checks that need
SO_MARK (CAP_NET_ADMIN), a raw ICMP socket (CAP_NET_RAW) and a spawned command work, a killed real is taken
out, a reload asked by that user applies, the sysctls are set, the master sync daemon runs, and the VIP's
route of [announce] is kept in its table and withdrawn at the stop; the control socket serves root and that user
and refuses another uid, with or without CAP_DAC_OVERRIDE (SO_PEERCRED).

The uids have no passwd entry: useradd cannot write the lab guest's /etc/shadow, and on a host with IPVS the
test must not add users. The uid must be able to read the checkout: a checkout or an interpreter under a
mode-0700 directory (pyenv in /root) is run with the system's python of the same version and the checkout on
PYTHONPATH; when even that cannot be read, the test skips and says why (tests.kernel.daemon.interpreter).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.kernel.daemon import Ipvsd, interpreter, setpriv
from tests.kernel.lab import Lab, http_get, run_in, wait_until
from tests.netns import sh

UID, OTHER = 4242, 4243
RS1, RS2 = "10.2.1.242:80", "10.2.1.243:80"

CONFIG = """
[settings]
metrics_listen = "127.0.0.1:9597"
watch_config = false
clean_stop = false

[sync]
interface = "int"
syncid = 9
daemons = "master"

[sysctl]
expire_nodest_conn = 1

[announce]
table = 100  # the VIP's route in a table of ipvsd's own, over rtnetlink: CAP_NET_ADMIN

[check_defaults]
interval = 1
timeout = 1
rise = 1
fall = 1

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "wlc"  # not loaded by the lab: the kernel loads ip_vs_wlc when the unprivileged ipvsd asks for it

[[services.checks]]
type = "http"
path = "/index.html"
receive = "debian11"
mark = 7  # SO_MARK: CAP_NET_ADMIN

[[services.checks]]
type = "ping"  # ping_group_range is "1 0" in a new namespace: a raw socket, CAP_NET_RAW

[[services.checks]]
type = "external"
command = "/bin/true"

[[services.reals]]
address = "10.2.1.242"
port = 80

[[services.reals]]
address = "10.2.1.243"
port = 80
weight = {w2}
"""



def timed(cond: object, *, budget: float, what: str) -> float:
    t0 = time.monotonic()
    wait_until(cond, timeout=budget, what=what)  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    print(f"{what}: {elapsed:.2f}s (budget {budget}s)")
    return elapsed


def daemons(lab: Lab) -> list[str]:
    """`ipvsadm -L --daemon` without the kernel's defaults: ['master sync daemon (mcast=int, syncid=9'] ."""
    return [line.split(", maxlen=")[0].rstrip(")").strip()
            for line in lab.ipvsadm("-L", "--daemon").splitlines() if line.strip()]


def routes(lab: Lab) -> str:
    return sh("ip", "-n", lab.lb, "route", "show", "table", "100").stdout.strip()


def test_ipvsd_runs_as_an_unprivileged_user_with_net_admin_and_net_raw(lab: Lab, shared: Path) -> None:
    uid = gid = UID
    python, env = interpreter(uid, gid)
    cfg = shared / "ipvsd.toml"  # root's, mode 0644, as /etc/ipvsd/ipvsd.toml
    cfg.write_text(CONFIG.format(w2=1))
    state = shared / "state"  # the daemon's user owns it (hand_over), as the unit's StateDirectory= makes it
    state.mkdir(mode=0o700)
    user = setpriv(uid, gid=gid)  # the unit: User=, Group=, AmbientCapabilities=
    d = Ipvsd(lab, cfg, state, runner=user, python=python, env=env, owner=(uid, gid)).start()
    try:
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=120, what="rs1 and rs2 in the table")
        d.wait_log("table reconciled with every check's result", timeout=30)
        d.wait_log(rf"running as uid {uid}\b.* with CAP_NET_ADMIN, CAP_NET_RAW$", timeout=5)
        assert d.proc is not None
        proc = dict(line.split(":", 1) for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines())
        assert proc["Uid"].split() == [str(uid)] * 4 and proc["Gid"].split() == [str(gid)] * 4, proc["Uid"]
        assert proc["Groups"].split() == [], proc["Groups"]
        assert int(proc["CapEff"], 16) == 1 << 12 | 1 << 13, proc["CapEff"]  # CAP_NET_ADMIN, CAP_NET_RAW only
        assert lab.ipvsadm("-Ln").count("wlc") == 1

        # beside the table: the sysctl, the master sync daemon, the metrics on loopback only
        sysctl = run_in(lab.lb, lambda: Path("/proc/sys/net/ipv4/vs/expire_nodest_conn").read_text().strip())
        assert sysctl == "1"
        d.wait_log(r"net\.ipv4\.vs\.expire_nodest_conn: 0 -> 1", timeout=10)
        wait_until(lambda: daemons(lab) == ["master sync daemon (mcast=int, syncid=9"], timeout=30,
                   what="the master sync daemon")
        wait_until(lambda: routes(lab).startswith("10.2.0.240 dev lo "), timeout=10, what="the VIP's route")
        status, body = http_get(lab.lb, "127.0.0.1", 9597, "/metrics", timeout=30)
        assert status == 200 and "ipvsd_" in body, body[:500]
        with pytest.raises(ConnectionRefusedError):
            http_get(lab.client, lab.vip, 9597, "/metrics")

        # a real server killed: out within interval + timeout + 0.5 s
        lab.real("rs1").stop(signal.SIGKILL)
        timed(lambda: RS1 not in lab.weights(), budget=1 + 1 + 0.5, what="rs1 killed -> out")

        # status: root and the daemon's user are served; another uid is refused by the file mode, and with
        # CAP_DAC_OVERRIDE (past the file mode) by the daemon's SO_PEERCRED check
        reals = {r["real"]: r for r in d.status()["services"][0]["reals"]}
        assert reals[RS1]["state"] == "down" and reals[RS2]["state"] == "up", reals
        print(f"rs1 as ipvsd says: {reals[RS1]['reason']}")
        mine = d.control("status", runner=setpriv(uid, "-all", gid=gid))
        assert "10.2.1.243:80" in mine.stdout, mine.stdout
        other = d.control("status", runner=setpriv(OTHER, "-all"), check=False)
        assert other.returncode == 1 and "permission denied (the control socket is for root and the daemon's user)" \
            in other.stderr, other
        peer = d.control("status", runner=setpriv(OTHER, "-all,+dac_override"), check=False)
        assert peer.returncode == 1 and "only root and the daemon's user may use the control socket" in peer.stderr, \
            peer
        d.wait_log(rf"control socket: refused a client with uid {OTHER}", timeout=10)

        # a reload asked by the daemon's user (ExecReload runs as the unit's user): rs2's weight 1 -> 3
        cfg.write_text(CONFIG.format(w2=3))
        d.control("reload", runner=user)
        wait_until(lambda: lab.weights() == {RS2: 3}, timeout=10, what="the reloaded weight")
        lab.real("rs1").start()
        wait_until(lambda: lab.weights() == {RS1: 1, RS2: 3}, timeout=10, what="rs1 back")
        assert (state / "state.json").stat().st_uid == uid
        assert "Traceback" not in d.log() and "Permission denied" not in d.log(), d.log()[-4000:]
    finally:
        rc = d.stop() if d.proc is not None else 0
        print(f"--- the daemon's log:\n{d.log()[-3000:]}")
    assert rc == 0
    assert routes(lab) == "", routes(lab)  # withdrawn at the stop (on_stop = "withdraw")
