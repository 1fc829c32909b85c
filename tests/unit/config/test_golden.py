"""Golden tests: each fixture config and etc/ sample normalizes to its reviewed expected JSON.

Regenerate after an intended change with `.venv/bin/python -m tests.unit.config.cases`, then read the diff.
"""

from __future__ import annotations

import json

import pytest

from tests.unit.config.cases import cases, normalized

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_normalizes_to_its_golden(name: str) -> None:
    src, expected = CASES[name]
    assert expected.exists(), f"no golden for {name}; run python -m tests.unit.config.cases"
    assert normalized(src) == json.loads(expected.read_text(encoding="utf-8"))


def test_every_seed_config_is_a_case() -> None:
    names = set(CASES)
    assert {"seed003_ldirectord.cf", "seed003_keepalived_checker.conf", "seed003_keepalived_master.conf",
            "seed003_keepalived_backup.conf", "seed000_keepalived.conf"} <= names
