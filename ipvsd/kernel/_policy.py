"""The errno policy shared by the netlink adapter and the fake kernel (the one keepalived follows).

An add that finds the entry present and a delete that finds it gone have reached the wanted state, so they count
as done; every other refusal becomes a KernelError naming the operation in ipvsadm notation.
"""

from __future__ import annotations

import errno

from ipvsd.errors import KernelError

DONE_ON_ADD = frozenset({errno.EEXIST})
# The kernel answers ESRCH for a missing service and ENOENT for a missing dest.
DONE_ON_DELETE = frozenset({errno.ENOENT, errno.ESRCH})
STRICT: frozenset[int] = frozenset()


def settle(op: str, err: int, done: frozenset[int]) -> None:
    """Return if `err` means the operation's goal holds anyway; raise KernelError(op, err) otherwise."""
    if err not in done:
        raise KernelError(op, err)
