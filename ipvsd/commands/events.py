"""`ipvsd events`: the daemon's transitions, reloads, drift repairs and kernel errors as JSON lines, live."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ipvsd.commands import client_config
from ipvsd.errors import IpvsdError
from ipvsd.shell.control import add_socket_arguments, client_path, events
from ipvsd.shell.event_log import line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)
    parser.add_argument("--type", action="append", metavar="TYPE", help="only events of this type (transition, "
                        "reload, drift, kernel-error, refused, maintenance); repeatable")
    parser.add_argument("-n", "--count", type=int, metavar="N", help="exit after N events")


async def _stream(args: argparse.Namespace) -> int:
    seen = 0
    async for event in events(client_path(args)):
        if args.type and event.get("type") not in args.type:
            continue
        print(line(event), flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            return 0
    print("ipvsd events: the daemon closed the stream", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    client_config(args)
    try:
        return asyncio.run(_stream(args))
    except IpvsdError as e:
        print(f"ipvsd events: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
