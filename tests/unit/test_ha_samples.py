"""The director-pair and seed 000 samples (etc/ha/, etc/seed000/, etc/conf.d/ssh.toml) say what the seeds say.

The kernel tests (tests/kernel/test_pair.py, test_seed000.py) run these files verbatim; here they are read by
ipvsd's own loader and compared with the seeds' configs, without a kernel, and `ipvsd check --no-host` accepts
them (without --no-host check also wants the [sync] interface, ens4, on the host it runs on).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipvsd.cli import main
from ipvsd.config import load
from ipvsd.config.schema import HttpCheck, SimpleTcpCheck

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "etc" / "ha"
SEED000 = ROOT / "etc" / "seed000"
SEED003 = ROOT / "tests" / "unit" / "config" / "fixtures" / "seed003_keepalived_master.conf"


def blocks(text: str) -> dict[str, str]:
    """keepalived's vrrp_instance blocks by name, comments and blank lines dropped."""
    lines = [ln.split("#")[0].rstrip() for ln in text.splitlines()]
    body = "\n".join(ln for ln in lines if ln.strip())
    return dict(re.findall(r"^vrrp_instance (\S+) \{\n(.*?)^\}", body, re.M | re.S))


def settings(block: str) -> dict[str, str]:
    return {m[0]: m[1] for m in re.findall(r"^[ \t]*(\w+)[ \t]*(.*?)[ \t]*$", block, re.M)}


@pytest.mark.parametrize("sample", [HA / "ipvsd.toml", SEED000 / "ipvsd.toml", ROOT / "etc" / "ipvsd.toml"],
                         ids=["ha", "seed000", "etc"])
def test_check_accepts_the_sample(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--no-host", "-c", str(sample)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_pair_ipvsd_sample_is_the_seeds_virtual_server_plus_sync() -> None:
    config, warnings = load(str(HA / "ipvsd.toml"))
    seed, _ = load(str(SEED003))
    assert not [w for w in warnings if w.level == "error"]
    (ours,), (theirs,) = config.services, seed.services
    assert ours.service_key() == theirs.service_key() and ours.scheduler == theirs.scheduler == "rr"
    assert [(r.address, r.port, r.forward) for r in ours.reals] == [(r.address, r.port, r.forward)
                                                                    for r in theirs.reals]
    assert ours.on_failure == "quiesce"  # the seed's inhibit_on_failure, which its reader sets per real
    assert {r.on_failure or theirs.on_failure for r in theirs.reals} == {"quiesce"}
    assert all(isinstance(c, HttpCheck) and c.path == "/" and c.accepts(200) for c in ours.checks)
    assert config.sync is not None and config.sync.owner == "ipvsd"
    assert [(d.state, d.mcast_ifn, d.syncid) for d in config.sync.wanted()] == [(1, "ens4", 1), (2, "ens4", 1)]
    assert "10.2.1.254" in config.settings.vips and not config.settings.clean_stop


@pytest.mark.parametrize("name", ["lb1", "lb2"])
def test_pair_keepalived_samples_are_the_seeds_vrrp_with_nopreempt(name: str) -> None:
    ours = blocks((HA / f"keepalived-{name}.conf").read_text())
    seed = blocks(SEED003.read_text().replace("state MASTER", "state BACKUP"))
    assert set(ours) == set(seed) == {"VI_EXT", "VI_INT"}
    priority = {"lb1": "105", "lb2": "95"}[name]
    for instance, block in ours.items():
        mine, theirs = settings(block), settings(seed[instance])
        assert mine.pop("nopreempt") == "" and mine.pop("priority") == priority
        theirs.pop("priority")
        assert mine == theirs  # interface, vrid, advert_int, auth, VIP, state BACKUP
    text = (HA / f"keepalived-{name}.conf").read_text()
    assert "virtual_server" not in text and "vrrp_sync_group VG1" in text  # ipvsd owns IPVS


def test_seed000_samples() -> None:
    config, _ = load(str(SEED000 / "ipvsd.toml"))
    (svc,) = config.services
    assert svc.fwmark == 22 and svc.scheduler == "rr" and svc.persistence is None
    assert [(r.address, r.port, r.forward) for r in svc.reals] == [("192.168.2.230", 22, "route"),
                                                                  ("192.168.2.231", 22, "route")]
    (check,) = svc.checks
    assert isinstance(check, SimpleTcpCheck) and check.expect is not None and check.expect == "^SSH-"
    assert config.settings.vips == ("192.168.2.232",)
    macs = {"ha0": "52:54:00:00:02:30", "ha1": "52:54:00:00:02:31"}
    for node, peer in (("ha0", "ha1"), ("ha1", "ha0")):
        rules = (SEED000 / f"iptables-{node}.rules").read_text()
        assert f"-d 192.168.2.232/32 -p tcp -m tcp --dport 22 -m mac ! --mac-source {macs[peer]} " \
               "-j MARK --set-mark 22" in rules
        (vrrp,) = blocks((SEED000 / f"keepalived-{node}.conf").read_text()).values()
        assert "nopreempt" in settings(vrrp) and settings(vrrp)["state"] == "BACKUP"


def test_conf_d_ssh_alternates() -> None:
    """Seed 000 alternates successive logins: persistence would pin a client to one server."""
    config, _ = load(str(ROOT / "etc" / "ipvsd.toml"))
    ssh = next(s for s in config.services if s.name == "ssh")
    assert ssh.persistence is None and ssh.scheduler == "rr"
    assert all(isinstance(c, SimpleTcpCheck) for c in ssh.checks)
