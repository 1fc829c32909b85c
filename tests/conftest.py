"""Test-suite wiring: tests under tests/kernel/ need IPVS; decide whether they run, skip, or fail loudly."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import ipvs_available

KERNEL_DIR = Path(__file__).parent / "kernel"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if KERNEL_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.kernel)
    kernel_items = [i for i in items if i.get_closest_marker("kernel")]
    if not kernel_items or ipvs_available():
        return
    # scripts/test sets IPVSD_KERNEL_TESTS=1 for its kernel phase: there a missing IPVS is an error,
    # never a quiet skip that would count as a pass.
    if os.environ.get("IPVSD_KERNEL_TESTS") == "1":
        raise pytest.UsageError("kernel tests were asked for, but this kernel has no IPVS (or we are not root)")
    skip = pytest.mark.skip(reason="needs IPVS and root: run scripts/test, which boots the lab VM")
    for item in kernel_items:
        item.add_marker(skip)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory other uids can reach, owned by root (pytest's tmp_path is under a mode-0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="ipvsd-shared-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
