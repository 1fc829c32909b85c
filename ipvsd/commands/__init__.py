"""Subcommands of the `ipvsd` command line, one module each, and the options and messages they share."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_CONFIG = "/etc/ipvsd/ipvsd.toml"
"""The configuration every subcommand reads when not given `-c` (the unit file's, the README's install)."""

FORMAT_HELP = "configuration format: native, ldirectord or keepalived (default: guessed from the name and content)"


def add_config_argument(parser: argparse.ArgumentParser, what: str = "configuration file") -> None:
    """`-c/--config FILE`, defaulting to DEFAULT_CONFIG for every subcommand that reads a configuration."""
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"{what} (default {DEFAULT_CONFIG})")


def error(command: str, message: object) -> None:
    """Print one error or warning line with the prefix every subcommand uses: `ipvsd COMMAND: `."""
    print(f"ipvsd {command}: {message}", file=sys.stderr)


@contextmanager
def warnings_to_stderr(command: str) -> Iterator[None]:
    """Route the library's warnings (a name that does not resolve...) to stderr with the command's prefix.

    Undone on exit: the command line is also called in-process (tests), where the loggers are shared.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"ipvsd {command}: %(message)s"))
    handler.setLevel(logging.WARNING)
    root = logging.getLogger("ipvsd")
    saved = root.handlers[:], root.level, root.propagate
    root.handlers[:] = [handler]
    root.setLevel(min(root.getEffectiveLevel(), logging.WARNING))
    root.propagate = False
    try:
        yield
    finally:
        root.handlers[:], root.propagate = saved[0], saved[2]
        root.setLevel(saved[1])


def client_config(args: argparse.Namespace) -> None:
    """Give a client command without `-c` the default configuration's control_socket when it is live.

    A daemon started by the unit file (`--state-dir /var/lib/ipvsd`) listens elsewhere than the default
    configuration's `control_socket`, so that socket is used only when it exists; otherwise the client keeps the
    search of ipvsd.shell.control.client_path (/run/ipvsd/control.sock, then /var/lib/ipvsd/control.sock).
    """
    if args.config is not None or args.socket or args.state_dir or not os.path.exists(DEFAULT_CONFIG):
        return
    from ipvsd import config as configmod
    from ipvsd.errors import ConfigError

    try:
        config, _ = configmod.load(DEFAULT_CONFIG)
    except (ConfigError, OSError):  # the daemon may run with another file: fall back to the usual paths
        return
    if os.path.exists(config.settings.control_socket):
        args.config = DEFAULT_CONFIG
