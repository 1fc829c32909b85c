"""The lab's installed copy of ipvsd (tests/kernel/installed.py) runs the daemon's imports from itself alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.kernel import installed

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_copy_imports_the_daemon_from_itself_even_when_started_in_the_checkout(tmp_path: Path) -> None:
    archive = tmp_path / "installed.tar"
    assert installed.pack(archive) > 0
    prefix = installed.install(archive, tmp_path / "dest")
    probe = ("import sys, ipvsd, ipvsd.shell.daemon, pydantic, pyroute2, h11, tomli, inotify_simple, prometheus_client;"
             "print(ipvsd.__file__); print(pydantic.__file__); print(sys.base_prefix)")
    out = subprocess.run([*prefix, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.split()
    dest = str(tmp_path / "dest")
    assert all(line.startswith(dest) for line in lines), lines
