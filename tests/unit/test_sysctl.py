"""net.ipv4.vs.* sysctls on a directory that stands for /proc/sys/net/ipv4/vs: set, drift, errors said once."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from ipvsd.shell.sysctl import Sysctls, proc_text


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "vs"
    root.mkdir()
    for name, value in {"sloppy_tcp": "0", "sync_threshold": "3\t50", "conntrack": "0"}.items():
        (root / name).write_text(value + "\n")
    return root


def test_proc_text() -> None:
    assert proc_text((3, 50)) == "3 50"
    assert proc_text(1) == "1"
    assert proc_text(True) == "1"
    assert proc_text("0-3") == "0-3"


def test_only_values_that_differ_are_written_and_each_change_is_logged(proc: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    before = (proc / "sync_threshold").stat().st_mtime_ns
    s = Sysctls(proc)
    with caplog.at_level(logging.INFO):
        changes = s.apply({"sloppy_tcp": 1, "sync_threshold": (3, 50)})
    assert [(c.name, c.action, c.old, c.new) for c in changes] == [("sloppy_tcp", "set", "0", "1")]
    assert (proc / "sloppy_tcp").read_text() == "1\n"
    assert (proc / "sync_threshold").stat().st_mtime_ns == before  # "3\t50" already is (3, 50): not written
    assert [r.getMessage() for r in caplog.records] == ["net.ipv4.vs.sloppy_tcp: 0 -> 1"]
    assert [(r.name, r.state) for r in s.status()] == [("sloppy_tcp", "ok"), ("sync_threshold", "ok")]


def test_drift_is_reported_once_per_change_and_not_rewritten_until_the_next_apply(
        proc: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Sysctls(proc)
    s.apply({"sloppy_tcp": 1})
    assert s.check() == []
    (proc / "sloppy_tcp").write_text("0\n")  # sysctl -w by hand
    drift = s.check()
    assert [(c.name, c.action, c.new) for c in drift] == [("sloppy_tcp", "drift", "0")]
    assert s.check() == []  # said once
    assert (proc / "sloppy_tcp").read_text() == "0\n"  # and left alone
    assert [r.state for r in s.status()] == ["drift"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["net.ipv4.vs.sloppy_tcp drifted: 0, ipvsd set 1; left as it is until the next reload "
                        "or restart"]
    (proc / "sloppy_tcp").write_text("2\n")  # another change is news again
    assert [c.new for c in s.check()] == ["2"]
    changes = s.apply({"sloppy_tcp": 1})  # the reload
    assert [(c.action, c.old, c.new) for c in changes] == [("set", "2", "1")]
    assert [r.state for r in s.status()] == ["ok"]


def test_a_read_only_proc_sys_is_said_once_and_the_daemon_goes_on(proc: Path, caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ProtectKernelTunables without ReadWritePaths: every write fails with EROFS (root here ignores modes,
    so the failure is injected at the one call that writes)."""
    from ipvsd.shell import sysctl

    def read_only(path: Path, text: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(sysctl, "_write", read_only)
    s = Sysctls(proc)
    for _ in range(3):  # start and two reloads
        changes = s.apply({"conntrack": 1, "sloppy_tcp": 1})
        assert s.check() == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert errors[0] == ("cannot set net.ipv4.vs.conntrack = 1: /proc/sys is read-only here (a sandbox: see "
                         "ReadWritePaths= in the systemd unit); it keeps its value (0)")
    assert changes == []
    assert {r.name: (r.state, r.current) for r in s.status()} == {"conntrack": ("error", "0"),
                                                                 "sloppy_tcp": ("error", "0")}


def test_a_missing_knob_is_said_once(proc: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Sysctls(proc)
    for _ in range(3):
        changes = s.apply({"lblc_expiration": 60})
        s.check()
    assert changes == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["cannot set net.ipv4.vs.lblc_expiration = 60: the kernel has no such setting (too old, or "
                      "its module is not loaded); it keeps its value"]


def test_names_no_longer_configured_are_forgotten(proc: Path) -> None:
    s = Sysctls(proc)
    s.apply({"sloppy_tcp": 1})
    s.apply({})
    (proc / "sloppy_tcp").write_text("0\n")
    assert s.check() == [] and s.status() == ()
