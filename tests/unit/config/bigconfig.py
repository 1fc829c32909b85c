"""Generate large configurations (N services, two reals and an HTTP check each) in any of the three formats.

Used by the load-scaling test and by hand for the load-time figures in docs/benchmarks.md:
`.venv/bin/python -m tests.unit.config.bigconfig keepalived 60000 > /tmp/big.conf`.
"""

from __future__ import annotations

import sys


def _vip(i: int) -> str:
    return f"10.{64 + (i >> 16) % 64}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def _rip(i: int, k: int) -> str:
    return f"172.{16 + k}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def keepalived(n: int) -> str:
    out = []
    for i in range(n):
        out.append(f"virtual_server {_vip(i)} 80 {{\n  delay_loop 5\n  lvs_sched wrr\n  lvs_method NAT\n"
                   "  protocol TCP\n")
        for k in range(2):
            out.append(f"  real_server {_rip(i, k)} 8080 {{\n    weight 2\n    HTTP_GET {{\n      url {{\n"
                       "        path /health\n        status_code 200\n      }\n      connect_timeout 3\n"
                       "    }\n  }\n")
        out.append("}\n")
    return "".join(out)


def ldirectord(n: int) -> str:
    out = ["checktimeout=3\ncheckinterval=5\n"]
    for i in range(n):
        out.append(f"virtual={_vip(i)}:80\n\treal={_rip(i, 0)}:8080 masq 2\n\treal={_rip(i, 1)}:8080 masq 2\n"
                   "\tservice=http\n\trequest=\"/health\"\n\treceive=\"ok\"\n\tscheduler=wrr\n")
    return "".join(out)


def native(n: int) -> str:
    out = ["[check_defaults]\ninterval = 5\ntimeout = 3\n"]
    for i in range(n):
        out.append(f"\n[[services]]\naddress = \"{_vip(i)}\"\nport = 80\nscheduler = \"wrr\"\nforward = \"masq\"\n"
                   "[[services.checks]]\ntype = \"http\"\npath = \"/health\"\n")
        for k in range(2):
            out.append(f"[[services.reals]]\naddress = \"{_rip(i, k)}\"\nport = 8080\nweight = 2\n")
    return "".join(out)


GENERATORS = {"keepalived": keepalived, "ldirectord": ldirectord, "native": native}

if __name__ == "__main__":
    sys.stdout.write(GENERATORS[sys.argv[1]](int(sys.argv[2])))
