"""The reliability suite's quick slice on a real kernel (scripts/reliability --quick runs more of the same): hand
edits, hostile reals, reloads and restarts under traffic, one daemon and one topology for all of them; each test
asserts its scenario's target from the report (nothing lost)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator

import pytest

from scripts.reliability_lab import handedits, hostile, reloads, report, restarts
from scripts.reliability_lab.rig import Rig, base_layout
from tests.kernel.lab import Lab

pytestmark = pytest.mark.kernel


def say(msg: str) -> None:
    print(f"reliability: {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("reliability")
    lab = Lab(root=root / "lab", n=4).up()
    r = Rig(lab, root / "ipvsd", base_layout(lab))
    try:
        r.write(r.layout)
        t0 = r.start()
        assert r.wait_ready(t0) is not None, f"ipvsd never said READY=1:\n{r.log_path.read_text()[-4000:]}"
        yield r
    finally:
        r.close()
        lab.down()


def verdict(name: str, result: dict[str, object], rig: Rig) -> None:
    rows = report.rows({name: result})
    log = rig.log_path.read_text()[-6000:]
    assert rows and all(ok for *_, ok in rows), f"{rows}\n{result}\n--- ipvsd's log:\n{log}"
    rig.write(base_layout(rig.lab))


def test_hand_edits_of_owned_entries_are_repaired_and_foreign_ones_left_alone(rig: Rig) -> None:
    verdict("handedits", handedits.run(rig, say), rig)


def test_hostile_reals_go_out_within_their_timeout_and_nothing_else_moves(rig: Rig) -> None:
    verdict("hostile", hostile.run(rig, say, hold=8.0), rig)


def test_valid_edits_apply_exactly_and_invalid_ones_are_rejected_where_they_are(rig: Rig) -> None:
    verdict("reloads", reloads.run(rig, say, edits=6, rng=random.Random(5), deadline=time.monotonic() + 600), rig)


def test_restarts_under_traffic_lose_nothing(rig: Rig) -> None:
    verdict("restarts", restarts.run(rig, say, kills=2, terms=1, rng=random.Random(6),
                                     deadline=time.monotonic() + 600), rig)
