"""Writes of the state directory that may fail (a full disk, a read-only mount): said once, retried, recovered.

The daemon's files (state.json, maintenance.json) are its memory across restarts, not what it serves: a write
that fails must not stop the passes, or a full disk would freeze the table while reals go down. What could not
be written stays in memory, the write is tried again at the next pass, and its recovery is said in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("ipvsd.state")


def strerror(e: OSError) -> str:
    """An OSError in the operator's words: the errno's text (and name), not Python's repr."""
    return e.strerror or str(e)


class Writer:
    """One file's writes: `write` reports a failure once per distinct error and remembers that one is due."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # what the file keeps, for the log line ("ownership, drains and ramps")
        self.error: str | None = None  # the failure last said, while it lasts
        self.pending = False  # the file is behind memory: write it again at the next chance

    def write(self, save: Callable[[], None]) -> bool:
        """Run `save`; on OSError keep going (False). True when the file is now up to date."""
        try:
            save()
        except OSError as e:
            self.pending = True
            text = f"cannot write {self.path}: {strerror(e)}"
            if text != self.error:
                log.error("%s; %s kept in memory only (lost at a restart), written again at each pass", text,
                          self.what)
            else:
                log.debug("%s (again)", text)
            self.error = text
            return False
        self.pending = False
        if self.error is not None:
            log.info("%s written again (it could not be: %s)", self.path, self.error.rpartition(": ")[2])
            self.error = None
        return True
