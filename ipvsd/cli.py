"""The `ipvsd` command line: one subcommand per module in `ipvsd.commands`, imported only when used."""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Iterable
from typing import NoReturn, Protocol

from ipvsd import __version__

# name -> (module under ipvsd.commands, one-line help). Modules are imported lazily so that `ipvsd list`
# does not pay for pydantic or prometheus-client, and a broken optional module cannot break the others.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the reconciler daemon"),
    "list": ("list", "list the IPVS table, byte-identical to ipvsadm -L"),
    "check": ("check", "validate a configuration without touching the kernel"),
    "convert": ("convert", "write the native TOML of any supported configuration"),
    "manpage": ("manpage", "print or install the manual pages ipvsd(8) and ipvsd.toml(5)"),
    "probe": ("probe", "run every configured health check once"),
    "plan": ("plan", "print the operations a run would apply now"),
    "status": ("status", "show the daemon's view of every real server"),
    "drain": ("drain", "put a real server in maintenance"),
    "undrain": ("undrain", "take a real server out of maintenance"),
    "reload": ("reload", "ask the daemon to reload its configuration"),
    "events": ("events", "stream the daemon's events as JSON lines"),
    "genhash": ("genhash", "print the MD5 of a page, for an http check's digest (keepalived genhash)"),
}
HELP = ("-h", "--help")


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


class Parser(argparse.ArgumentParser):
    """argparse with ipvsd's one error prefix: `ipvsd CMD: message` (argparse's own is `PROG: error: ...`)."""

    children: dict[str, Parser]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: {message}\n")


def _load(name: str) -> Command | None:
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(f"ipvsd.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"ipvsd.commands.{module}":
            return None
        raise


def build_parser(load: Iterable[str] = ()) -> tuple[Parser, dict[str, Command]]:
    """The whole parser: every subcommand is listed, and those in `load` get their options.

    Also the one source of the ipvsd(8) manual page (`ipvsd.manpages`), so `--help` and the page cannot differ.
    """
    parser = Parser(prog="ipvsd", description="IPVS control-plane daemon: health checks in, kernel IPVS table out.",
                    epilog="Run `ipvsd COMMAND --help` for a command's options; `man ipvsd` for the manual.")
    parser.add_argument("-V", "--version", action="version", version=f"ipvsd {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    parser.children = {}
    wanted = set(load)
    available: dict[str, Command] = {}
    for name, (_, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        parser.children[name] = child
        if name in wanted:
            cmd = _load(name)
            if cmd is None:
                parser.error(f"command {name!r} is not available in this build")
            available[name] = cmd
            cmd.add_arguments(child)
    return parser, available


def _unknown(parser: Parser, word: str) -> NoReturn:
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    parser.error(f"unknown command {word!r}{hint} (commands: {', '.join(COMMANDS)})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `list` mirrors ipvsadm's own option parser and exit codes, so it takes its arguments raw; only a help
    # request goes through argparse, which documents its options.
    if argv and argv[0] == "list" and not any(a in HELP for a in argv[1:]):
        cmd = _load("list")
        if cmd is not None:
            return cmd.run(argparse.Namespace(argv=argv[1:]))
    word = argv[0] if argv else ""
    parser, available = build_parser([word] if word in COMMANDS else [])
    if word and not word.startswith("-") and word not in COMMANDS:
        _unknown(parser, word)
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command they were given to, not by the top level as argparse would
        parser.children[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return available[args.command].run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
