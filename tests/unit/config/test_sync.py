"""keepalived's lvs_sync_daemon read as [sync] (with `inst`: keepalived runs them; without: ipvsd), [sync] and
[sysctl] written by convert, and the note that keepalived must then run with --vrrp."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsd.config import ConfigErrors, load, native
from ipvsd.config import keepalived as ka
from ipvsd.config.schema import Sync
from ipvsd.config.to_toml import to_toml
from ipvsd.errors import ConfigError

VI_1 = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n}\n"
VS = "virtual_server 10.0.0.1 80 {\n  lvs_sched rr\n  real_server 10.0.1.1 80 {\n  }\n}\n"


def _sync(text: str) -> Sync:
    config, _ = ka.parse(text, "ka.conf")
    assert config.sync is not None
    return config.sync


@pytest.mark.parametrize(("line", "expected"), [
    # with an instance keepalived's VRRP process runs them, and the sync id defaults to the VRID
    ("lvs_sync_daemon eth1 inst VI_1", Sync(interface="eth1", syncid=51, owner="external")),
    ("lvs_sync_daemon eth1 VI_1", Sync(interface="eth1", syncid=51, owner="external")),
    ("lvs_sync_daemon eth1 inst VI_1 id 7", Sync(interface="eth1", syncid=7, owner="external")),
    ("lvs_sync_daemon eth1 id 0 inst VI_1", Sync(interface="eth1", syncid=0, owner="external")),
    # without one (keepalived >= 2.1) master and backup run all the time, sync id 0 unless given: ipvsd's job
    ("lvs_sync_daemon eth1", Sync(interface="eth1", syncid=0, owner="ipvsd", daemons="both")),
    ("lvs_sync_daemon eth1 id 9 maxlen 1400 port 8850 ttl 2 group 224.0.0.90",
     Sync(interface="eth1", syncid=9, maxlen=1400, port=8850, ttl=2, group="224.0.0.90")),
    ("lvs_sync_daemon eth1 group ff02::81", Sync(interface="eth1", group="ff02::81")),
])
def test_lvs_sync_daemon_becomes_the_sync_section(line: str, expected: Sync) -> None:
    assert _sync(f"global_defs {{\n  {line}\n}}\n{VI_1}") == expected


def test_a_bare_sync_id_after_the_instance_is_read_with_a_warning() -> None:
    config, warnings = ka.parse(f"global_defs {{\n  lvs_sync_daemon eth1 VI_1 5\n}}\n{VI_1}", "ka.conf")
    assert config.sync == Sync(interface="eth1", syncid=5, owner="external")
    assert any(w.line == 2 and "write `id 5`" in w.message for w in warnings)


def test_the_instance_may_come_after_global_defs_or_before_it() -> None:
    assert _sync(f"{VI_1}global_defs {{\n  lvs_sync_daemon eth1 inst VI_1\n}}\n").syncid == 51


def test_the_deprecated_instance_keyword_follows_its_instance_with_a_warning() -> None:
    text = "vrrp_instance VI_1 {\n  virtual_router_id 8\n  lvs_sync_daemon_interface eth2\n}\n"
    config, warnings = ka.parse(text, "ka.conf")
    assert config.sync == Sync(interface="eth2", syncid=8, owner="external")
    [w] = [w for w in warnings if w.key == "lvs_sync_daemon_interface"]
    assert w.line == 3 and "lvs_sync_daemon eth2 inst VI_1" in w.message


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    (f"global_defs {{\n  lvs_sync_daemon eth1 inst VI_2\n}}\n{VI_1}", 2, "lvs_sync_daemon",
     "no vrrp_instance named 'VI_2' (did you mean 'VI_1'?)"),
    ("global_defs {\n  lvs_sync_daemon eth1 inst VI_1\n}\n", 2, "lvs_sync_daemon", "the instances are none"),
    ("global_defs {\n  lvs_sync_daemon\n}\n", 2, "lvs_sync_daemon", "needs an interface"),
    ("global_defs {\n  lvs_sync_daemon eth1 id 256\n}\n", 2, "lvs_sync_daemon", "id must be an integer in 0..255"),
    ("global_defs {\n  lvs_sync_daemon eth1 ttl 0\n}\n", 2, "lvs_sync_daemon", "ttl must be an integer in 1..255"),
    ("global_defs {\n  lvs_sync_daemon eth1 maxlen 70000\n}\n", 2, "lvs_sync_daemon", "1..65507"),
    ("global_defs {\n  lvs_sync_daemon eth1 port\n}\n", 2, "lvs_sync_daemon", "needs a value after 'port'"),
    ("global_defs {\n  lvs_sync_daemon eth1 id 1 mcast 224.0.0.1\n}\n", 2, "lvs_sync_daemon",
     "unknown option 'mcast'"),
    ("global_defs {\n  lvs_sync_daemon eth1 group 10.0.0.1\n}\n", 2, "lvs_sync_daemon (group)",
     "not a multicast address"),
    ("global_defs {\n  lvs_sync_daemon interface-name-too-long\n}\n", 2, "lvs_sync_daemon (interface)",
     "not a network interface name"),
    ("global_defs {\n  lvs_sync_daemon eth1 inst VI_1\n}\nvrrp_instance VI_1 {\n}\n", 4, "vrrp_instance",
     "has no virtual_router_id"),
    ("global_defs {\n  lvs_sync_daemon eth1 inst VI_1\n}\nvrrp_instance VI_1 {\n  virtual_router_id 0\n}\n", 5,
     "virtual_router_id", "1..255"),
    (f"global_defs {{\n  lvs_sync_daemon eth1\n  lvs_sync_daemon eth2\n}}\n{VI_1}", 3, "lvs_sync_daemon",
     "already configured on line 2"),
    ("global_defs {\n  lvs_sync_daemon eth1\n}\nvrrp_instance VI_1 {\n  virtual_router_id 8\n"
     "  lvs_sync_daemon_interface eth2\n}\n", 6, "lvs_sync_daemon_interface", "already configured on line 2"),
])
def test_sync_errors_are_located(text: str, line: int, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        ka.parse(text, "ka.conf")
    err = e.value.errors[0] if isinstance(e.value, ConfigErrors) else e.value
    assert (err.path, err.line, err.key) == ("ka.conf", line, key), str(err)
    assert fragment in err.message, str(err)


def test_vrrp_and_virtual_servers_in_one_file_say_keepalived_must_run_with_vrrp_only() -> None:
    _, warnings = ka.parse(f"{VI_1}{VS}", "ka.conf")
    [w] = [w for w in warnings if "--vrrp" in w.message]
    assert (w.line, w.key, w.level) == (1, "vrrp_instance", "warning")
    assert "-P" in w.message and "both program the IPVS table" in w.message


@pytest.mark.parametrize(("sync_line", "fragment"), [
    ("lvs_sync_daemon eth1 inst VI_1", "keepalived --vrrp then runs the sync daemons"),
    ("lvs_sync_daemon eth1", "ipvsd runs the sync daemons"),
])
def test_the_vrrp_note_says_who_runs_the_sync_daemons(sync_line: str, fragment: str) -> None:
    _, warnings = ka.parse(f"global_defs {{\n  {sync_line}\n}}\n{VI_1}{VS}", "ka.conf")
    [w] = [w for w in warnings if "--vrrp" in w.message]
    assert fragment in w.message


@pytest.mark.parametrize("text", [VI_1, VS])
def test_no_vrrp_note_without_both_kinds_of_block(text: str) -> None:
    _, warnings = ka.parse(text, "ka.conf")
    assert not [w for w in warnings if "--vrrp" in w.message]


def test_convert_writes_sync_and_sysctl_and_reads_them_back(tmp_path: Path) -> None:
    src = tmp_path / "ipvsd.toml"
    src.write_text('include = []\n[sync]\ninterface = "ens4"\nsyncid = 5\ngroup = "224.0.0.90"\n'
                   "[sysctl]\nsloppy_tcp = true\nsync_threshold = [3, 50]\n")
    config, _ = load(str(src))
    text = to_toml(config)
    assert '[sync]\ninterface = "ens4"\nsyncid = 5\ngroup = "224.0.0.90"\n' in text
    assert "[sysctl]\nsloppy_tcp = 1\nsync_threshold = [3, 50]\n" in text
    out = tmp_path / "out.toml"
    out.write_text(text)
    assert native.read(str(out))[0] == config


def test_keepalived_sync_converts_to_a_native_sync_section(tmp_path: Path) -> None:
    config, _ = ka.parse(f"global_defs {{\n  lvs_sync_daemon eth1 inst VI_1 maxlen 1400\n}}\n{VI_1}{VS}", "k")
    text = to_toml(config)
    assert '[sync]\ninterface = "eth1"\nsyncid = 51\nowner = "external"\nmaxlen = 1400\n' in text


def test_a_repeated_instance_name_is_no_traceback() -> None:
    text = ("vrrp_instance VI_1 {\n  virtual_router_id 8\n}\n"
            "vrrp_instance VI_1 {\n  virtual_router_id 9\n  lvs_sync_daemon_interface eth2\n}\n")
    config, _ = ka.parse(text, "ka.conf")
    assert config.sync == Sync(interface="eth2", syncid=8, owner="external")


@pytest.mark.parametrize(("section", "name"), [
    # found wiring `ipvsd check`'s host checks into the fuzz (issue 19): a NUL passed, and `ipvsd check` died in
    # socket.if_nametoindex with a traceback; a 15-character name of 30 bytes passed the "1-15 bytes" rule
    ("sync", "a\\u0000b"), ("sync", "é" * 15), ("announce", "lo\\u0000"), ("announce", "ü" * 8),
])
def test_an_interface_name_the_kernel_cannot_hold_is_refused(tmp_path: Path, section: str, name: str) -> None:
    f = tmp_path / "ipvsd.toml"
    keys = 'interface = "{}"\nsyncid = 1' if section == "sync" else 'device = "{}"\ntable = 100'
    f.write_text(f"[{section}]\n{keys.format(name)}\n\n[[services]]\naddress = \"10.0.0.1\"\nport = 80\n")
    with pytest.raises(ConfigError) as e:
        load(str(f))
    err = e.value.errors[0] if isinstance(e.value, ConfigErrors) else e.value
    assert err.line == 2 and "not a network interface name" in err.message, str(err)
