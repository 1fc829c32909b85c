"""Many table ops in few requests: the `Batch` result and the rule that cuts ops into requests, for both kernels.

Why batches: each IPVS change is one acknowledged generic-netlink request, and waiting for each ack before
sending the next makes programming a big table a round trip per entry. The kernel takes many requests in one
`sendmsg` and answers each in order, so the adapter sends a batch and then collects its acks.

What a batch means for errors: the kernel carries out every request of a batch, including those after one
that fails. So the ops after a failure that were in its batch may have been applied anyway (`Batch.later`),
and no later batch is sent. Batches are cut where the caller says (a plan's phase boundaries: a service add
that fails must not send its dests' adds), and the caller reads the table again after any failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ipvsd.errors import KernelError
from ipvsd.model import Op

# One sendmsg carries at most this many request bytes: well inside the socket's send buffer (212992 by
# default), and the kernel copies the whole datagram into one skb.
MAX_BATCH_BYTES = 64 * 1024
# ... and at most this many requests, so their acks (one skb each, ~0.8-1.3 KiB of receive buffer apiece
# by its truesize) fit in the receive buffer: an ack that finds it full is dropped, and its op's fate is lost.
MAX_BATCH_OPS = 500
ACK_BUDGET = 2048  # receive-buffer bytes counted per ack: a safety factor of ~2 over an ack's truesize


@dataclass(frozen=True)
class Batch:
    """What `apply_many` did, op by op, in the order given.

    `applied`: the ops before the first failure, all carried out (or already so, by the errno policy).
    `failed` / `error`: the first op the kernel refused (after the policy), and why; None when all succeeded.
    `later`: ops after `failed` that the kernel carried out anyway (they were in its batch); `later_errors`:
    the ones after it that failed too. Ops after `failed`'s batch were not sent. When an ack never came
    (`error` ENOBUFS: the receive buffer overflowed; ETIMEDOUT), the fate of `failed` and of the ops after it
    in its batch is unknown, and `later` is empty: the caller reads the table again either way.
    `sends`: how many batches (sendmsg calls) went to the kernel.
    """

    applied: tuple[Op, ...] = ()
    failed: Op | None = None
    error: KernelError | None = None
    later: tuple[Op, ...] = ()
    later_errors: tuple[KernelError, ...] = ()
    sends: int = 0

    @property
    def ok(self) -> bool:
        """Return True when every op was carried out."""
        return self.failed is None


def chunks(sizes: Sequence[int], cuts: Iterable[int], *, max_ops: int = MAX_BATCH_OPS,
           max_bytes: int = MAX_BATCH_BYTES) -> list[range]:
    """Split ops of these encoded sizes into batches: a new one at each index in `cuts`, and whenever the
    next op would pass `max_ops` ops or `max_bytes` bytes (an op alone larger than that still goes, alone)."""
    starts = set(cuts)
    out: list[range] = []
    begin, used = 0, 0
    for i, size in enumerate(sizes):
        if i > begin and (i in starts or i - begin >= max_ops or used + size > max_bytes):
            out.append(range(begin, i))
            begin, used = i, 0
        used += size
    if begin < len(sizes):
        out.append(range(begin, len(sizes)))
    return out


def results(ops: Sequence[Op], outcomes: Sequence[KernelError | None], sends: int) -> Batch:
    """The Batch of ops whose outcomes (None: done) are known, in order; ops past `outcomes` were not sent."""
    for i, err in enumerate(outcomes):
        if err is not None:
            rest = list(zip(ops[i + 1:len(outcomes)], outcomes[i + 1:], strict=True))
            return Batch(applied=tuple(ops[:i]), failed=ops[i], error=err,
                         later=tuple(op for op, e in rest if e is None),
                         later_errors=tuple(e for _, e in rest if e is not None), sends=sends)
    return Batch(applied=tuple(ops[:len(outcomes)]), sends=sends)
