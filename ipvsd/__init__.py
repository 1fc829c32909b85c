"""ipvsd: an IPVS control-plane daemon (health checks in, kernel IPVS table out)."""

import os

__version__ = "0.1.0"

# ipvsd uses no pydantic plugins; without this, building the first model scans every installed package's entry
# points for them (importlib.metadata), which costs seconds at each start where the disk is slow (the lab's).
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
