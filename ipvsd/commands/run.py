"""`ipvsd run`: load the configuration and run the reconciler daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ipvsd import config as configmod
from ipvsd import logs
from ipvsd.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration file")
    parser.add_argument("--format", choices=configmod.FORMATS, help="configuration format (default: sniffed)")
    parser.add_argument("--state-dir", metavar="DIR", help="where ownership and drains are kept "
                        "(default: the config's state_dir, /var/lib/ipvsd)")
    parser.add_argument("--resync", type=float, metavar="SECONDS", help="seconds between full reconciles")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--watch", action=argparse.BooleanOptionalAction, default=None,
                        help="reload when the config files change (default: the config's watch/autoreload)")
    parser.add_argument("--clean-stop", action=argparse.BooleanOptionalAction, default=None,
                        help="delete what ipvsd owns when stopped (default: the config's clean_stop)")
    parser.add_argument("--socket", metavar="PATH", help="control socket for status/drain/undrain/reload/events "
                        "(default: STATE_DIR/control.sock with --state-dir, else the config's control_socket)")
    parser.add_argument("--metrics", metavar="ADDR:PORT", help="Prometheus endpoint (default: the config's "
                        "metrics_listen, 127.0.0.1:9597); \"\" or off: none")
    parser.add_argument("--events-file", metavar="FILE", help="also append every event as a JSON line to FILE")
    parser.add_argument("--force", action="store_true", help="apply plans the blast-radius guard would refuse")
    parser.add_argument("--debug", action="store_true", help="log debug messages")


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_format, level=10 if args.debug else 20)
    try:
        config, warnings = configmod.load(args.config, args.format)
    except ConfigError as e:
        for err in getattr(e, "errors", [e]):
            print(f"ipvsd: {err}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ipvsd: {args.config}: {e.strerror}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"ipvsd: {w}", file=sys.stderr)

    from ipvsd.kernel.netlink import NetlinkKernel
    from ipvsd.shell.daemon import Daemon, Options

    opts = Options(config_path=args.config, format=args.format, state_dir=args.state_dir, resync=args.resync,
                   watch=args.watch, force=args.force, clean_stop=args.clean_stop, socket=args.socket,
                   metrics_listen=args.metrics, events_file=args.events_file)
    return asyncio.run(Daemon(opts, config, NetlinkKernel).run())
