"""`ipvsd convert`: write the native TOML of any supported configuration."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import tempfile

from ipvsd.commands import add_config_argument, error
from ipvsd.config import FORMATS, ConfigErrors, load, sniff
from ipvsd.config.to_toml import to_toml
from ipvsd.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "configuration to convert")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: guessed from the file)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")


def run(args: argparse.Namespace) -> int:
    try:
        fmt = args.format or sniff(args.config)
        config, warnings = load(args.config, fmt)
    except ConfigErrors as e:
        for err in e.errors:
            error("convert", err)
        if e.total > len(e.errors):
            error("convert", f"... and {e.total - len(e.errors)} more error(s) not shown")
        return 1
    except ConfigError as e:
        error("convert", e)
        return 1
    for w in warnings:
        error("convert", w)
    header = [f"ipvsd configuration converted from {os.path.basename(args.config)} ({fmt} format)"]
    header += [f"{w.level}: line {w.line}: {w.key}: {w.message}" for w in warnings if w.line is not None]
    text = to_toml(config, header)
    if args.output:
        try:
            write_atomically(args.output, text)
        except OSError as e:
            error("convert", f"{args.output}: cannot write: {e.strerror}")
            return 1
    else:
        sys.stdout.write(text)
    return 0


def write_atomically(path: str, text: str) -> None:
    """Write `path` whole or not at all: a temporary file beside it, renamed over it; nothing is left behind
    when any step fails."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a config other tools read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
