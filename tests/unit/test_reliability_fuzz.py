"""Reliability scenario 7 (fuzzed input), bounded: a few hundred mutated configurations per format and random
control-socket requests end with no traceback, hang or unlocated error; and the harness does see each of those.

The full run is `python -m scripts.reliability_lab.fuzz` (10,000 per format); IPVSD_FUZZ_SEED picks other inputs here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ipvsd.config import native
from scripts.reliability_lab import fuzz

SEED = int(os.environ.get("IPVSD_FUZZ_SEED", "0"))


def test_mutated_configurations_and_control_requests_have_no_bad_outcome(tmp_path: Path) -> None:
    result = fuzz.run(150, 300, SEED, 120, examples_dir=tmp_path)
    assert result["complete"], result
    for fmt, counts in result["configs"]["per_format"].items():
        assert counts["cases"] == 150, fmt
        assert counts["accepted"] > 0 and counts["located"] > 0, (fmt, counts)  # the mutations reach both sides
    assert result["control"]["answered"] == 300
    assert result["bad"] == 0, (result["configs"]["examples"], result["control"]["examples"])


def _raises(path: str) -> None:
    raise KeyError("boom")


def _sleeps(path: str) -> None:
    time.sleep(60)


@pytest.mark.parametrize(("reader", "outcome"), [(_raises, "traceback"), (_sleeps, "hang")])
def test_the_harness_counts_and_keeps_a_traceback_and_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             reader: object, outcome: str) -> None:
    # the workers are forked after the patch: the native reader fails in them as a defect would
    monkeypatch.setattr(native, "reading", reader)
    monkeypatch.setattr(fuzz, "HANG_S", 0.5)
    result = fuzz.fuzz_configs(2, SEED, time.monotonic() + 60, tmp_path)
    assert result["per_format"]["native"][outcome] == 2
    assert result["per_format"]["ldirectord"]["traceback"] == result["per_format"]["ldirectord"]["hang"] == 0
    [kept, _] = result["examples"]["native"][outcome]
    assert Path(kept["file"]).read_bytes(), "the input is saved to reproduce the defect"
    if outcome == "traceback":
        assert "KeyError: 'boom'" in kept["detail"]
