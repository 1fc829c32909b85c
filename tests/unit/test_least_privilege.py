"""ipvsd as an unprivileged user (issue 19, scenario 8): what needs a capability it lacks fails in one clear line.

The daemon itself, run as its own user with CAP_NET_ADMIN and CAP_NET_RAW on a real kernel, is
tests/kernel/test_least_privilege.py; here each refusal is met for real, by a child that dropped to nobody.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import pwd
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ipvsd import config as configmod
from ipvsd import privileges
from ipvsd.checks import make_probe
from ipvsd.checks.base import ProbeTarget
from ipvsd.checks.external import user_problem
from ipvsd.cli import main
from ipvsd.config.schema import ExternalCheck
from ipvsd.errors import ConfigError, KernelError
from ipvsd.kernel import Info, Kernel
from ipvsd.kernel.fake import FakeKernel
from ipvsd.shell import daemon as daemonmod
from ipvsd.shell.metrics import parse_listen
from ipvsd.shell.sysctl import Sysctls
from tests.support.unprivileged import as_nobody

NOBODY = "uid 65534 (nobody)"
ROOT = Path(__file__).resolve().parents[2]



def native(extra: str = "") -> str:
    return f"""
[settings]
metrics_listen = ""
[[services]]
address = "10.2.0.240"
port = 80
[[services.reals]]
address = "127.0.0.1"
port = 8080
{extra}"""


USER_CHECK = """
[[services.reals.checks]]
type = "external"
command = "/bin/true"
user = "root"
"""


def test_a_config_ipvsd_may_not_read_says_who_it_runs_as(shared: Path) -> None:
    cfg = shared / "ipvsd.toml"
    cfg.write_text(native())
    cfg.chmod(0o600)  # root's: the daemon's user is refused

    def load() -> str:
        try:
            configmod.load(str(cfg))
        except ConfigError as e:
            return str(e)
        return "loaded"

    out = as_nobody(load)
    assert out.startswith(f"{cfg}: cannot read: Permission denied (ipvsd runs as {NOBODY}: let it read"), out
    assert "chgrp" in out
    assert configmod.load(str(cfg))  # and root is not told about a user it is not


def test_a_metrics_port_below_1024_names_the_capability_it_needs() -> None:
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 80:
        pytest.skip("ports below 1024 are not privileged on this host (ip_unprivileged_port_start)")

    def bind() -> str:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 80))
            except OSError as e:
                return f"{e.strerror}{daemonmod._bind_hint(e, 80)}"
        return "bound"

    out = as_nobody(bind)
    assert out.startswith("Permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE, which ipvsd running "
                          f"as {NOBODY} lacks: listen on a port from 1024 up, as the default 9597"), out


def test_an_external_check_as_another_user_needs_setuid_and_says_so() -> None:
    def attempt() -> str:
        check = ExternalCheck(type="external", command="/bin/true", pass_target=False, user="root")
        ran = asyncio.run(make_probe(check).probe(ProbeTarget("127.0.0.1", 80), timeout=5))
        return f"{user_problem('root')}\n{user_problem('nobody')}\n{ran.ok} {ran.reason}"

    problem, own, probe = as_nobody(attempt).split("\n")
    assert problem == ("external check user = 'root': running a command as another user needs CAP_SETUID and "
                       f"CAP_SETGID, and ipvsd runs as {NOBODY} without them (drop `user`, or add both to "
                       "CapabilityBoundingSet= and AmbientCapabilities= in the systemd unit)")
    assert own == "None"  # its own user needs no switch, and no capability
    assert probe == f"False cannot run true: {problem}"  # a check that still meets it says the same


async def test_an_external_check_runs_as_its_user_with_that_users_group_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch user")
    nobody = pwd.getpwnam("nobody")
    check = ExternalCheck(type="external", command="/bin/sh", args=("-c", 'echo "$(id -u) $(id -g) $(id -G)"'),
                          pass_target=False, user="nobody")
    groups = os.getgroups()
    os.setgroups([0, 4])  # the daemon's supplementary groups (root, adm): the check must not inherit them
    try:
        result = await make_probe(check).probe(ProbeTarget("127.0.0.1", 80), timeout=5)
    finally:
        os.setgroups(groups)
    # root's group and supplementary groups are not passed on to the check
    assert result.ok and result.reason.endswith(f": {nobody.pw_uid} {nobody.pw_gid} {nobody.pw_gid}"), result.reason


def start_as_nobody(shared: Path, config_text: str, kernel: Callable[[], Kernel] = FakeKernel) -> list[str]:
    """Start the daemon as nobody over `kernel` with this configuration; its exit code and what it logged."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    state = shared / "state"
    state.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)  # the daemon's user owns its state directory
    cfg = shared / "ipvsd.toml"
    cfg.write_text(config_text)
    config, _ = configmod.load(str(cfg))

    def start() -> str:
        lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("ipvsd").addHandler(handler)
        logging.getLogger("ipvsd").setLevel(logging.INFO)
        opts = daemonmod.Options(config_path=str(cfg), state_dir=str(state), watch=False, socket=str(state / "s"))
        rc = asyncio.run(daemonmod.Daemon(opts, config, kernel).run())
        return f"{rc}\n" + "\n".join(lines)

    return as_nobody(start, bound=20).split("\n")


