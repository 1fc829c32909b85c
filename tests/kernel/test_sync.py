"""`ipvsd run` with [sync] and [sysctl] in a fresh network namespace: the kernel's master and backup sync daemons
started and repaired, sysctls set (and their drift reported), a missing sync interface that leaves the table
programmed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.kernel.daemon import Ipvsd
from tests.kernel.lab import wait_until
from tests.netns import ipvsadm, sh

CONFIG = """
[settings]
metrics_listen = ""
watch_config = false
clean_stop = true

[sync]
interface = "{ifname}"
syncid = 7

[sysctl]
sloppy_tcp = 1
sync_threshold = [3, 40]

[[services]]
address = "10.9.0.1"
port = 80
scheduler = "rr"

[[services.reals]]
address = "10.9.1.1"
port = 80
"""


def director(ns: str) -> Any:
    """What `Ipvsd` needs of a lab: the namespace it runs in."""
    return SimpleNamespace(lb=ns)


def sync_link(ns: str) -> None:
    """A veth pair inside `ns` (multicast-capable), sync0 with an IPv4 address for the master to bind."""
    sh("ip", "-n", ns, "link", "add", "sync0", "type", "veth", "peer", "name", "sync1")
    sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "sync0")
    sh("ip", "-n", ns, "link", "set", "sync0", "up")
    sh("ip", "-n", ns, "link", "set", "sync1", "up")


def daemons(ns: str) -> list[str]:
    """`ipvsadm -L --daemon` without the kernel's defaults: ['master sync daemon (mcast=sync0, syncid=7', ...]."""
    return [line.split(", maxlen=")[0].rstrip(")").strip()
            for line in ipvsadm(ns, "-L", "--daemon").splitlines() if line.strip()]


def sysctl(ns: str, name: str) -> str:
    return " ".join(sh("cat", f"/proc/sys/net/ipv4/vs/{name}", ns=ns).stdout.split())


def test_sync_daemons_started_repaired_and_sysctls_set(netns: str, tmp_path: Path) -> None:
    sync_link(netns)
    cfg = tmp_path / "ipvsd.toml"
    cfg.write_text(CONFIG.format(ifname="sync0"))
    d = Ipvsd(director(netns), cfg, tmp_path / "state").start()
    both = ["master sync daemon (mcast=sync0, syncid=7", "backup sync daemon (mcast=sync0, syncid=7"]
    try:
        wait_until(lambda: daemons(netns) == both, timeout=120, what="master and backup sync daemons")
        d.wait_log(r"master sync daemon on sync0 \(syncid 7\) started", timeout=10)
        assert "10.9.0.1:80" in ipvsadm(netns, "-Ln")
        assert sysctl(netns, "sloppy_tcp") == "1"
        assert sysctl(netns, "sync_threshold") == "3 40"
        d.wait_log(r"net\.ipv4\.vs\.sloppy_tcp: 0 -> 1", timeout=5)

        # a daemon stopped behind ipvsd's back comes back within a resync (2 s here; slack for the VM)
        ipvsadm(netns, "--stop-daemon", "backup")
        wait_until(lambda: daemons(netns) == both, timeout=d.resync + 8, what="the backup daemon repaired")
        d.wait_log(r"backup sync daemon on sync0 \(syncid 7\) had disappeared: started", timeout=5)

        # a sysctl changed by hand: reported once at the next resync, and left as it is
        sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/vs/sloppy_tcp", ns=netns)
        d.wait_log(r"net\.ipv4\.vs\.sloppy_tcp drifted: 0, ipvsd set 1", timeout=d.resync + 8)
        assert sysctl(netns, "sloppy_tcp") == "0"
        status = d.status()
        assert [(x["role"], x["running"], x["owner"]) for x in status["sync"]] == [
            ("master", True, "ipvsd"), ("backup", True, "ipvsd")]
        assert {x["name"]: x["state"] for x in status["sysctls"]} == {"sloppy_tcp": "drift", "sync_threshold": "ok"}
    finally:
        rc = d.stop()
    assert rc == 0
    assert daemons(netns) == []  # clean_stop stops the daemons ipvsd owns


def test_a_missing_sync_interface_is_an_error_and_the_table_is_programmed(netns: str, tmp_path: Path) -> None:
    cfg = tmp_path / "ipvsd.toml"
    cfg.write_text(CONFIG.format(ifname="nosuch0"))
    d = Ipvsd(director(netns), cfg, tmp_path / "state", extra=("--debug",)).start()
    try:
        wait_until(lambda: "10.9.0.1:80" in ipvsadm(netns, "-Ln"), timeout=120, what="the service programmed")
        d.wait_log(r"cannot start the master sync daemon on nosuch0 \(syncid 7\): .*\(ENODEV\)", timeout=10)
        d.wait_log(r"cannot start the backup sync daemon on nosuch0", timeout=10)
        # tried again at the next resyncs (debug lines), said once at error level
        wait_until(lambda: d.log().count("cannot start the master sync daemon on nosuch0") >= 3,
                   timeout=3 * d.resync + 10, what="two retries at resync")
        errors = [line for line in d.log().splitlines() if "cannot start the master sync daemon" in line
                  and "(again)" not in line]
        assert len(errors) == 1, errors
        assert daemons(netns) == []
        assert "10.9.0.1:80" in ipvsadm(netns, "-Ln")
    finally:
        assert d.stop() == 0
