"""`python -m ipvsd` and the `ipvsd` command: the command line, imported with the cyclic collector paused."""

import gc
import sys


def main() -> int:
    """Run the command line."""
    # An import makes hundreds of thousands of objects that all live on (classes, functions, validators): the
    # collector's passes over them find nothing to free and cost 3-4 % of a start (`ipvsd run` natively), as
    # much again in the lab VM. `ipvsd run` sets its own thresholds later (ipvsd.shell.gcpolicy).
    gc.disable()
    try:
        from ipvsd.cli import main as cli
    finally:
        gc.enable()
    return cli()


if __name__ == "__main__":
    sys.exit(main())