def test_the_daemon_refuses_a_check_user_it_cannot_become_at_start_and_reload(shared: Path) -> None:
    rc, *logged = start_as_nobody(shared, native(USER_CHECK))
    assert rc == "1", logged
    assert logged[0] == f"running as {NOBODY} with no capability", logged
    assert logged[-1] == (f"cannot start with this configuration: {shared}/ipvsd.toml: external check user = 'root': "
                          "running a command as another user needs CAP_SETUID and CAP_SETGID, and ipvsd runs as "
                          f"{NOBODY} without them (drop `user`, or add both to CapabilityBoundingSet= and "
                          "AmbientCapabilities= in the systemd unit)"), logged
    # a reload prepares the same way: it is refused whole, and the running configuration stays
    config, _ = configmod.load(str(shared / "ipvsd.toml"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(privileges, "effective", lambda: 0)
        mp.setattr(os, "geteuid", lambda: 4242)
        with pytest.raises(ConfigError, match="needs CAP_SETUID and CAP_SETGID, and ipvsd runs as uid 4242"):
            daemonmod.prepare(config, {}, path="ipvsd.toml")


def test_a_daemon_without_net_admin_says_ipvs_needs_it(shared: Path) -> None:
    class Refusing(FakeKernel):
        async def info(self) -> Info:
            raise KernelError("--version", errno.EPERM)  # what the kernel answers a caller without CAP_NET_ADMIN

    rc, *logged = start_as_nobody(shared, native(), Refusing)
    assert rc == "1", logged
    assert logged == ["cannot talk to the kernel's IPVS: ipvs --version: Operation not permitted (EPERM) (IPVS needs "
                      f"CAP_NET_ADMIN, which ipvsd running as {NOBODY} lacks: add it to CapabilityBoundingSet= and "
                      "AmbientCapabilities= in the systemd unit)"], logged


def test_ipvsd_check_warns_of_a_check_user_and_refuses_one_that_does_not_exist(
        shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = shared / "ipvsd.toml"
    cfg.write_text(native(USER_CHECK))
    assert main(["check", "-q", "-c", str(cfg)]) == 0  # -q: errors only
    assert main(["check", "-c", str(cfg)]) == 0
    assert "user = 'root': ipvsd needs CAP_SETUID and CAP_SETGID" in capsys.readouterr().err
    cfg.write_text(native(USER_CHECK.replace('"root"', '"no-such-user-here"')))
    assert main(["check", "-c", str(cfg)]) == 1
    assert "user = 'no-such-user-here': no such user on this host" in capsys.readouterr().err


def test_a_sysctl_ipvsd_may_not_write_names_the_capability(shared: Path) -> None:
    (shared / "conn_reuse_mode").write_text("1\n")  # root's, mode 0644: as /proc/sys is without CAP_NET_ADMIN

    def apply() -> str:
        sysctls = Sysctls(shared)
        sysctls.apply({"conn_reuse_mode": 0})
        return sysctls.errors["conn_reuse_mode"]

    assert as_nobody(apply) == ("permission denied (writing net.ipv4.vs.* needs CAP_NET_ADMIN in ipvsd's network "
                                "namespace)")


def test_a_state_directory_ipvsd_may_not_write_says_who_must_own_it(shared: Path) -> None:
    def mkdir() -> str:
        try:
            (shared / "state").mkdir()
        except OSError as e:
            return f"{e.strerror}{daemonmod._dir_hint(e, 'the state directory')}"
        return "made"

    assert as_nobody(mkdir) == (f"Permission denied (ipvsd runs as {NOBODY}, which must own the state directory: "
                                "the unit's StateDirectory= and RuntimeDirectory= give it /var/lib/ipvsd and "
                                "/run/ipvsd)")


def test_the_capabilities_are_read_from_the_kernel() -> None:
    def caps() -> str:
        return f"{privileges.effective()} {privileges.has(privileges.CAP_NET_ADMIN)} {privileges.whoami()}"

    assert as_nobody(caps) == f"0 False {NOBODY}"


@pytest.mark.parametrize("sample", ["ldirectord.cf", "keepalived.conf", "ipvsd.toml", "ha/ipvsd.toml",
                                    "ha/keepalived-lb1.conf", "seed000/ipvsd.toml", "scaleout/ipvsd.toml"])
def test_the_metrics_endpoint_is_loopback_only_unless_configured(sample: str) -> None:
    # whatever the format: ldirectord.cf and keepalived.conf have no such setting, so they get the default
    config, _ = configmod.load(str(ROOT / "etc" / sample))
    where = parse_listen(config.settings.metrics_listen)
    assert where is None or ipaddress.ip_address(where[0]).is_loopback, where
