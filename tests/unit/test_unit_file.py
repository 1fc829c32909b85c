"""The systemd unit and the features agree: the sandbox leaves writable what ipvsd writes, as its own user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ipvsd.shell.sysctl import ROOT as SYSCTL_ROOT

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "etc" / "ipvsd.service"


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_ipvs_sysctls_stay_writable_under_protect_kernel_tunables() -> None:
    unit = settings()
    assert unit["ProtectKernelTunables"] == ["yes"]  # the rest of /proc/sys stays read-only
    writable = [p.lstrip("-+") for v in unit.get("ReadWritePaths", []) for p in v.split()]
    assert str(SYSCTL_ROOT) in writable, writable
    # nothing wider than the IPVS directory is reopened
    assert all(p.startswith(str(SYSCTL_ROOT)) or not p.startswith("/proc/sys") for p in writable), writable


def test_the_unit_keeps_the_capabilities_the_sync_daemons_need() -> None:
    # starting and stopping sync daemons is an IPVS netlink command: CAP_NET_ADMIN, as the table
    (caps,) = settings()["CapabilityBoundingSet"]
    assert "CAP_NET_ADMIN" in caps.split()


CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW"}  # IPVS, sysctls, SO_MARK, routes; raw ICMP (docs/least-privilege.md)


def test_the_daemon_runs_as_its_own_user_with_only_net_admin_and_net_raw() -> None:
    unit = settings()
    assert unit["User"] == ["ipvsd"] and unit["Group"] == ["ipvsd"]
    assert "DynamicUser" not in unit  # a stable uid (the unit's comment says why)
    (bounding,) = unit["CapabilityBoundingSet"]
    (ambient,) = unit["AmbientCapabilities"]
    assert set(bounding.split()) == CAPS and set(ambient.split()) == CAPS
    assert unit["NoNewPrivileges"] == ["yes"]
    # the daemon and `ipvsd reload` run as the unit's user; only loading ip_vs runs as root ("+")
    assert unit["ExecStartPre"] == ["+/sbin/modprobe ip_vs"]
    assert not [c for key in ("ExecStart", "ExecReload") for c in unit[key] if c[:1] in "+!"]
    # its state directory, where its control socket is, is the one systemd makes and gives to that user
    (start,) = unit["ExecStart"]
    assert start.split("--state-dir ")[1].split()[0] == f"/var/lib/{unit['StateDirectory'][0]}"


def test_the_install_steps_create_the_units_user() -> None:
    (user,) = settings()["User"]
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Installing on a director"):].split("\n## ")[0]
    director = (ROOT / "vagrant" / "roles" / "lib.sh").read_text()
    for text in (install, director):
        made = [line for line in text.splitlines() if "useradd --system" in line]
        assert made and f"id -u {user} " in made[0], made  # idempotent: a second install adds no user
        assert text.index("useradd") < text.index("etc/ipvsd.service")  # before the unit can start
    assert install.split("--shell /usr/sbin/nologin ")[1].split()[0] == user


def test_the_lab_runs_ipvsd_with_the_units_capabilities() -> None:
    from tests.kernel.daemon import NET

    assert {f"CAP_{c[1:].upper()}" for c in NET.split(",") if c.startswith("+")} == CAPS


def test_least_privilege_md_shows_systemd_analyze_of_this_unit() -> None:
    doc = (ROOT / "docs" / "least-privilege.md").read_text()
    shown = doc.split("## systemd-analyze security")[1]
    score = re.search(r"Overall exposure level for ipvsd.service: ([\d.]+)", shown)
    assert score is not None and f"**{score[1]} (OK)**" in doc  # the summary quotes the table's score
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here: the shown output is not compared with this unit")
    run = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True,
                         text=True, env={**os.environ, "LC_ALL": "C.UTF-8", "SYSTEMD_COLORS": "0"}, timeout=60)
    if run.returncode != 0 or "Overall exposure level" not in run.stdout:
        pytest.skip(f"systemd-analyze security --offline cannot judge the unit here: {run.stderr.strip()[:200]}")

    def exposed(text: str) -> list[str]:  # the settings that cost exposure, and the score
        return [line.split()[1] for line in text.splitlines() if line.startswith("✗")] + re.findall(
            r"Overall exposure level for ipvsd.service: [\d.]+", text)

    assert exposed(shown) == exposed(run.stdout), "regenerate the output in docs/least-privilege.md: " \
        "systemd-analyze security --offline=true etc/ipvsd.service"
