"""The imperative shell: the daemon, the probe scheduler, the reconciler, the state files and the operator surface."""

from ipvsd import lean

# Before ipvsd.shell.metrics imports it: prometheus_client's submodules without its __init__ (see ipvsd.lean).
lean.install("prometheus_client")
