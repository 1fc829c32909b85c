"""The `ipvsd` command line: one subcommand per module in `ipvsd.commands`, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Protocol

from ipvsd import __version__

# name -> (module under ipvsd.commands, one-line help). Modules are imported lazily so that `ipvsd list`
# does not pay for httpx or prometheus-client, and a broken optional module cannot break the others.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the reconciler daemon"),
    "list": ("list", "list the IPVS table, byte-identical to ipvsadm -L"),
    "check": ("check", "validate a configuration without touching the kernel"),
    "convert": ("convert", "write the native TOML of any supported configuration"),
    "probe": ("probe", "run every configured health check once"),
    "plan": ("plan", "print the operations a run would apply now"),
    "status": ("status", "show the daemon's view of every real server"),
    "drain": ("drain", "put a real server in maintenance"),
    "undrain": ("undrain", "take a real server out of maintenance"),
    "reload": ("reload", "ask the daemon to reload its configuration"),
    "events": ("events", "stream the daemon's events as JSON lines"),
    "genhash": ("genhash", "print the MD5 of a page, for an http check's digest (keepalived genhash)"),
}


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> Command | None:
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(f"ipvsd.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"ipvsd.commands.{module}":
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `list` mirrors ipvsadm's own option parser and exit codes, so it takes its arguments raw.
    if argv and argv[0] == "list":
        cmd = _load("list")
        if cmd is not None:
            return cmd.run(argparse.Namespace(argv=argv[1:]))
    parser = argparse.ArgumentParser(prog="ipvsd", description="IPVS control-plane daemon")
    parser.add_argument("--version", action="version", version=f"ipvsd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    available: dict[str, Command] = {}
    for name, (_, help_text) in COMMANDS.items():
        cmd = _load(name) if (not argv or argv[0] == name or argv[0] in ("-h", "--help")) else None
        if cmd is None and argv and argv[0] == name:
            parser.error(f"command {name!r} is not available in this build")
        if cmd is not None:
            available[name] = cmd
            cmd.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        return available[args.command].run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
