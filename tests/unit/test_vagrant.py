"""vagrant/: the Vagrantfiles validate (and would fail on a missing role script), the role scripts pass shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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
