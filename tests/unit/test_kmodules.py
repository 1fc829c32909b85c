"""A scheduler the host cannot load: found from the module index, refused at start and reload where it is named."""

from __future__ import annotations

from pathlib import Path

from ipvsd import config as configmod
from ipvsd.shell.kmodules import refused_schedulers, scheduler_available

SVC = '[[services]]\naddress = "127.0.0.1"\nport = 80\nscheduler = "{s}"\n\n[[services.reals]]\naddress = "127.0.0.2"\n'


def test_a_scheduler_is_available_when_loaded_built_in_or_on_disk_and_unknown_without_an_index(tmp_path: Path) -> None:
    mods = tmp_path / "lib" / "modules" / "6.1.0-test"
    assert scheduler_available("rr", root=tmp_path, release="6.1.0-test") is None, "no index: cannot tell"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text("kernel/net/netfilter/ipvs/ip_vs_wrr.ko.xz: "
                                      "kernel/net/netfilter/ipvs/ip_vs.ko.xz\n")
    (mods / "modules.builtin").write_text("kernel/net/netfilter/ipvs/ip_vs_rr.ko\n")
    (tmp_path / "sys" / "module" / "ip_vs_custom").mkdir(parents=True)
    seen = {n: scheduler_available(n, root=tmp_path, release="6.1.0-test") for n in ("wrr", "rr", "custom", "wr",
                                                                                      "roundrobin")}
    assert seen == {"wrr": True, "rr": True, "custom": True, "wr": False, "roundrobin": False}


def test_an_unloadable_unknown_scheduler_is_refused_at_its_line_and_a_loadable_or_unknowable_one_is_not(
        tmp_path: Path) -> None:
    f = tmp_path / "ipvsd.toml"
    f.write_text(SVC.format(s="roundrobin") + "\n" + SVC.format(s="rr").replace("port = 80", "port = 81"))
    config, warnings = configmod.load(str(f))
    errors = refused_schedulers(config, warnings, lambda name: False)
    assert [str(e) for e in errors] == [
        f"{f}:4: services.scheduler: unknown scheduler 'roundrobin': this kernel has no module ip_vs_roundrobin; it "
        "has rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos"]
    assert refused_schedulers(config, warnings, lambda name: True) == []
    assert refused_schedulers(config, warnings, lambda name: None) == [], "a host that cannot tell keeps the warning"
