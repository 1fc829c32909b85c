"""Tests of the state file: round trip, missing file, corrupt file, atomic replacement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ipvsd.core.decide import Memory as State
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.errors import IpvsdError
from ipvsd.model import DestKey, Proto, ServiceKey
from ipvsd.shell import statefile as state

WEB = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
MARK6 = ServiceKey.mark(7, af=10)
V6 = ServiceKey.inet(Proto.UDP, "2001:db8::1", 53)
RS1 = DestKey.of("10.0.1.1", 80)
RS6 = DestKey.of("2001:db8::10", 53)

FULL = State(
    owned=frozenset({WEB, MARK6, V6}),
    drains={(WEB, RS1): 1_700_000_000.5, (V6, RS6): 1_700_000_100.0},
    maintenance=frozenset({MaintenanceKey("10.0.1.2"), MaintenanceKey("10.0.1.1", 80, WEB),
                           MaintenanceKey("2001:db8::10", 53)}),
    quorum={WEB: True, V6: False},
    ramps={(WEB, RS1): 1_700_000_200.25},
)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, FULL)
    assert state.load(path) == FULL


def test_missing_file_is_empty_state(tmp_path: Path) -> None:
    assert state.load(tmp_path / "absent.json") == State()


def test_save_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, FULL)
    inode = path.stat().st_ino
    state.save(path, State(owned=frozenset({WEB})))
    assert state.load(path) == State(owned=frozenset({WEB}))
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert os.listdir(tmp_path) == ["state.json"]


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    state.save(path, FULL)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        state.save(path, State())
    monkeypatch.undo()
    assert state.load(path) == FULL
    assert os.listdir(tmp_path) == ["state.json"]


@pytest.mark.parametrize("text", [
    "not json",
    "[]",
    '{"version": 99}',
    '{"version": 1, "owned": [{"af": "2"}]}',
    '{"version": 1, "drains": [{"service": {"af": 2}, "dest": {"af": 2, "addr": "10.0.0.1", "port": 80}}]}',
    '{"version": 1, "drains": [{"service": {"af": 2}, "dest": {"af": 2, "addr": "x", "port": 1}, "since": "x"}]}',
    '{"version": 1, "maintenance": [{"port": 80}]}',
])
def test_corrupt_file_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(IpvsdError, match=r"state\.json"):
        state.load(path)


def test_file_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, State(owned=frozenset({WEB})))
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    assert doc["owned"] == [{"af": 2, "protocol": 6, "addr": "10.0.0.1", "port": 80, "fwmark": 0}]
