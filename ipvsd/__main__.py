"""`python -m ipvsd` runs the command line."""

import sys

from ipvsd.cli import main

sys.exit(main())
