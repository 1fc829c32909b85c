"""vagrant/topology.json for the lab: the hosts, addresses and roles the Vagrantfiles build, and the role scripts
(vagrant/roles/) run inside the lab's namespaces, as the VMs run them, without systemd and package installation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "vagrant" / "roles"


def load(name: str) -> dict[str, Any]:
    """One topology of vagrant/topology.json ("pair", "two-node")."""
    topo: dict[str, Any] = json.loads((ROOT / "vagrant" / "topology.json").read_text())[name]
    return topo


def host(topo: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in topo["hosts"] if h["name"] == name)


def role_args(topo: dict[str, Any], h: dict[str, Any]) -> list[str]:
    """The role script's arguments for host `h`, as vagrant/common.rb builds them."""
    args = [f"--addr={net}={addr}/{topo['networks'][net].split('/')[1]}" for net, addr in h["addresses"].items()]
    if h["role"] in ("director", "node"):
        args += [f"--vip={net}={vip}" for net, vip in topo["vips"].items()]
    if "priority" in h:
        args.append(f"--priority={h['priority']}")
    if "route" in h:
        args.append(f"--route={h['route']['to']}={h['route']['via']}")
    args += [f"--peer-mac={p['mac']}" for p in topo["hosts"] if p["role"] == h["role"] and p is not h and "mac" in p]
    return args


def run_role(ns: str, topo: dict[str, Any], name: str, state: Path) -> str:
    """Run host `name`'s role script in namespace `ns`: configuration in `state`/etc, pid files and logs in
    `state`/run (the lab skips package installation and systemd, and `ipvsd check`: a Python start costs tens of
    seconds under the emulated CPU, and `ipvsd run` refuses a bad configuration anyway)."""
    h = host(topo, name)
    cmd = ["ip", "netns", "exec", ns, str(ROLES / f"{h['role']}.sh"), *role_args(topo, h), f"--name={name}",
           f"--src={ROOT}", f"--etc={state / 'etc'}", f"--run={state / 'run'}", "--no-systemd", "--no-install",
           "--no-check"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"{h['role']}.sh for {name} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout
