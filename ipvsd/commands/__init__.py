"""Subcommands of the `ipvsd` command line, one module each."""
