"""The [sysctl] table: every net.ipv4.vs knob checked against the kernel's ranges, refusals located at their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsd.config import ConfigErrors, load, sysctls
from ipvsd.config.schema import Config

# The files of Linux 6.1's net/netfilter/ipvs (ip_vs_ctl.c vs_vars, ip_vs_lblc.c, ip_vs_lblcr.c), and the two
# 6.2 added.
LINUX_6_1 = {"am_droprate", "amemthresh", "backup_only", "cache_bypass", "conn_reuse_mode", "conntrack",
             "debug_level", "drop_entry", "drop_packet", "expire_nodest_conn", "expire_quiescent_template",
             "ignore_tunneled", "lblc_expiration", "lblcr_expiration", "nat_icmp_send", "pmtu_disc",
             "run_estimation", "schedule_icmp", "secure_tcp", "sloppy_sctp", "sloppy_tcp", "snat_reroute",
             "sync_persist_mode", "sync_ports", "sync_qlen_max", "sync_refresh_period", "sync_retries",
             "sync_sock_size", "sync_threshold", "sync_version"}


def test_the_table_holds_the_kernels_files_and_no_other() -> None:
    assert set(sysctls.KNOBS) == LINUX_6_1 | {"est_cpulist", "est_nice"}
    assert {n for n, k in sysctls.KNOBS.items() if k.since} == {"est_cpulist", "est_nice"}


@pytest.mark.parametrize(("name", "value", "canonical"), [
    ("sloppy_tcp", True, 1), ("sloppy_tcp", False, 0), ("backup_only", 1, 1), ("conntrack", 0, 0),
    ("sync_threshold", [3, 50], (3, 50)), ("sync_threshold", [5, 0], (5, 0)), ("sync_version", 0, 0),
    ("sync_retries", 3, 3), ("conn_reuse_mode", 3, 3), ("drop_entry", 2, 2), ("secure_tcp", 3, 3),
    ("sync_ports", 8, 8), ("est_nice", -20, -20), ("est_cpulist", "0-3,8", "0-3,8"), ("est_cpulist", "", ""),
    ("est_cpulist", "0,1-N:1/2", "0,1-N:1/2"), ("sync_qlen_max", 2**40, 2**40), ("amemthresh", 4096, 4096),
])
def test_accepted_values_come_out_canonical(name: str, value: object, canonical: object) -> None:
    assert sysctls.check(name, value) == canonical
    assert Config(sysctl={name: value}).sysctl == {name: canonical}


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("sloppy_tcp", 2, "true/false or 0/1"), ("sloppy_tcp", "yes", "true/false or 0/1"),
    ("sync_version", 2, "0..1"), ("sync_retries", 4, "0..3"), ("conn_reuse_mode", 4, "0..3"),
    ("drop_entry", -1, "0..3"), ("drop_packet", 4, "0..3"), ("secure_tcp", 9, "0..3"),
    ("sync_ports", 3, "power of two"), ("sync_ports", 128, "1..64"), ("sync_threshold", 3, "two integers"),
    ("sync_threshold", [50, 3], "below the period"), ("sync_threshold", [3, 50, 1], "two integers"),
    ("sync_threshold", [-1, 50], "negative"), ("est_nice", 20, "-20..19"), ("est_cpulist", "x", "CPU list"),
    ("amemthresh", "1024", "integer"), ("amemthresh", 1.5, "integer"), ("backup_only", 3, "0/1"),
    ("sync_refresh_period", 10**8, "0..2147483"),
])
def test_refused_values_say_what_the_kernel_takes(name: str, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        sysctls.check(name, value)


@pytest.mark.parametrize(("name", "fragment"), [
    ("sync_period", "sync_threshold = [3, 50]"),
    ("sloppy_tpc", "did you mean 'sloppy_tcp'?"),
    ("net.ipv4.vs.sloppy_tcp", "without the net.ipv4.vs. prefix"),
    ("frobnicate", "unknown net.ipv4.vs sysctl 'frobnicate'"),
])
def test_unknown_names_are_refused_with_a_hint(name: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        sysctls.check(name, 1)
    assert fragment in str(e.value)


@pytest.mark.parametrize(("value", "text"), [((3, 50), "3 50"), (1, "1"), (0, "0"), ("0-3", "0-3"), ("", "")])
def test_proc_text_is_what_the_file_takes(value: sysctls.SysctlValue, text: str) -> None:
    assert sysctls.proc_text(value) == text


def test_every_refusal_of_a_file_is_located_at_its_own_key(tmp_path: Path) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text("[sysctl]\nsloppy_tcp = true\nsync_period = 50\nbackup_onyl = 1\ndrop_entry = 4\n"
                 "sync_threshold = [3, 50]\n")
    with pytest.raises(ConfigErrors) as e:
        load(str(f))
    assert [(x.path, x.line, x.key) for x in e.value.errors] == [
        (str(f), 3, "sysctl.sync_period"), (str(f), 4, "sysctl.backup_onyl"), (str(f), 5, "sysctl.drop_entry")]
    assert "sync_threshold = [3, 50]" in e.value.errors[0].message
    assert "did you mean 'backup_only'?" in e.value.errors[1].message
    assert "0..3" in e.value.errors[2].message


def test_a_valid_table_loads_canonical_and_a_newer_knob_warns(tmp_path: Path) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text("[sysctl]\nsloppy_tcp = true\nsync_threshold = [3, 50]\nest_nice = 5\n")
    config, warnings = load(str(f))
    assert config.sysctl == {"sloppy_tcp": 1, "sync_threshold": (3, 50), "est_nice": 5}
    [w] = warnings
    assert (w.line, w.key) == (4, "sysctl.est_nice") and "Linux 6.2" in w.message
