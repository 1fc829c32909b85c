"""Following the configuration files through inotify, on the event loop: a file is reloaded once it is whole.

Rules
-----
Rule 1: the watch is on directories (an editor or a tool replaces a file by renaming another over it): the main
        file's directory, for the file's own name and for `conf.d`, and `conf.d` when it exists, for every name
        but hidden ones (editors' swap and lock files; the readers' patterns never match them either).
Rule 2: a file closed after writing (IN_CLOSE_WRITE) or renamed into place (IN_MOVED_TO) is whole: the reload
        is due at once, unless another file is still being written (Rule 4).
Rule 3: a file removed or renamed away, created, or its attributes changed: due once nothing else has
        happened for QUIET; an editor's new file usually follows at once, and then Rule 2 applies.
Rule 4: a file written and not closed yet (IN_MODIFY, IN_CREATE) is being written: due once the writer closes
        it (Rule 2), or once nothing has happened for OPEN_QUIET (a writer that keeps the file open).
Rule 5: `conf.d` made (or renamed into place) is watched from then on, and the reload that follows reads
        whatever it already holds (Rule 3); removed or renamed away, it is due as Rule 3 says. Either directory
        itself removed or moved: its watch ends, said once; SIGHUP and `ipvsd reload` still reload.
Rule 6: the kernel's event queue overflowed: due as Rule 3 says (the reload reads everything again).

watchfiles, used before, polled from a thread every 10 ms step and reported a change once a step had passed
without another: 21-23 ms from a rename to its report in the lab, and 40 ms of CPU a second while idle there;
inotify's descriptor read on the loop: 1.1-1.5 ms and nothing idle (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

log = logging.getLogger("ipvsd.daemon")

QUIET = 0.010  # Rule 3: seconds without an event
OPEN_QUIET = 1.0  # Rule 4: seconds without an event while a file is still open for writing
DROPINS = "conf.d"
_DIR_MASK = (F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.CREATE | F.DELETE | F.MODIFY | F.ATTRIB
             | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR)
_GONE = F.DELETE_SELF | F.MOVE_SELF | F.IGNORED


class WatchState:
    """When the reload is due, from the events seen (Rules 2-4, 6); sans I/O, time passed in."""

    def __init__(self) -> None:
        self.writing: set[str] = set()  # files written to and not closed yet (Rule 4)
        self.due: float | None = None

    def seen(self, events: Iterable[tuple[str, int]], now: float) -> float | None:
        """Take one batch of relevant events, (path, mask) in the order they came; return the new due time."""
        whole = relevant = False
        for name, mask in events:
            relevant = True
            if mask & (F.MODIFY | F.CREATE) and not mask & F.ISDIR:
                self.writing.add(name)
            if mask & (F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.DELETE):
                self.writing.discard(name)
            whole = whole or bool(mask & (F.CLOSE_WRITE | F.MOVED_TO))
        if relevant:
            self.due = now + OPEN_QUIET if self.writing else now if whole else now + QUIET
        return self.due

    def fired(self) -> None:
        """The reload due was started: what comes next is due anew."""
        self.due = None


class ConfigWatch:
    """The inotify watch of one configuration (Rules 1, 5): calls `changed` on the loop when a reload is due."""

    def __init__(self, config_path: str, changed: Callable[[], None]) -> None:
        self.path = Path(config_path).resolve()
        self.changed = changed
        self.state = WatchState()
        self.inotify: INotify | None = None
        self.dirs: dict[int, Path] = {}  # watch descriptor -> directory
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Watch the directories and read their events on the running loop; OSError when inotify refuses."""
        self.loop = asyncio.get_running_loop()
        self.inotify = INotify(nonblocking=True)
        try:
            self._add(self.path.parent)
            if (self.path.parent / DROPINS).is_dir():
                self._add(self.path.parent / DROPINS)
        except OSError:
            self.close()
            raise
        self.loop.add_reader(self.inotify.fileno(), self._readable)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inotify is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.inotify.fileno())
            self.inotify.close()
            self.inotify = None
        self.dirs.clear()

    def _add(self, directory: Path) -> None:
        assert self.inotify is not None
        self.dirs[self.inotify.add_watch(directory, _DIR_MASK)] = directory

    def _readable(self) -> None:
        assert self.inotify is not None and self.loop is not None
        try:
            events = self.inotify.read(timeout=0)
        except OSError as e:
            log.error("cannot read the config files' changes (%s): no longer following them; SIGHUP and "
                      "`ipvsd reload` still reload", e)
            self.close()
            return
        relevant: list[tuple[str, int]] = []
        for ev in events:
            if ev.mask & F.Q_OVERFLOW:
                relevant.append(("", F.Q_OVERFLOW))  # Rule 6
                continue
            directory = self.dirs.get(ev.wd)
            if directory is None:
                continue
            if ev.mask & _GONE:
                if ev.mask & F.IGNORED:
                    del self.dirs[ev.wd]
                if directory == self.path.parent and ev.mask & (F.DELETE_SELF | F.MOVE_SELF):
                    log.warning("the config file's directory %s was %s: its changes are no longer followed; SIGHUP "
                                "and `ipvsd reload` still reload", directory,
                                "removed" if ev.mask & F.DELETE_SELF else "moved")
                    relevant.append((str(directory), ev.mask))
                continue
            if directory == self.path.parent:
                if ev.name == DROPINS and ev.mask & F.ISDIR:
                    if ev.mask & (F.CREATE | F.MOVED_TO):  # Rule 5
                        try:
                            self._add(directory / DROPINS)
                        except OSError as e:
                            log.error("cannot follow %s: %s", directory / DROPINS, e)
                    relevant.append((str(directory / DROPINS), F.ATTRIB))  # due as Rule 3
                    continue
                if ev.name != self.path.name:
                    continue
            elif ev.name.startswith("."):
                continue
            relevant.append((str(directory / ev.name), ev.mask))
        if not relevant:
            return
        due = self.state.seen(relevant, self.loop.time())
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if due is None else self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.state.fired()
        self.changed()
