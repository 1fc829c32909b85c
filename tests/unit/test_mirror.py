"""The mirror: the last read table patched with applied ops equals what the kernel (fake) then holds."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsd.config import native
from ipvsd.config.schema import Config
from ipvsd.core.mirror import keyed, patched
from ipvsd.errors import KernelError
from ipvsd.kernel import apply
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Fwd,
    Op,
    Proto,
    Service,
    ServiceAttrs,
    ServiceKey,
)
from ipvsd.shell.reconciler import Reconciler

SVCS = [ServiceKey.inet(Proto.TCP, f"10.0.0.{i}", 80) for i in (1, 2, 3)]
DESTS = [DestKey.of(f"10.1.0.{i}", 80) for i in (1, 2, 3, 4)]
SCHEDS = ["rr", "wlc", "sh"]

ops = st.one_of(
    st.builds(AddService, st.sampled_from(SVCS), st.builds(ServiceAttrs, st.sampled_from(SCHEDS))),
    st.builds(EditService, st.sampled_from(SVCS), st.builds(ServiceAttrs, st.sampled_from(SCHEDS))),
    st.builds(DelService, st.sampled_from(SVCS)),
    st.builds(AddDest, st.sampled_from(SVCS), st.sampled_from(DESTS),
              st.builds(DestAttrs, fwd=st.just(Fwd.MASQ), weight=st.integers(0, 5))),
    st.builds(EditDest, st.sampled_from(SVCS), st.sampled_from(DESTS),
              st.builds(DestAttrs, fwd=st.just(Fwd.MASQ), weight=st.integers(0, 5))),
    st.builds(DelDest, st.sampled_from(SVCS), st.sampled_from(DESTS)),
)


def shape(table: list[Service]) -> dict[ServiceKey, tuple[ServiceAttrs, dict[DestKey, DestAttrs]]]:
    return {s.key: (s.attrs, {d.key: d.attrs for d in s.dests}) for s in table}


@settings(max_examples=150, deadline=None)
@given(before=st.lists(ops, max_size=8), after=st.lists(ops, max_size=12))
async def test_patched_table_matches_the_kernel_after_the_ops_that_succeeded(before: list[Op],
                                                                             after: list[Op]) -> None:
    k = FakeKernel()
    for op in before:
        with contextlib.suppress(KernelError):
            await apply(k, op)
    read = await k.services()
    done: list[Op] = []
    for op in after:
        try:
            await apply(k, op)
        except KernelError:
            continue  # a failed op is not in `applied` (the reconciler stops there and reads next time)
        done.append(op)
    assert shape(patched(read, done)) == shape(await k.services())


def test_counters_survive_edits_and_new_entries_start_at_zero() -> None:
    svc, d1, d2 = SVCS[0], DESTS[0], DESTS[1]
    read = [Service(svc, ServiceAttrs("rr"), (Dest(d1, DestAttrs(weight=1), active_conns=4, inact_conns=2),))]
    out = patched(read, [EditDest(svc, d1, DestAttrs(weight=0)), AddDest(svc, d2, DestAttrs(weight=3))])
    (s,) = out
    got = {d.key: (d.attrs.weight, d.active_conns, d.inact_conns) for d in s.dests}
    assert got == {d1: (0, 4, 2), d2: (3, 0, 0)}
    assert patched(read, []) == read


CONFIG = """
[[services]]
address = "10.0.0.1"
port = 80
scheduler = "rr"
forward = "masq"
drain_timeout = 60
{reals}
"""


def _config(tmp_path: Path, *reals: str) -> Config:
    path = tmp_path / "ipvsd.toml"
    path.write_text(CONFIG.format(reals="".join(f'[[services.reals]]\naddress = "{r}"\n' for r in reals)))
    return native.read(str(path))[0]


async def test_passes_plan_on_the_mirror_and_read_the_kernel_when_fresh_or_a_drain_counts(tmp_path: Path) -> None:
    k = FakeKernel()
    r = Reconciler(k, tmp_path / "state.json")
    two = _config(tmp_path, "10.1.0.1", "10.1.0.2")
    first = await r.reconcile(two, {}, fresh=False)  # no mirror yet: reads
    assert first.read and len(first.applied) == 3 and r.reads == 1
    again = await r.reconcile(two, {}, fresh=False)
    assert not again.read and again.applied == () and r.reads == 1  # the mirror knew the ops had landed
    await k.del_dest(SVCS[0], DESTS[0])  # by hand: only a read sees it
    assert (await r.reconcile(two, {}, fresh=False)).applied == ()
    repaired = await r.reconcile(two, {}, fresh=True)
    assert repaired.read and [str(op) for op in repaired.drift] == ["-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1"]
    # a real removed from the config drains: whether it is idle is a question for the kernel's counters
    k.set_counters(SVCS[0], DESTS[1], active_conns=1)
    drained = await r.reconcile(_config(tmp_path, "10.1.0.1"), {}, fresh=False)
    assert drained.read and [str(op) for op in drained.applied] == ["-e -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 0"]


def test_keyed_gives_a_read_table_the_configurations_key_objects_and_changes_nothing_else() -> None:
    read = [Service(ServiceKey.inet(Proto.TCP, f"10.0.0.{i}", 80), ServiceAttrs("rr"), (Dest(DESTS[0], DestAttrs()),))
            for i in (1, 2, 9)]
    keys = [ServiceKey.inet(Proto.TCP, f"10.0.0.{i}", 80) for i in (2, 1)]  # equal keys, other objects; 9 unknown
    out = keyed(read, keys)
    assert out == read  # the same table, in the same order
    assert [s.key is k for s, k in zip(out[:2], reversed(keys), strict=True)] == [True, True]
    assert out[2] is read[2]  # a service the configuration does not name keeps its entry
    assert keyed(out, keys)[0] is out[0]  # already keyed: the same object, not a copy


async def test_a_read_keys_the_mirror_by_the_running_configurations_key_objects(tmp_path: Path) -> None:
    """A table programmed from one load of the file and read back after a reload (new models, equal keys):
    the mirror holds the new configuration's key objects, which the passes until the next read look up."""
    k = FakeKernel()
    r = Reconciler(k, tmp_path / "state.json")
    await r.reconcile(_config(tmp_path, "10.1.0.1"), {}, fresh=True)
    reloaded = _config(tmp_path, "10.1.0.1")
    (mine,) = [vs.service_key() for vs in reloaded.services]
    assert (await k.services())[0].key is not mine
    out = await r.reconcile(reloaded, {}, fresh=True)
    assert out.read and out.applied == ()
    assert r.mirror is not None and [s.key for s in r.mirror] == [mine] and r.mirror[0].key is mine
