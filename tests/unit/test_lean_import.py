"""The daemon imports the submodules of pyroute2 and prometheus_client it uses only; both stay whole for others."""

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


METRICS = """
import sys
import ipvsd.shell.metrics
lean = [m for m in sys.modules if m.startswith("prometheus_client")]
servers = [m for m in ("http.server", "wsgiref", "prometheus_client.exposition") if m in sys.modules]
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.parser import text_string_to_metric_families
m = ipvsd.shell.metrics.Metrics()
text = m.exposition().decode()
print(len(lean), ",".join(servers) or "-", type(REGISTRY).__name__, callable(start_http_server),
      len(list(text_string_to_metric_families(text))) > 0)
"""


def test_metrics_skip_prometheus_client_init_and_its_servers_yet_expose_and_stay_usable() -> None:
    out = subprocess.run([sys.executable, "-c", METRICS], capture_output=True, text=True, check=True).stdout.split()
    lean, servers, registry, start, parsed = out
    assert servers == "-" and int(lean) < 15, out  # no HTTP/WSGI server modules until a scrape or a full import
    assert (registry, start, parsed) == ("CollectorRegistry", "True", "True")  # the full package on demand
