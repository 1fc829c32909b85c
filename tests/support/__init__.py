"""Helpers shared by the unit tests: loopback pages, waiting on a condition, a virtual-time event loop."""
