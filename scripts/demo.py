"""The demo scenario, run inside the lab: `ipvsd run` on seed 003's ldirectord.cf, the table, one failover."""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from tests.kernel.daemon import Ipvsd
from tests.kernel.lab import Lab, wait_until

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


def main() -> int:
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
