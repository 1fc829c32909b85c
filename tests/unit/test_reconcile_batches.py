"""A plan applied in batches (apply_many on the fake kernel): what a failure leaves applied, said and re-read."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from ipvsd.config import native
from ipvsd.config.schema import Config
from ipvsd.kernel import Batch
from ipvsd.kernel._batch import chunks, results
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestAttrs,
    DestKey,
    EditDest,
    Proto,
    ServiceAttrs,
    ServiceKey,
)
from ipvsd.shell.reconciler import Reconciler

SVCS = [ServiceKey.inet(Proto.TCP, f"10.0.0.{i}", 80) for i in (1, 2, 3)]
REALS = ("10.1.0.1", "10.1.0.2")
RR = ServiceAttrs("rr")


def _config(tmp_path: Path, n: int = 3) -> Config:
    text = "".join(f'[[services]]\naddress = "10.0.0.{i}"\nport = 80\nscheduler = "rr"\nforward = "masq"\n'
                   + "".join(f'[[services.reals]]\naddress = "{r}"\n' for r in REALS) for i in range(1, n + 1))
    path = tmp_path / "ipvsd.toml"
    path.write_text(text)
    return native.read(str(path))[0]


def _failing(kernel: FakeKernel, op: str, err: int) -> None:
    kernel.fail = lambda asked: err if asked == op else None


async def test_a_whole_plan_goes_in_one_batch_per_phase(tmp_path: Path) -> None:
    k = FakeKernel()
    out = await Reconciler(k, tmp_path / "state.json").reconcile(_config(tmp_path), {})
    assert out.failed is None and len(out.applied) == 9
    assert k.batches == [3, 6]  # the service adds, then the dest adds (Plan.cuts)
    assert [type(op) for op in out.applied] == [AddService] * 3 + [AddDest] * 6


async def test_batches_are_cut_by_count_too(tmp_path: Path) -> None:
    k = FakeKernel()
    k.max_batch = 4
    out = await Reconciler(k, tmp_path / "state.json").reconcile(_config(tmp_path), {})
    assert out.failed is None and k.batches == [3, 4, 2]


async def test_a_failed_service_add_stops_before_the_dests_and_reports_what_its_batch_did(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    r = Reconciler(k, tmp_path / "state.json")
    _failing(k, "-A -t 10.0.0.2:80 -s rr", errno.ENOMEM)
    with caplog.at_level(logging.INFO, logger="ipvsd.reconcile"):
        out = await r.reconcile(_config(tmp_path), {})
    assert [str(op) for op in out.applied] == ["-A -t 10.0.0.1:80 -s rr"]
    assert str(out.failed) == "-A -t 10.0.0.2:80 -s rr" and out.error is not None and out.error.errno == errno.ENOMEM
    assert [str(op) for op in out.later] == ["-A -t 10.0.0.3:80 -s rr"]  # in the same batch: the kernel did it
    assert k.batches == [3]  # no dest add was sent, so none failed on a missing service
    assert k.log == ["-A -t 10.0.0.1:80 -s rr", "-A -t 10.0.0.3:80 -s rr"]
    assert r.mirror is None  # the next pass reads the table
    said = [rec.getMessage() for rec in caplog.records]
    assert said[0] == "ipvsadm -A -t 10.0.0.1:80 -s rr"
    assert said[1].startswith("ipvsadm -A -t 10.0.0.2:80 -s rr failed: ")
    assert said[2] == "ipvsadm -A -t 10.0.0.3:80 -s rr   (in the failed op's batch: carried out all the same)"
    # level-triggered: the next pass (a mirror pass, which reads since the mirror is gone) repairs the rest
    k.fail = None
    again = await r.reconcile(_config(tmp_path), {}, fresh=False)
    assert again.read and again.failed is None
    assert str(again.applied[0]) == "-A -t 10.0.0.2:80 -s rr" and len(again.applied) == 7
    assert {s.key: len(s.dests) for s in await k.services()} == {s: 2 for s in SVCS}


async def test_a_failing_dest_add_in_the_middle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    r = Reconciler(k, tmp_path / "state.json")
    bad = "-a -t 10.0.0.2:80 -r 10.1.0.1:80 -m -w 1"
    _failing(k, bad, errno.ENOMEM)
    out = await r.reconcile(_config(tmp_path), {})
    assert [str(op) for op in out.applied] == ["-A -t 10.0.0.1:80 -s rr", "-A -t 10.0.0.2:80 -s rr",
                                               "-A -t 10.0.0.3:80 -s rr", "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1",
                                               "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 1"]
    assert str(out.failed) == bad
    assert len(out.later) == 3 and all(isinstance(op, AddDest) for op in out.later)
    assert out.drift == ()
    assert r.mirror is None
    k.fail = None
    again = await r.reconcile(_config(tmp_path), {}, fresh=False)
    assert [str(op) for op in again.applied] == [bad]


async def test_errors_after_the_failure_in_its_batch_are_said_too(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    k.fail = lambda op: errno.ENOMEM if op.startswith("-A -t 10.0.0.2") or op.startswith("-A -t 10.0.0.3") else None
    out = await Reconciler(k, tmp_path / "state.json").reconcile(_config(tmp_path), {})
    assert str(out.failed) == "-A -t 10.0.0.2:80 -s rr" and out.later == ()
    assert any("ipvsadm -A -t 10.0.0.3:80 -s rr failed too (in the same batch)" in rec.getMessage()
               for rec in caplog.records)


async def test_a_kernel_without_ipvs_fails_the_first_op(tmp_path: Path) -> None:
    k = FakeKernel()
    k.ipvs = False
    r = Reconciler(k, tmp_path / "state.json")
    r.mirror = []  # as if read before IPVS went away: the pass plans from it
    out = await r.reconcile(_config(tmp_path), {}, fresh=False)
    assert out.applied == () and str(out.failed) == "-A -t 10.0.0.1:80 -s rr" and out.later == ()
    assert k.batches == [] and r.mirror is None


# --- the errno policy inside a batch -------------------------------------------------------------------------


async def test_the_errno_policy_is_the_one_of_single_ops() -> None:
    k = FakeKernel()
    a, b = SVCS[0], SVCS[1]
    d = DestKey.of("10.1.0.1", 80)
    got = await k.apply_many([
        AddService(a, RR),
        AddService(a, RR),  # EEXIST on add: done
        AddDest(a, d, DestAttrs()),
        AddDest(a, d, DestAttrs(weight=3)),  # EEXIST: done, and the dest keeps weight 1
        DelDest(a, DestKey.of("10.1.0.9", 80)),  # ENOENT on delete: done
        DelDest(b, d),  # ESRCH (no such service) on delete: done
        DelService(b),  # ESRCH on delete: done
    ])
    assert got.ok and len(got.applied) == 7 and got.sends == 1
    bad = await k.apply_many([EditDest(a, DestKey.of("10.1.0.9", 80), DestAttrs()),  # ENOENT on edit: fails
                              DelService(a)])
    assert bad.applied == () and bad.error is not None and bad.error.errno == errno.ENOENT
    assert bad.error.op == "-e -t 10.0.0.1:80 -r 10.1.0.9:80 -m -w 1"
    assert bad.later == (DelService(a),) and await k.services() == []


async def test_an_injected_errno_on_add_that_means_done_is_done(tmp_path: Path) -> None:
    k = FakeKernel()
    _failing(k, "-a -t 10.0.0.2:80 -r 10.1.0.1:80 -m -w 1", errno.EEXIST)
    out = await Reconciler(k, tmp_path / "state.json").reconcile(_config(tmp_path), {})
    assert out.failed is None and len(out.applied) == 9


# --- cutting ops into batches -------------------------------------------------------------------------------


def test_chunks_cut_at_phases_by_count_and_by_bytes() -> None:
    assert chunks([], ()) == []
    assert chunks([10] * 5, ()) == [range(0, 5)]
    assert chunks([10] * 5, (2, 4)) == [range(0, 2), range(2, 4), range(4, 5)]
    assert chunks([10] * 5, (0, 5)) == [range(0, 5)]  # a cut at either end changes nothing
    assert chunks([10] * 5, (), max_ops=2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert chunks([40, 40, 40], (), max_bytes=100) == [range(0, 2), range(2, 3)]
    assert chunks([150, 10, 10], (), max_bytes=100) == [range(0, 1), range(1, 3)]  # too big alone: goes alone


def test_results_split_at_the_first_failure() -> None:
    from ipvsd.errors import KernelError

    ops = [DelService(s) for s in SVCS]
    assert results(ops, [None, None, None], 1) == Batch(applied=tuple(ops), sends=1)
    e1, e2 = KernelError("x", errno.EPERM), KernelError("y", errno.EPERM)
    assert results(ops, [e1, None, e2], 1) == Batch(failed=ops[0], error=e1, later=(ops[1],), later_errors=(e2,),
                                                    sends=1)
    assert results(ops, [None, e1], 2) == Batch(applied=(ops[0],), failed=ops[1], error=e1, sends=2)


def test_plan_cuts_where_each_phase_begins() -> None:
    from ipvsd.core.plan import DesiredDest, DesiredService, PlanLimits, plan
    from ipvsd.model import Dest, Service

    a, b, c = SVCS
    d1, d2 = DestKey.of("10.1.0.1", 80), DestKey.of("10.1.0.2", 80)
    observed = [Service(b, ServiceAttrs("wrr"), (Dest(d1, DestAttrs(weight=1)), Dest(d2, DestAttrs(weight=1)))),
                Service(c, RR, ())]
    desired = {a: DesiredService(RR, {d1: DesiredDest(DestAttrs())}),  # new: a service add, then a dest add
               b: DesiredService(RR, {d1: DesiredDest(DestAttrs(weight=5))})}  # edited, d1 raised, d2 out
    p = plan(desired, observed, owned={c}, limits=PlanLimits(force=True), now=0.0, drains={})
    kinds = [type(op).__name__ for op in p.ops]
    assert kinds == ["AddService", "EditService", "AddDest", "EditDest", "DelDest", "DelService"]
    assert p.cuts == (1, 2, 3, 4, 5)
    again = plan(desired, [], owned=(), limits=PlanLimits(), now=0.0, drains={})
    assert [type(op).__name__ for op in again.ops] == ["AddService", "AddService", "AddDest", "AddDest"]
    assert again.cuts == (2,)
