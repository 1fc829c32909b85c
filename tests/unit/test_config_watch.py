"""The config watch: when a change makes a reload due (rules, time passed in), and the inotify watch itself."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from inotify_simple import flags as F

from ipvsd.shell.config_watch import DROPINS, OPEN_QUIET, QUIET, ConfigWatch, WatchState

A, B = "/etc/ipvsd/ipvsd.toml", "/etc/ipvsd/conf.d/a.toml"


@pytest.mark.parametrize("events, due", [
    ([(A, F.MOVED_TO)], 0.0),  # Rule 2: renamed into place
    ([(A, F.MODIFY), (A, F.CLOSE_WRITE)], 0.0),  # Rule 2: written and closed
    # an editor that saves by rename: the old file moved away, the new one written and closed, then its mode
    ([(A, F.MOVED_FROM), (A, F.CREATE), (A, F.MODIFY), (A, F.CLOSE_WRITE), (A, F.ATTRIB)], 0.0),
    ([(A, F.DELETE)], QUIET),  # Rule 3
    ([(A, F.ATTRIB)], QUIET),
    ([(A, F.MODIFY)], OPEN_QUIET),  # Rule 4: still open for writing
    ([(B, F.CREATE)], OPEN_QUIET),
    ([(B, F.MODIFY), (A, F.MOVED_TO)], OPEN_QUIET),  # one file whole, another still being written
    ([(B, F.MODIFY), (B, F.DELETE)], QUIET),  # removed while written: nothing left to wait for
    ([("", F.Q_OVERFLOW)], QUIET),  # Rule 6
])
def test_a_reload_is_due_at_once_for_a_whole_file_and_after_a_quiet_otherwise(
        events: list[tuple[str, int]], due: float) -> None:
    assert WatchState().seen(events, 100.0) == pytest.approx(100.0 + due)


def test_a_file_written_slowly_is_due_once_its_writer_closes_it() -> None:
    state = WatchState()
    assert state.seen([(A, F.MODIFY)], 1.0) == 1.0 + OPEN_QUIET
    assert state.seen([(A, F.MODIFY)], 1.5) == 1.5 + OPEN_QUIET  # each write starts the wait again
    assert state.seen([(A, F.CLOSE_WRITE)], 1.6) == 1.6
    state.fired()
    assert state.due is None
    assert state.seen([], 2.0) is None  # nothing relevant: nothing due


class Seen:
    """Counts the watch's calls, for a test to wait on."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()

    async def next(self, what: str, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None
        self.event.clear()


async def settled(cond: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "ipvsd.toml").write_text("# first\n")
    return d


async def test_a_rename_into_place_and_a_closed_write_are_reported_at_once(config_dir: Path) -> None:
    seen = Seen()
    watch = ConfigWatch(str(config_dir / "ipvsd.toml"), seen)
    watch.start()
    try:
        (config_dir / "ipvsd.toml.new").write_text("# second\n")
        os.rename(config_dir / "ipvsd.toml.new", config_dir / "ipvsd.toml")
        await seen.next("the rename")
        (config_dir / "ipvsd.toml").write_text("# third\n")
        await seen.next("the write in place")
        (config_dir / "other.toml").write_text("# not ours\n")
        (config_dir / "ipvsd.toml").write_text("# fourth\n")
        await seen.next("the second write in place")
        assert seen.calls == 3  # the other file in the directory made no call of its own
    finally:
        watch.close()


async def test_a_file_held_open_for_writing_is_not_reported_until_it_is_closed(config_dir: Path) -> None:
    """A half-written file is never reloaded while it is written in bursts (watchfiles reloaded it after 10 ms
    without a write)."""
    seen = Seen()
    watch = ConfigWatch(str(config_dir / "ipvsd.toml"), seen)
    watch.start()
    try:
        with open(config_dir / "ipvsd.toml", "w") as f:
            f.write("# half\n")
            f.flush()
            await settled(lambda: watch.state.writing, "the write seen")
            loop = asyncio.get_running_loop()
            assert watch.state.due is not None and watch.state.due > loop.time() + OPEN_QUIET - 0.5
            assert seen.calls == 0
            f.write("# whole\n")
        await seen.next("the close")
        assert seen.calls == 1 and not watch.state.writing
    finally:
        watch.close()


async def test_drop_ins_are_followed_also_when_their_directory_comes_later_and_hidden_files_are_not(
        config_dir: Path) -> None:
    seen = Seen()
    watch = ConfigWatch(str(config_dir / "ipvsd.toml"), seen)
    watch.start()
    try:
        (config_dir / DROPINS).mkdir()
        await seen.next("conf.d made")  # its reload reads whatever it holds by then
        await settled(lambda: len(watch.dirs) == 2, "conf.d watched")
        with open(config_dir / DROPINS / ".a.toml.swp", "w") as swap:  # an editor's, open while it edits
            swap.write("swap")
            swap.flush()
            (config_dir / DROPINS / "a.toml").write_text("# drop-in\n")
            await seen.next("the drop-in written")
            assert seen.calls == 2 and not watch.state.writing  # the swap file is not waited for
        for f in (config_dir / DROPINS).iterdir():
            f.unlink()
        (config_dir / DROPINS).rmdir()
        await seen.next("conf.d removed")
        await settled(lambda: len(watch.dirs) == 1, "conf.d's watch gone")
    finally:
        watch.close()


async def test_the_directory_removed_is_said_and_reported(config_dir: Path, caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    seen = Seen()
    watch = ConfigWatch(str(config_dir / "ipvsd.toml"), seen)
    watch.start()
    try:
        with caplog.at_level(logging.WARNING, "ipvsd.daemon"):
            (config_dir / "ipvsd.toml").unlink()
            config_dir.rmdir()
            await seen.next("the directory removed")
        assert "was removed: its changes are no longer followed" in caplog.text
    finally:
        watch.close()


async def test_a_watch_inotify_refuses_raises_and_leaves_nothing_open(tmp_path: Path) -> None:
    watch = ConfigWatch(str(tmp_path / "missing" / "ipvsd.toml"), lambda: None)
    with pytest.raises(OSError):
        watch.start()
    assert watch.inotify is None
