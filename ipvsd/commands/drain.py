"""`ipvsd drain REAL`: put a real in maintenance (weight 0 now, deleted once idle); it survives restarts."""

from __future__ import annotations

import argparse
import sys
import time

from ipvsd.commands import client_config
from ipvsd.core.maintenance import parse_until
from ipvsd.shell.control import add_socket_arguments, call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("real", metavar="REAL", help="ADDRESS[:PORT] or HOST[:PORT] (no port: every port)")
    parser.add_argument("--service", metavar="VS", help="only in this virtual service (\"TCP 10.0.0.1:80\", "
                        "\"10.0.0.1:80\", \"FWM 7\"); default: every service")
    parser.add_argument("--reason", default="", help="why, shown by `ipvsd status` and in events")
    parser.add_argument("--until", metavar="WHEN", help="end the maintenance by itself: a duration (30m, 2h, 1d) "
                        "or an ISO 8601 time")
    add_socket_arguments(parser)


def run(args: argparse.Namespace) -> int:
    client_config(args)
    until = None
    if args.until:
        try:
            until = parse_until(args.until, now=time.time())
        except ValueError as e:
            print(f"ipvsd drain: {e}", file=sys.stderr)
            return 2
    answer = call(args, "drain", real=args.real, service=args.service, reason=args.reason, until=until)
    if answer is None:
        return 1
    for real in answer["reals"]:
        print(f"drained {real}")
    if not answer.get("applied"):
        print("ipvsd drain: recorded, but the daemon has not applied it yet", file=sys.stderr)
    return 0
