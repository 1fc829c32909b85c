"""The daemon's garbage-collector policy: settle() freezes what exists, but never a garbage cycle."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ipvsd.shell import gcpolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_raises_the_young_threshold() -> None:
    gcpolicy.tune()
    assert gc.get_threshold()[0] == gcpolicy.YOUNG > 700


def test_settle_collects_old_cycles_then_freezes_the_living() -> None:
    gc.disable()  # only settle() may collect during this test
    try:
        dead, alive = Node(), Node()
        dead.other, alive.other = Node(), Node()
        dead.other.other = dead  # a cycle no one refers to once `dead` goes
        alive.other.other = alive
        gone = weakref.ref(dead)
        del dead
        assert gone() is not None  # reference counting alone cannot free a cycle
        gcpolicy.settle()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert alive.other is not None and alive.other.other is alive
    finally:
        gc.enable()


def test_freeze_moves_what_exists_out_of_the_collectors_sight_without_collecting() -> None:
    gc.disable()
    try:
        dead = Node()
        dead.other = dead
        gone = weakref.ref(dead)
        del dead
        gcpolicy.freeze()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert gone() is not None  # frozen: a start's few cycles wait for the first settle()
        gcpolicy.settle()
        assert gone() is None
    finally:
        gc.enable()
