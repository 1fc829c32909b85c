"""`ipvsd drain REAL`: put a real in maintenance (weight 0 now, deleted once idle); `--director`: every real, after
the VIP routes are withdrawn. It survives restarts."""

from __future__ import annotations

import argparse
import sys
import time

from ipvsd.commands import client_config
from ipvsd.core.maintenance import parse_until
from ipvsd.shell.control import add_socket_arguments, call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("real", metavar="REAL", nargs="?", help="ADDRESS[:PORT] or HOST[:PORT] (no port: every port)")
    parser.add_argument("--director", action="store_true", help="the whole director instead of one real: its VIP "
                        "routes ([announce]) are withdrawn at once, every real is drained withdraw_delay later")
    parser.add_argument("--service", metavar="VS", help="only in this virtual service (\"TCP 10.0.0.1:80\", "
                        "\"10.0.0.1:80\", \"FWM 7\"); default: every service")
    parser.add_argument("--reason", default="", help="why, shown by `ipvsd status` and in events")
    parser.add_argument("--until", metavar="WHEN", help="end the maintenance by itself: a duration (30m, 2h, 1d) "
                        "or an ISO 8601 time")
    add_socket_arguments(parser)


def run(args: argparse.Namespace) -> int:
    client_config(args)
    if (args.real is None) == (not args.director):
        print("ipvsd drain: name a REAL, or --director (not both)", file=sys.stderr)
        return 2
    until = None
    if args.until:
        try:
            until = parse_until(args.until, now=time.time())
        except ValueError as e:
            print(f"ipvsd drain: {e}", file=sys.stderr)
            return 2
    extra = {"director": True} if args.director else {"real": args.real, "service": args.service}
    answer = call(args, "drain", reason=args.reason, until=until, **extra)
    if answer is None:
        return 1
    if args.director:
        print("drained the whole director: its VIP routes are withdrawn, its reals follow after withdraw_delay")
    for real in answer["reals"]:
        print(f"drained {real}")
    if not answer.get("applied"):
        print("ipvsd drain: recorded, but the daemon has not applied it yet", file=sys.stderr)
    return 0
