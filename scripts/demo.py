"""The demo scenarios, run inside the lab.

`scripts/demo`: `ipvsd run` on seed 003's ldirectord.cf, the table, one real server's failover.
`scripts/demo ha`: seed 003's director pair (etc/ha/): keepalived --vrrp moves the VIPs, ipvsd runs the table and
the connection sync on both directors, and a live keep-alive connection survives the master's power cut.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from tests.kernel.daemon import Ipvsd
from tests.kernel.lab import Lab, wait_until
from tests.kernel.pair import VIP, KeepAlive, Pair, first_new_connection
from tests.netns import ipvsadm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "etc" / "ldirectord.cf"
RS1, RS2 = "10.2.1.242:80", "10.2.1.243:80"


def show(lab: Lab, title: str) -> None:
    print(f"\n$ ipvsadm -Ln    # {title}")
    print(lab.ipvsadm("-Ln"), end="")


def requests(lab: Lab, n: int) -> list[str]:
    served = [lab.get()[1].strip() for _ in range(n)]
    print(f"$ {n} x GET http://{lab.vip}/ from client -> {', '.join(served)}")
    return served


def ha() -> int:
    """The director pair: a live connection across a master failure."""
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(root=Path(tmp))
        conn: KeepAlive | None = None
        try:
            print("lab: client 10.2.0.1 -> VIP 10.2.0.254 [lb1 .240 | lb2 .241] -> rs1 10.2.1.242, rs2 10.2.1.243;"
                  " the reals' gateway is the floating 10.2.1.254")
            print("$ vagrant/roles/director.sh --priority=105 ...   # in lb1; lb2: 95. As on the VMs, it installs")
            print("  etc/ha/keepalived-lb1.conf and etc/ha/ipvsd.toml, then runs keepalived --vrrp and ipvsd run")
            pair.up()
            master = pair.holder()
            backup = pair.other(master)
            print(f"\n{master.name} holds the VIPs (10.2.0.254 on ens3, 10.2.1.254 on ens4); {backup.name} is backup")
            for d in pair.directors:
                print(f"\n$ ipvsadm -Ln; ipvsadm -L --daemon    # in {d.name}")
                print(ipvsadm(d.name, "-Ln") + ipvsadm(d.name, "-L", "--daemon"), end="")

            conn = pair.keepalive()
            print(f"\n# a keep-alive HTTP connection from the client (port {conn.port}), one request every 200 ms")
            entry = wait_until(lambda: time.monotonic() - conn.opened >= 3 and pair.entry(backup, conn), timeout=30,
                               what="the connection's entry on the backup")
            print(f"{len(conn.answers)} answers from {conn.real}; the backup already knows it (sync): {entry}")
            print(f"$ ipvsadm -Lnc    # in {backup.name}")
            print(ipvsadm(backup.name, "-Lnc"), end="")

            print(f"\n# power cut on {master.name}: its links go down")
            crashed = time.monotonic()
            master.crash()
            took, page = first_new_connection("ha-client", VIP, crashed, timeout=30)
            conn.wait_answers_since(crashed, 10, timeout=60)
            print(f"{backup.name} took the VIPs; a new connection got through after {took:.2f}s ({page})")
            print(f"the long-lived connection: {len(conn.answers)} answers, {conn.failed} failed, longest gap "
                  f"{conn.longest_gap():.2f}s (VRRP takeover: 3 x advert_int + skew = 3.63s)")
            print(f"\n$ ipvsadm -Lnc    # in {backup.name}, now the master")
            print(ipvsadm(backup.name, "-Lnc"), end="")
            ok = conn.failed == 0 and backup.holds()
        finally:
            if conn is not None:
                conn.close()
            pair.down()
        print(f"\ndemo ha: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


def main() -> int:
    if sys.argv[1:] == ["ha"]:
        return ha()
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(root=Path(tmp), n=2).up()
        daemon = Ipvsd(lab, CONFIG, Path(tmp) / "state")
        try:
            reals = ", ".join(f"{r.name} {r.addr} (nginx)" for r in lab.reals)
            print(f"lab: client 10.2.0.1 -> VIP {lab.vip} [lb] -> {reals}")
            print(f"$ ipvsd run -c {CONFIG.relative_to(ROOT)}    # in lb; the seed's ldirectord.cf, verbatim")
            daemon.start()
            wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=120, what="both reals in the table")
            show(lab, "ipvsd has programmed the seed's virtual service")
            ok = len(set(requests(lab, 4))) == 2

            print("\n# failure: rs1's page loses the receive string (echo debian10 > index.html)")
            t0 = time.monotonic()
            lab.real("rs1").set_page("debian10\n")
            wait_until(lambda: RS1 not in lab.weights(), timeout=10, what="rs1 out")
            print(f"rs1 out of the table after {time.monotonic() - t0:.2f}s (checkinterval=1, checktimeout=3)")
            show(lab, "rs1 removed (quiescent=no)")
            ok &= set(requests(lab, 3)) == {"debian11-rs2"}

            print("\n# recovery: hostname > index.html")
            t0 = time.monotonic()
            lab.real("rs1").set_page("debian11-rs1\n")
            wait_until(lambda: lab.weights() == {RS1: 1, RS2: 1}, timeout=10, what="rs1 back")
            print(f"rs1 back after {time.monotonic() - t0:.2f}s")
            ok &= len(set(requests(lab, 4))) == 2

            print("\n# what ipvsd logged (health transitions and kernel operations):")
            for line in daemon.log().splitlines():
                if re.search(r"real |ipvsadm ", line):
                    print("  " + line)
        finally:
            if daemon.proc is not None:
                daemon.stop()
            lab.down()
        print(f"\ndemo: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
