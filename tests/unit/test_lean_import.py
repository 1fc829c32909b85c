"""The adapter imports pyroute2's netlink core only, and pyroute2 stays whole for anyone else."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import ipvsd.kernel.netlink
lean = sorted(m for m in sys.modules if m.startswith("pyroute2"))
from pyroute2 import IPRoute, config
from pyroute2.ipvs import IPVS
full = [m for m in sys.modules if m.startswith("pyroute2")]
print(len(lean), "pyroute2.ndb" in lean, IPRoute.__name__, IPVS.__name__, config.__name__, len(full))
"""


def test_netlink_adapter_skips_pyroute2_init_yet_pyroute2_stays_usable() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    lean, has_ndb, iproute, ipvs, config, full = out
    assert has_ndb == "False" and int(lean) < 40, out  # the package __init__ (NDB, IPDB, IPRoute) did not run
    assert (iproute, ipvs, config) == ("IPRoute", "IPVS", "pyroute2.config")
    assert int(full) > int(lean)  # `from pyroute2 import IPRoute` ran the real __init__ on demand
