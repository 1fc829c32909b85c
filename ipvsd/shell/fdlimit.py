"""The daemon's open-file limit: raised at start and on reload to what its probes can hold at once.

Why: each checked real can hold a sentinel connection (and a kept HTTP connection) besides the probes in
flight, so 1,000 reals need more than the usual soft limit of 1,024 descriptors; past it, probes fail with
EMFILE and healthy reals were taken out (seen in the lab at 1,000 reals). The soft limit may be raised up to
the hard limit without privilege, which is what this does; a hard limit too low is reported, naming the fix.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterable

log = logging.getLogger(__name__)

HEADROOM = 256  # the kernel socket, the control and metrics sockets, config files, logs, state


def needed(checks: Iterable[object], concurrency: int) -> int:
    """Descriptors the probes may hold at once: `concurrency` in flight, plus per check its sentinel and its
    kept HTTP connection, when it has them."""
    held = sum(bool(getattr(c, "sentinel", False)) + bool(getattr(c, "reuse_connection", False)) for c in checks)
    return concurrency + held + HEADROOM


def ensure(want: int) -> int:
    """Raise the soft RLIMIT_NOFILE to at least `want` if the hard limit allows; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("open-file limit raised from %d to %d", soft, target)
    if target < want:
        log.warning("open-file limit %d is below the %d these checks may hold at once; raise the hard limit "
                    "(systemd: LimitNOFILE=) or probes will fail with 'Too many open files'", target, want)
    return target
