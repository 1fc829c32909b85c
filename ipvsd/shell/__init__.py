"""The imperative shell: the daemon, the probe scheduler, the reconciler, the state files and the operator surface."""
