"""`ipvsd undrain REAL`: end a real's maintenance started by `ipvsd drain`."""

from __future__ import annotations

import argparse
import sys

from ipvsd.commands import client_config
from ipvsd.shell.control import add_socket_arguments, call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("real", metavar="REAL", nargs="?", help="ADDRESS[:PORT] or HOST[:PORT] (no port: every "
                        "entry of that address)")
    parser.add_argument("--director", action="store_true", help="end `ipvsd drain --director`")
    parser.add_argument("--service", metavar="VS", help="only the entry for this virtual service")
    add_socket_arguments(parser)


def run(args: argparse.Namespace) -> int:
    client_config(args)
    if (args.real is None) == (not args.director):
        print("ipvsd undrain: name a REAL, or --director (not both)", file=sys.stderr)
        return 2
    extra = {"director": True} if args.director else {"real": args.real, "service": args.service}
    answer = call(args, "undrain", **extra)
    if answer is None:
        return 1
    for m in answer["removed"]:
        if m["addr"] == "*":
            print("undrained the whole director")
            continue
        print(f"undrained {m['addr']}{':' + str(m['port']) if m['port'] else ''}"
              + (f" in {m['service']}" if m["service"] else ""))
    for m in answer.get("still", []):
        print(f"ipvsd undrain: still in maintenance through the maintenance_dir ({m['reason']})", file=sys.stderr)
    return 0
