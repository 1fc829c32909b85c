"""Fixtures for tests that run against a real IPVS kernel (inside the lab VM, or a host with IPVS)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.lab import Lab
from tests.netns import ipvsadm as _ipvsadm
from tests.netns import sh

_counter = itertools.count()


@pytest.fixture
def netns() -> Iterator[str]:
    """The name of a fresh network namespace (its own empty IPVS table), deleted after the test."""
    sh("modprobe", "-a", "ip_vs", "ip_vs_rr", "ip_vs_wrr")
    name = f"t{os.getpid()}-{next(_counter)}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """Seed 003's topology with real nginx servers; N real servers via indirect parametrize (default 2)."""
    n = getattr(request, "param", 2)
    topo = Lab(root=tmp_path, n=n).up()
    try:
        yield topo
    finally:
        topo.down()


ipvsadm = _ipvsadm
