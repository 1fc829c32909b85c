"""Health check probes: one module per check type behind the `Probe` interface, found through `REGISTRY`.

`make_probe(check)` turns a validated check model (ipvsd.config.schema) into a Probe; it also applies
ldirectord's `checktype = N` (N plain connects between two full checks) to any TCP-based check.
"""

from __future__ import annotations

from typing import Any

from ipvsd.checks import dns, external, greeting, http, ping, simpletcp, static, tcp, udp
from ipvsd.checks.base import REGISTRY, Kind, Probe, ProbeFactory, ProbeResult, ProbeTarget, register
from ipvsd.checks.rounds import Rounds

__all__ = ["REGISTRY", "Kind", "Probe", "ProbeFactory", "ProbeResult", "ProbeTarget", "make_probe", "register"]

_MODULES = (dns, external, greeting, http, ping, simpletcp, static, tcp, udp)  # imported for registration

_CONNECT_ROUNDS_TYPES = frozenset({"http", "https", "simpletcp", "smtp", "ftp", "pop", "imap", "nntp"})


def make_probe(check: Any) -> Probe:
    """Return the probe for a check model; raise KeyError for a type no module registered."""
    probe = REGISTRY[check.type](check)
    rounds = getattr(check, "connect_rounds", 0)
    if rounds and check.type in _CONNECT_ROUNDS_TYPES:
        return Rounds(probe, tcp.TcpProbe(), rounds)
    return probe
