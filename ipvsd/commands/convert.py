"""`ipvsd convert`: write the native TOML of any supported configuration."""

from __future__ import annotations

import argparse
import os
import sys

from ipvsd.commands import add_config_argument, error
from ipvsd.config import FORMATS, ConfigErrors, load, sniff
from ipvsd.config.to_toml import to_toml
from ipvsd.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "configuration to convert")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: guessed from the file)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")


def run(args: argparse.Namespace) -> int:
    try:
        fmt = args.format or sniff(args.config)
        config, warnings = load(args.config, fmt)
    except ConfigErrors as e:
        for err in e.errors:
            error("convert", err)
        return 1
    except ConfigError as e:
        error("convert", e)
        return 1
    for w in warnings:
        error("convert", w)
    header = [f"ipvsd configuration converted from {os.path.basename(args.config)} ({fmt} format)"]
    header += [f"{w.level}: line {w.line}: {w.key}: {w.message}" for w in warnings if w.line is not None]
    text = to_toml(config, header)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return 0
