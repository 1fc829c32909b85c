"""`ipvsd run`: load the configuration and run the reconciler daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio

from ipvsd import config as configmod
from ipvsd import logs
from ipvsd.commands import FORMAT_HELP, add_config_argument, error
from ipvsd.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load the configuration and run the reconciler in the foreground: check every real server, program the "
        "kernel's IPVS table to match, read the whole table every --resync seconds to repair drift, and serve the "
        "control socket and the metrics. SIGHUP, `ipvsd reload` or (with --watch) a changed file reloads the "
        "configuration; a rejected one leaves the running one in place. SIGTERM stops and leaves the table "
        "serving, unless --clean-stop. The blast-radius guard refuses a plan that would delete more than "
        "limits.max_deletes entries or limits.max_delete_fraction of those ipvsd owns (the refusal is logged "
        "and the table left as it is); --force applies such plans. Logs go to standard error: text lines, or "
        "one JSON object per line with --log-format json; --debug adds debug messages.")
    add_config_argument(parser)
    parser.add_argument("--format", choices=configmod.FORMATS, help=FORMAT_HELP)
    parser.add_argument("--state-dir", metavar="DIR", help="where ownership and drains are kept "
                        "(default: the config's state_dir, /var/lib/ipvsd)")
    parser.add_argument("--resync", type=float, metavar="SECONDS", help="seconds between full reads of the kernel "
                        "table, which repair drift (default: the config's resync_interval, 30)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text (default; journald adds the time) or one JSON object each")
    parser.add_argument("--watch", action=argparse.BooleanOptionalAction, default=None,
                        help="reload when the config files change (default: the config's watch/autoreload)")
    parser.add_argument("--clean-stop", action=argparse.BooleanOptionalAction, default=None,
                        help="delete what ipvsd owns when stopped (default: the config's clean_stop)")
    parser.add_argument("--socket", metavar="PATH", help="control socket for status/drain/undrain/reload/events "
                        "(default: STATE_DIR/control.sock with --state-dir, else the config's control_socket)")
    parser.add_argument("--metrics", metavar="ADDR:PORT", help="Prometheus endpoint (default: the config's "
                        "metrics_listen, 127.0.0.1:9597); \"\" or off: none")
    parser.add_argument("--events-file", metavar="FILE", help="also append every event as a JSON line to FILE")
    parser.add_argument("--force", action="store_true", help="apply plans the blast-radius guard "
                        "(limits.max_deletes, limits.max_delete_fraction) would refuse")
    parser.add_argument("--debug", action="store_true", help="log at debug level too (default: info and "
                        "above)")


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_format, level=10 if args.debug else 20)
    try:
        reading = configmod.read(args.config, args.format)
        config, warnings = reading.config, reading.warnings
    except ConfigError as e:
        for err in getattr(e, "errors", [e]):
            error("run", err)
        return 1
    except OSError as e:
        error("run", f"{args.config}: {e.strerror}")
        return 1
    for w in warnings:
        error("run", w)
    from ipvsd.shell.kmodules import refused_schedulers

    refused = refused_schedulers(config, warnings)
    for err in refused:
        error("run", err)
    if refused:
        return 1

    from ipvsd.kernel.netlink import NetlinkKernel
    from ipvsd.shell.addresses import AddressWatcher  # after the kernel adapter: pyroute2's lean import
    from ipvsd.shell.daemon import Daemon, Options

    opts = Options(config_path=args.config, format=args.format, state_dir=args.state_dir, resync=args.resync,
                   watch=args.watch, force=args.force, clean_stop=args.clean_stop, socket=args.socket,
                   metrics_listen=args.metrics, events_file=args.events_file)
    daemon = Daemon(opts, config, NetlinkKernel, addresses=lambda changed: AddressWatcher(changed).run(),
                    reading=reading)
    return asyncio.run(daemon.run())
