"""The reliability suite (scripts/reliability): scenarios that attack ipvsd on a real kernel, and their report."""
