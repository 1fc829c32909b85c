"""`convert` then parse gives the same model: a property over generated Configs, and every golden fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from ipvsd.config import load, native
from ipvsd.config.schema import Config
from ipvsd.config.to_toml import to_toml
from tests.unit.config.cases import cases
from tests.unit.config.strategies import configs


def _reparse(config: Config, directory: Path) -> Config:
    f = directory / "converted.toml"
    f.write_text(to_toml(config, ["generated"]), encoding="utf-8")
    reparsed, _ = native.read(str(f))
    return reparsed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs)
def test_convert_then_parse_is_identity(config: Config, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert _reparse(config, tmp_path_factory.mktemp("rt")) == config


@pytest.mark.parametrize("name", sorted(cases()))
def test_every_fixture_survives_convert(name: str, tmp_path: Path) -> None:
    config, _ = load(str(cases()[name][0]))
    assert _reparse(config, tmp_path) == config
