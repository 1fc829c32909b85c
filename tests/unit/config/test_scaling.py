"""Loading is linear in the file: four times the services execute at most about four times the Python lines.

Counted with a line tracer (deterministic, and it sees a quadratic loop inside one function, which counting
calls would not), never timed: the load-time figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from ipvsd.config import load
from tests.unit.config.bigconfig import GENERATORS

NAMES = {"keepalived": "keepalived.conf", "ldirectord": "ldirectord.cf", "native": "ipvsd.toml"}


def lines_executed(path: Path) -> int:
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += event == "line"
        return trace

    sys.settrace(trace)
    try:
        config, _ = load(str(path))
    finally:
        sys.settrace(None)
    assert config.services
    return count


@pytest.mark.parametrize("fmt", sorted(GENERATORS))
def test_load_work_grows_linearly(tmp_path: Path, fmt: str) -> None:
    files = []
    for n in (40, 160, 640):
        f = tmp_path / f"{n}" / NAMES[fmt]
        f.parent.mkdir()
        f.write_text(GENERATORS[fmt](n))
        files.append(f)
    load(str(files[0]))  # first-use costs (regex compiles, caches, imports) are not per service
    counts = [lines_executed(f) for f in files]
    # Each step adds 4x the services of the step before: linear work adds 4x the lines, a quadratic term 16x.
    # Comparing increments cancels the fixed cost that would hide a quadratic term in a plain ratio.
    growth = (counts[2] - counts[1]) / (counts[1] - counts[0])
    assert growth < 4.4, f"{fmt}: {counts} lines for 40, 160 and 640 services (increments x{growth:.2f})"


@pytest.mark.parametrize("fmt", sorted(GENERATORS))
def test_load_leaves_nothing_for_the_cyclic_collector(tmp_path: Path, fmt: str) -> None:
    # load() pauses the collector; a reference cycle left behind (a reader kept alive by a function it hands
    # out) would hold the whole parse until the collector's next pass, a pass over millions of objects.
    f = tmp_path / NAMES[fmt]
    f.write_text(GENERATORS[fmt](40))
    load(str(f))  # first-use caches are not garbage
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        config, _ = load(str(f))
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
    assert config.services
