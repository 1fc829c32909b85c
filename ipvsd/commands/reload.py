"""`ipvsd reload`: ask the daemon to reload its configuration and say whether it took it."""

from __future__ import annotations

import argparse

from ipvsd.commands import client_config
from ipvsd.shell.control import add_socket_arguments, call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)


def run(args: argparse.Namespace) -> int:
    client_config(args)
    answer = call(args, "reload")
    if answer is None:
        return 1
    print({"ok": "reloaded: new configuration", "unchanged": "reloaded: configuration unchanged"}
          .get(answer.get("outcome", ""), "reloaded"))
    return 0
