"""The daemon's open-file limit: raised at start and on reload to what its probes can hold at once.

Why: each checked real can hold a sentinel connection and a probe's socket (and a kept HTTP connection), so
1,000 reals need more than the usual soft limit of 1,024 descriptors; past it, probes fail with EMFILE and
healthy reals are taken out (seen in the lab at 1,000 reals). The soft limit may be raised up to the hard limit
without privilege, which is what this does; a hard limit too low is reported once, naming the fix.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

HEADROOM = 256  # the kernel socket, the control and metrics sockets, config files, logs, state


def needed(reals: int, concurrency: int) -> int:
    """Descriptors for `reals` distinct probes in flight up to `concurrency`, with sentinels and kept connections."""
    return 3 * reals + concurrency + HEADROOM


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
