"""The systemd unit and the features agree: the sandbox leaves writable what ipvsd writes."""

from __future__ import annotations

from pathlib import Path

from ipvsd.shell.sysctl import ROOT as SYSCTL_ROOT

UNIT = Path(__file__).resolve().parents[2] / "etc" / "ipvsd.service"


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
