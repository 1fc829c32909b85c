"""The scale-out samples (etc/scaleout/) are valid and agree with each other: ipvsd checks its file without a warning,
BIRD parses both of its files, and the addresses, AS numbers and the routing table match across them.

The kernel test (tests/kernel/test_scaleout.py) runs these files verbatim; here they are read without a kernel.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ipvsd.cli import main
from ipvsd.config import load

SAMPLES = Path(__file__).resolve().parents[2] / "etc" / "scaleout"
BIRD = shutil.which("bird") or next((p for p in ("/usr/sbin/bird", "/sbin/bird") if Path(p).exists()), None)


def sysctls(name: str) -> dict[str, str]:
    """A sysctl.d file's settings (comments and blank lines dropped)."""
    out: dict[str, str] = {}
    for line in (SAMPLES / name).read_text().splitlines():
        key, _, value = line.split("#")[0].partition("=")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def test_check_accepts_the_director_sample_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    # --no-host: without it check also reads table 200 of the host it runs on
    assert main(["check", "--no-host", "-c", str(SAMPLES / "ipvsd.toml")]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out.lower(), out
    assert "ip route add 192.0.2.10/32 dev lo table 200 proto 99" in out


def test_director_sample_keeps_flows_across_directors() -> None:
    config, warnings = load(str(SAMPLES / "ipvsd.toml"))
    assert warnings == []
    (web,) = config.services
    assert web.scheduler == "mh" and set(web.sched_flags) == {1, 2}  # mh-fallback, mh-port
    assert web.on_failure == "quiesce" and web.announced() == ("192.0.2.10",)
    assert {r.forward for r in web.reals} == {"route"}
    assert config.sysctl == {"sloppy_tcp": 1}
    assert config.announce is not None
    assert (config.announce.table, config.announce.protocol, config.announce.device) == (200, 99, "lo")
    assert config.announce.on_stop == "withdraw" and config.announce.withdraw_delay == 2
    assert config.check_defaults.interval * config.check_defaults.fall <= 2  # the lab's budget: fall x interval + 1 s


def test_bird_samples_agree_with_ipvsd_and_each_other() -> None:
    director = (SAMPLES / "bird-director.conf").read_text()
    router = (SAMPLES / "bird-router.conf").read_text()
    config, _ = load(str(SAMPLES / "ipvsd.toml"))
    assert config.announce is not None
    assert re.search(rf"^\s*kernel table {config.announce.table};", director, re.M)
    assert re.search(r"^\s*learn;", director, re.M) and re.search(r"^\s*export none;", director, re.M)
    assert re.search(r"^\s*merge paths on;", router, re.M)
    # each side's neighbour is the other: the router's address and AS, the directors' AS
    (router_addr, router_as), = re.findall(r"^\s*local (\S+) as (\d+);", router, re.M)
    assert re.search(rf"^\s*neighbor {re.escape(router_addr)} as {router_as};", director, re.M)
    (director_as,) = re.findall(r"^\s*local as (\d+);", director, re.M)
    neighbours = re.findall(r"^protocol bgp \w+ from director \{ neighbor (\S+) as (\d+); \}", router, re.M)
    assert [a for _, a in neighbours] == [director_as] * 3
    # short timers on both ends (the negotiated hold time is the smaller one)
    for text in (director, router):
        assert re.search(r"^\s*hold time 3;", text, re.M) and re.search(r"^\s*keepalive time 1;", text, re.M)


@pytest.mark.skipif(BIRD is None, reason="bird (Debian bird2) is not installed")
@pytest.mark.parametrize("name", ["bird-director.conf", "bird-router.conf"])
def test_bird_parses_the_sample(name: str) -> None:
    assert BIRD is not None
    p = subprocess.run([BIRD, "-p", "-c", str(SAMPLES / name)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_sysctl_samples() -> None:
    assert sysctls("sysctl-router.conf") == {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": "1"}
    for name in ("sysctl-director.conf", "sysctl-real.conf"):
        got = sysctls(name)
        assert got["net.ipv4.conf.all.arp_ignore"] == "1" and got["net.ipv4.conf.all.arp_announce"] == "2", name


def test_the_labs_rr_control_is_what_check_warns_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel test's control case (rr instead of mh) differs from the sample by the scheduler alone."""
    from tests.kernel.scaleout import with_scheduler

    rr = tmp_path / "ipvsd.toml"
    rr.write_text(with_scheduler((SAMPLES / "ipvsd.toml").read_text(), "rr"))
    config, _ = load(str(rr))
    sample, _ = load(str(SAMPLES / "ipvsd.toml"))
    assert config.services[0].scheduler == "rr" and config.services[0].sched_flags == ()
    assert config.model_copy(update={"services": ()}) == sample.model_copy(update={"services": ()})
    assert main(["check", "--no-host", "-c", str(rr)]) == 0
    assert "scheduler 'rr' on an announced service" in capsys.readouterr().err
