"""`ipvsd manpage`: print the manual pages shipped in the package, or install them where man(1) finds them."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources

from ipvsd.commands import error

PAGES = ("ipvsd.8", "ipvsd.toml.5")
DEFAULT_MANDIR = "/usr/local/share/man"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print a manual page (read it with `ipvsd manpage | man -l -`), or install both: "
                          "ipvsd(8) and ipvsd.toml(5) are part of the package, built from --help and the "
                          "configuration schema.")
    parser.add_argument("page", nargs="?", choices=PAGES, default="ipvsd.8", metavar="PAGE",
                        help=f"the page to print: {' or '.join(PAGES)} (default ipvsd.8)")
    parser.add_argument("--install", nargs="?", const=DEFAULT_MANDIR, metavar="MANDIR",
                        help=f"write every page to MANDIR/manN/ instead (default MANDIR {DEFAULT_MANDIR})")


def text(page: str) -> str:
    """A shipped page's roff source."""
    return resources.files("ipvsd").joinpath("man", page).read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    if args.install is None:
        sys.stdout.write(text(args.page))
        return 0
    try:
        for page in PAGES:
            section = page.rsplit(".", 1)[1]
            directory = os.path.join(args.install, f"man{section}")
            os.makedirs(directory, exist_ok=True)
            target = os.path.join(directory, page)
            with open(target + ".tmp", "w", encoding="utf-8") as f:
                f.write(text(page))
            os.chmod(target + ".tmp", 0o644)
            os.replace(target + ".tmp", target)
            print(target)
    except OSError as e:
        error("manpage", e)
        return 1
    return 0
