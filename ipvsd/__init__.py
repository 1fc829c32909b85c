"""ipvsd: an IPVS control-plane daemon (health checks in, kernel IPVS table out)."""

__version__ = "0.1.0"
