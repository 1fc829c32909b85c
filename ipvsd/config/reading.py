"""What reading a configuration gave: the Config and its warnings, and what the next reading may reuse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipvsd.config._report import ConfigWarning
from ipvsd.config.schema import Config, VirtualService


@dataclass(frozen=True, eq=False)
class SourceFile:
    """One native file as it was read: what each of its `[[services]]` became, and its text cut there.

    `services[i]` is the validated service the i-th `[[services]]` gave, `origins[i]` the source real of each of
    its reals (an address range makes several of one). `cut`, once known, is the text before the first
    `[[services]]` and each service's piece of text (`chunks[i]` runs from the i-th `[[services]]` line to the
    next one, or the end): a file whose every table header after the first `[[services]]` belongs to a service,
    and which has no multi-line string, can be cut so, and each piece is then a TOML document of its own that
    parses to exactly its part of the whole (`ipvsd.config.native._cut`).
    """

    path: str
    lines: Any  # ipvsd.config.native's line map of `text`, built when a message needs a line
    services: tuple[VirtualService, ...]
    origins: tuple[tuple[int, ...], ...]
    cut: tuple[str, tuple[str, ...]] | None = None
    """(head, chunks) when the file can be cut: the reading parses each shape of service once from them
    (`ipvsd.config._alike`), a reread finds the services that changed."""

    @property
    def text(self) -> str:
        return str(self.lines.text)


@dataclass(frozen=True, eq=False)
class Reading:
    """A reading's result. `files` (native format only; None when nothing can be reused) lets the next reading of
    the same file parse and validate only the services whose text changed (`ipvsd.config.native.reread`)."""

    config: Config
    warnings: list[ConfigWarning]
    files: tuple[SourceFile, ...] | None = None
    top: dict[str, Any] = field(default_factory=dict)  # the main file's top level without [[services]], as read
    timing: dict[str, Any] = field(default_factory=dict)  # [check_defaults]' timing keys, given to every check
    include: tuple[str, ...] = ()  # the drop-ins' patterns
