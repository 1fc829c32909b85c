"""The open-file limit: raised up to the hard limit, never lowered, and a too-low hard limit reported."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from ipvsd.config.schema import HttpCheck, TcpCheck
from ipvsd.shell import fdlimit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = saved[1]
    if hard != resource.RLIM_INFINITY and hard < 64:
        pytest.skip("hard open-file limit too low to test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, hard))
    yield 32, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def test_soft_limit_is_raised_to_what_the_probes_need(limits: tuple[int, int]) -> None:
    assert fdlimit.ensure(48) == 48
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (48, limits[1])
    assert fdlimit.ensure(40) == 48  # never lowered


def test_a_hard_limit_too_low_is_reported(limits: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    hard = limits[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit here")
    with caplog.at_level(logging.WARNING, logger="ipvsd.shell.fdlimit"):
        assert fdlimit.ensure(hard + 1) == hard
    assert "LimitNOFILE" in caplog.text


def test_needed_counts_what_each_check_holds_between_probes() -> None:
    plain = HttpCheck(type="http", sentinel=False)
    held = HttpCheck(type="http", sentinel=True, reuse_connection=True)
    tcp = TcpCheck(type="tcp", sentinel=True)
    assert fdlimit.needed([plain] * 10 + [held] * 100 + [tcp] * 5, 256) == 256 + 200 + 5 + fdlimit.HEADROOM
