"""A service's quorum lost and regained between passes: said once each time, by the reconciler."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ipvsd.config import native
from ipvsd.core.probes import RealHealth
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import DestKey, Proto, ServiceKey
from ipvsd.shell.reconciler import Reconciler

CONFIG = """
[[services]]
address = "10.0.0.1"
port = 80
scheduler = "rr"
fallback = { address = "10.9.0.1" }
[[services.checks]]
type = "tcp"
[[services.reals]]
address = "10.1.0.1"
[[services]]
address = "10.0.0.2"
port = 80
scheduler = "rr"
[[services.reals]]
address = "10.1.0.2"
"""
SVC = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
REAL = (SVC, DestKey.of("10.1.0.1", 80))


async def test_quorum_lost_and_regained_are_said_once_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ipvsd.toml"
    path.write_text(CONFIG)
    config = native.read(str(path))[0]
    r = Reconciler(FakeKernel(), tmp_path / "state.json")
    up, down = RealHealth(up=True, settled=True), RealHealth(up=False, settled=True)
    with caplog.at_level(logging.WARNING, logger="ipvsd.reconcile"):
        for health in (up, up, down, down, up, up):
            await r.reconcile(config, {REAL: health})
    said = [rec.getMessage() for rec in caplog.records if "quorum" in rec.getMessage()]
    assert said == ["TCP 10.0.0.1:80 quorum lost: fallback in", "TCP 10.0.0.1:80 quorum regained: fallback out"]
