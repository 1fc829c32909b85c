"""vagrant/: the Vagrantfiles validate (and would fail on a missing role script), the role scripts pass shellcheck,
and the samples the role scripts install name the addresses of vagrant/topology.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ipvsd.config import load

ROOT = Path(__file__).resolve().parents[2]
VAGRANT = ROOT / "vagrant"
TOPOLOGIES = ("pair", "two-node")


def _tool(name: str) -> str:
    """A Debian tool the lab's set-up installs (scripts/lab packages); installed here when missing (root only)."""
    found = shutil.which(name)
    if found is None and os.getuid() == 0 and os.environ.get("IPVSD_NO_INSTALL") != "1":
        subprocess.run([str(ROOT / "scripts" / "lab"), "packages"], capture_output=True, timeout=900, check=False)
        found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed and could not be installed")
    return found


def _validate(vagrant: str, directory: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    # VAGRANT_DOTFILE_PATH and VAGRANT_HOME in tmp: validation writes state, and the checkout may be read-only
    env = {**os.environ, "VAGRANT_DOTFILE_PATH": str(tmp / "dot"), "VAGRANT_HOME": str(tmp / "home"),
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    return subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_vagrantfile_validates(topology: str, tmp_path: Path) -> None:
    p = _validate(_tool("vagrant"), VAGRANT / topology, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout


def test_a_missing_role_script_fails_validation(tmp_path: Path) -> None:
    copy = tmp_path / "vagrant"
    shutil.copytree(VAGRANT, copy, ignore=shutil.ignore_patterns(".vagrant"))
    (copy / "roles" / "node.sh").unlink()
    p = _validate(_tool("vagrant"), copy / "two-node", tmp_path)
    assert p.returncode != 0
    assert "node.sh" in p.stdout + p.stderr


def test_role_scripts_pass_shellcheck() -> None:
    scripts = sorted(str(p) for p in (VAGRANT / "roles").glob("*.sh"))
    assert len(scripts) >= 4
    p = subprocess.run([_tool("shellcheck"), "-x", *scripts], cwd=VAGRANT / "roles", capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def _topology(name: str) -> dict[str, Any]:
    topo: dict[str, Any] = json.loads((VAGRANT / "topology.json").read_text())[name]
    return topo


def _hosts(topo: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [h for h in topo["hosts"] if h["role"] == role]


def test_the_pair_samples_name_the_topology_addresses() -> None:
    """etc/ha (what the role scripts install and the lab runs) agrees with vagrant/topology.json."""
    topo = _topology("pair")
    config, _ = load(str(ROOT / "etc" / "ha" / "ipvsd.toml"))
    (web,) = config.services
    assert web.address == topo["vips"]["ext"]
    assert [r.address for r in web.reals] == [h["addresses"]["int"] for h in _hosts(topo, "realserver")]
    assert topo["vips"]["int"] in config.settings.vips
    for host in _hosts(topo, "director"):
        text = (ROOT / "etc" / "ha" / f"keepalived-{host['name']}.conf").read_text()
        assert re.search(rf"^\s*priority {host['priority']}$", text, re.M)
        vips = re.findall(r"virtual_ipaddress \{\s*(\S+)", text)
        assert vips == [topo["vips"]["ext"], topo["vips"]["int"]]
    for host in _hosts(topo, "realserver"):  # NAT replies return through whichever director holds the VIPs
        assert host["route"]["via"] == topo["vips"]["int"]


def test_the_two_node_samples_name_the_topology_addresses() -> None:
    topo = _topology("two-node")
    config, _ = load(str(ROOT / "etc" / "seed000" / "ipvsd.toml"))
    (ssh,) = config.services
    nodes = _hosts(topo, "node")
    assert [r.address for r in ssh.reals] == [h["addresses"]["lan"] for h in nodes]
    assert config.settings.vips == (topo["vips"]["lan"],)
    for host, peer in zip(nodes, reversed(nodes), strict=True):
        rules = (ROOT / "etc" / "seed000" / f"iptables-{host['name']}.rules").read_text()
        assert f"--mac-source {peer['mac']}" in rules and f"-d {topo['vips']['lan']}/32" in rules
        text = (ROOT / "etc" / "seed000" / f"keepalived-{host['name']}.conf").read_text()
        assert re.search(rf"^\s*priority {host['priority']}$", text, re.M)
        assert re.findall(r"virtual_ipaddress \{\s*(\S+)", text) == [f"{topo['vips']['lan']}/32"]
