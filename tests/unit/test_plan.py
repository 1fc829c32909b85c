"""Tests of the pure planner: table-driven cases for each rule, then hypothesis properties over random tables."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsd import kernel
from ipvsd.core.plan import Desired, DesiredDest, DesiredService, DrainKey, Plan, PlanLimits, Want, plan
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
    SvcFlag,
)

WEB = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
DNS = ServiceKey.inet(Proto.UDP, "10.0.0.1", 53)
HAND = ServiceKey.inet(Proto.TCP, "10.0.0.9", 22)  # foreign: made by hand
RS1, RS2, RS3, SORRY = (DestKey.of(a, 80) for a in ("10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.9.9"))
RR = ServiceAttrs(scheduler="rr")
W1 = DestAttrs(fwd=Fwd.ROUTE, weight=1)
W2 = DestAttrs(fwd=Fwd.ROUTE, weight=2)
W0 = DestAttrs(fwd=Fwd.ROUTE, weight=0)
OPEN = PlanLimits(max_delete_share=1.0)  # no guard, for tests about other rules
NOW = 1_000_000.0


# --- a tiny in-memory applier over model values (the kernel's semantics, conn counts preserved) ----------------


def apply(observed: Iterable[Service], ops: Iterable[Op]) -> list[Service]:
    """Return the table after carrying out `ops` in order; raises like the kernel on a missing/duplicate key."""
    table = {s.key: s for s in observed}
    for op in ops:
        match op:
            case AddService(key, attrs):
                assert key not in table, f"EEXIST {op}"
                table[key] = Service(key, attrs)
            case EditService(key, attrs):
                table[key] = replace(table[key], attrs=attrs)
            case DelService(key):
                del table[key]
            case AddDest(svc, key, attrs):
                assert all(d.key != key for d in table[svc].dests), f"EEXIST {op}"
                table[svc] = replace(table[svc], dests=(*table[svc].dests, Dest(key, attrs)))
            case EditDest(svc, key, attrs):
                dests = table[svc].dests
                assert any(d.key == key for d in dests), f"ENOENT {op}"
                table[svc] = replace(table[svc], dests=tuple(replace(d, attrs=attrs) if d.key == key else d
                                                             for d in dests))
            case DelDest(svc, key):
                assert any(d.key == key for d in table[svc].dests), f"ENOENT {op}"
                table[svc] = replace(table[svc], dests=tuple(d for d in table[svc].dests if d.key != key))
    return list(table.values())


def svc(key: ServiceKey, *dests: Dest, attrs: ServiceAttrs = RR) -> Service:
    return Service(key, attrs, tuple(dests))


def dest(key: DestKey, attrs: DestAttrs = W1, active: int = 0, inactive: int = 0) -> Dest:
    return Dest(key, attrs, active_conns=active, inact_conns=inactive)


def want(attrs: ServiceAttrs = RR, drain_timeout: float | None = None, **dests: DesiredDest) -> DesiredService:
    return DesiredService(attrs, {_DK[name]: d for name, d in dests.items()}, drain_timeout)


_DK = {"rs1": RS1, "rs2": RS2, "rs3": RS3, "sorry": SORRY}


def serve(attrs: DestAttrs = W1) -> DesiredDest:
    return DesiredDest(attrs)


def run(desired: Desired, observed: list[Service], *, owned: Iterable[ServiceKey] = (), limits: PlanLimits = OPEN,
        now: float = NOW, drains: Mapping[DrainKey, float] | None = None, previous: Desired | None = None) -> Plan:
    return plan(desired, observed, owned=owned, limits=limits, now=now, drains=drains or {}, previous=previous)


def ipvsadm(p: Plan) -> list[str]:
    return [str(op) for op in p.ops]


# --- table-driven cases ---------------------------------------------------------------------------------------


def test_fresh_start_creates_service_then_dests() -> None:
    p = run({WEB: want(rs1=serve(), rs2=serve(W2))}, [])
    assert ipvsadm(p) == [
        "-A -t 10.0.0.1:80 -s rr",
        "-a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 1",
        "-a -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 2",
    ]
    assert p.owned == {WEB}
    assert p.drift == ()


def test_nothing_to_do_when_kernel_matches() -> None:
    observed = [svc(WEB, dest(RS1, active=5), dest(RS2, W2)), svc(HAND, dest(RS3))]
    p = run({WEB: want(rs1=serve(), rs2=serve(W2))}, observed, owned={WEB})
    assert p.empty and p.ops == () and p.drains == {}


def test_adoption_of_matching_kernel_state_makes_no_ops() -> None:
    # After a restart nothing is owned yet on disk, but the config declares WEB: it is adopted in place.
    observed = [svc(WEB, dest(RS1, active=3), dest(RS2, W2, inactive=1))]
    p = run({WEB: want(rs1=serve(), rs2=serve(W2))}, observed)
    assert p.empty
    assert p.owned == {WEB}


def test_adoption_of_ipvsadm_service_ignores_unused_persistence_fields() -> None:
    made_by_hand = ServiceAttrs(scheduler="rr", timeout=0, netmask=0)  # not persistent: timeout/netmask unused
    p = run({WEB: want()}, [svc(WEB, attrs=made_by_hand)])
    assert p.empty


def test_keep_leaves_an_unchecked_real_as_the_kernel_has_it() -> None:
    observed = [svc(WEB, dest(RS1, W2))]
    d = {WEB: want(rs1=DesiredDest(W1, Want.KEEP), rs2=DesiredDest(W1, Want.KEEP))}
    assert run(d, observed, owned={WEB}).empty  # rs1 stays at weight 2, rs2 is not added before its check


def test_service_attr_change_is_an_edit_never_a_delete() -> None:
    observed = [svc(WEB, dest(RS1, active=9))]
    p = run({WEB: want(ServiceAttrs(scheduler="wlc"), rs1=serve())}, observed, owned={WEB})
    assert ipvsadm(p) == ["-E -t 10.0.0.1:80 -s wlc"]


def test_persistence_change_is_an_edit() -> None:
    sticky = ServiceAttrs(scheduler="rr", flags=SvcFlag.PERSISTENT, timeout=300)
    p = run({WEB: want(sticky)}, [svc(WEB, attrs=replace(sticky, timeout=60))], owned={WEB})
    assert ipvsadm(p) == ["-E -t 10.0.0.1:80 -s rr -p 300"]


def test_weight_change_is_an_edit() -> None:
    p = run({WEB: want(rs1=serve(W2))}, [svc(WEB, dest(RS1, active=4))], owned={WEB})
    assert ipvsadm(p) == ["-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 2"]


def test_quiescent_failure_sets_weight_0_and_recovery_restores_it() -> None:
    down = run({WEB: want(rs1=serve(W0), rs2=serve())}, [svc(WEB, dest(RS1), dest(RS2))], owned={WEB})
    assert ipvsadm(down) == ["-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0"]
    assert down.removals == 1
    up = run({WEB: want(rs1=serve(W2), rs2=serve())}, [svc(WEB, dest(RS1, W0), dest(RS2))], owned={WEB})
    assert ipvsadm(up) == ["-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 2"]


def test_failure_in_remove_mode_deletes_at_once_and_recovery_adds_back() -> None:
    d = {WEB: want(rs1=DesiredDest(W1, Want.ABSENT), rs2=serve())}
    p = run(d, [svc(WEB, dest(RS1, active=7), dest(RS2))], owned={WEB})
    assert ipvsadm(p) == ["-d -t 10.0.0.1:80 -r 10.0.1.1:80"]
    assert run(d, apply([svc(WEB, dest(RS1), dest(RS2))], p.ops), owned={WEB}).empty
    back = run({WEB: want(rs1=serve(), rs2=serve())}, [svc(WEB, dest(RS2))], owned={WEB})
    assert ipvsadm(back) == ["-a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 1"]


def test_sorry_server_goes_in_before_reals_go_out_and_leaves_by_draining() -> None:
    observed = [svc(WEB, dest(RS1), dest(RS2))]
    p = run({WEB: want(rs1=serve(W0), rs2=serve(W0), sorry=serve())}, observed, owned={WEB})
    assert ipvsadm(p) == [
        "-a -t 10.0.0.1:80 -r 10.0.9.9:80 -g -w 1",
        "-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0",
        "-e -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0",
    ]
    # A real comes back: it is raised first, then the sorry server (with a client on it) drains.
    observed = [svc(WEB, dest(RS1, W0), dest(RS2, W0), dest(SORRY, active=1))]
    p = run({WEB: want(rs1=serve(), rs2=serve(W0))}, observed, owned={WEB})
    assert ipvsadm(p) == [
        "-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 1",
        "-e -t 10.0.0.1:80 -r 10.0.9.9:80 -g -w 0",
    ]
    assert p.drains == {(WEB, SORRY): NOW}


def test_foreign_services_are_never_touched() -> None:
    observed = [svc(HAND, dest(RS1)), svc(WEB, dest(RS1))]
    p = run({}, observed, owned={WEB})
    assert all(getattr(op, "service", getattr(op, "key", None)) != HAND for op in p.ops)
    assert ipvsadm(p) == ["-D -t 10.0.0.1:80"]
    assert run({}, [svc(HAND, dest(RS1))]).empty  # nothing owned: an empty config touches nothing


def test_dest_removed_from_config_drains_then_deletes_when_idle() -> None:
    d = {WEB: want(rs1=serve())}
    busy = [svc(WEB, dest(RS1), dest(RS2, active=2, inactive=1))]
    p1 = run(d, busy, owned={WEB})
    assert ipvsadm(p1) == ["-e -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0"]
    assert p1.drains == {(WEB, RS2): NOW}
    after = apply(busy, p1.ops)
    # Still busy a minute later: nothing to do, the drain keeps its start time.
    p2 = run(d, after, owned={WEB}, now=NOW + 60, drains=p1.drains)
    assert p2.empty and p2.drains == {(WEB, RS2): NOW}
    # Idle: deleted, and the drain is over.
    idle = [svc(WEB, dest(RS1), dest(RS2, W0))]
    p3 = run(d, idle, owned={WEB}, now=NOW + 61, drains=p2.drains)
    assert ipvsadm(p3) == ["-d -t 10.0.0.1:80 -r 10.0.1.2:80"]
    assert p3.drains == {} and p3.removals == 0  # it was already out of service


def test_drain_deadline_deletes_a_busy_dest() -> None:
    d = {WEB: want(rs1=serve())}
    busy = [svc(WEB, dest(RS1), dest(RS2, W0, active=2))]
    drains = {(WEB, RS2): NOW - 299}
    assert run(d, busy, owned={WEB}, drains=drains).empty
    p = run(d, busy, owned={WEB}, drains=drains, now=NOW + 1)
    assert ipvsadm(p) == ["-d -t 10.0.0.1:80 -r 10.0.1.2:80"]


def test_per_service_drain_timeout_overrides_limits() -> None:
    d = {WEB: want(drain_timeout=10, rs1=serve())}
    busy = [svc(WEB, dest(RS1), dest(RS2, W0, active=2))]
    p = run(d, busy, owned={WEB}, drains={(WEB, RS2): NOW - 10})
    assert ipvsadm(p) == ["-d -t 10.0.0.1:80 -r 10.0.1.2:80"]


def test_only_a_drain_that_waits_for_connections_asks_for_fresh_counters() -> None:
    """`counted` makes the reconciler read the kernel and plan again: a full dump and a second pass at 10,000
    reals, worth it only when the connection counters decide."""
    busy = [svc(WEB, dest(RS1), dest(RS2, active=2))]
    waits = run({WEB: want(rs1=serve())}, busy, owned={WEB})
    assert waits.counted and ipvsadm(waits) == ["-e -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0"]
    at_once = run({WEB: want(drain_timeout=0, rs1=serve())}, busy, owned={WEB})
    assert not at_once.counted and ipvsadm(at_once) == ["-d -t 10.0.0.1:80 -r 10.0.1.2:80"]
    udp = run({DNS: DesiredService(RR, {RS1: serve()})}, [svc(DNS, dest(RS1), dest(RS2, inactive=4))], owned={DNS})
    assert not udp.counted and ipvsadm(udp) == ["-d -u 10.0.0.1:53 -r 10.0.1.2:80"]


def test_maintenance_drain_is_explicit_and_never_re_adds() -> None:
    d = {WEB: want(rs1=serve(), rs2=DesiredDest(W1, Want.DRAIN))}
    p = run(d, [svc(WEB, dest(RS1), dest(RS2, active=1))], owned={WEB})
    assert ipvsadm(p) == ["-e -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0"]
    assert run(d, [svc(WEB, dest(RS1))], owned={WEB}).empty  # drained away: not put back


def test_udp_dest_is_deleted_at_once() -> None:
    d = {DNS: DesiredService(RR, {RS1: serve()})}
    p = run(d, [svc(DNS, dest(RS1), dest(RS2, inactive=40))], owned={DNS})
    assert ipvsadm(p) == ["-d -u 10.0.0.1:53 -r 10.0.1.2:80"]


def test_service_removed_from_config_drains_then_is_deleted() -> None:
    busy = [svc(WEB, dest(RS1, active=1), dest(RS2))]
    p1 = run({}, busy, owned={WEB})
    assert ipvsadm(p1) == ["-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0", "-d -t 10.0.0.1:80 -r 10.0.1.2:80"]
    assert p1.owned == {WEB}  # still ours while it exists
    p2 = run({}, [svc(WEB, dest(RS1, W0))], owned=p1.owned, drains=p1.drains, now=NOW + 5)
    assert ipvsadm(p2) == ["-D -t 10.0.0.1:80"]  # one DelService, no DelDest before it
    assert run({}, [], owned=p2.owned).owned == frozenset()  # gone from the kernel: forgotten


def test_empty_service_removed_from_config_is_deleted_at_once() -> None:
    assert ipvsadm(run({}, [svc(WEB)], owned={WEB})) == ["-D -t 10.0.0.1:80"]


def test_udp_service_removed_from_config_is_deleted_at_once() -> None:
    assert ipvsadm(run({}, [svc(DNS, dest(RS1, inactive=3))], owned={DNS})) == ["-D -u 10.0.0.1:53"]


def test_op_order_follows_the_phases() -> None:
    observed = [svc(WEB, dest(RS1), dest(RS2, W0), dest(RS3)), svc(DNS, dest(RS1))]
    other = ServiceKey.inet(Proto.TCP, "10.0.0.2", 443)
    d = {
        WEB: want(ServiceAttrs(scheduler="wlc"), rs1=serve(W0), rs2=serve(W1), sorry=serve()),
        other: want(rs1=serve()),
    }
    p = run(d, observed, owned={WEB, DNS})
    assert [type(op).__name__ for op in p.ops] == [
        "AddService", "EditService", "AddDest", "AddDest", "EditDest", "EditDest", "DelDest", "DelService",
    ]
    assert ipvsadm(p)[4:6] == ["-e -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 1", "-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0"]


# --- blast-radius guard ---------------------------------------------------------------------------------------


def _pool(n: int) -> list[Service]:
    return [svc(WEB, *(dest(DestKey.of(f"10.0.2.{i}", 80)) for i in range(1, n + 1)))]


def test_guard_refuses_a_plan_that_takes_out_most_of_the_pool() -> None:
    limits = PlanLimits(max_delete_share=0.5, guard_floor=2)
    p = run({WEB: want()}, _pool(10), owned={WEB}, limits=limits, drains={(WEB, RS1): NOW - 1})
    assert p.ops == () and p.refused is not None and "10 of 10" in p.refused
    assert len(p.withheld) == 10 and p.removals == 10
    assert p.drains == {(WEB, RS1): NOW - 1}  # nothing moved, drains unchanged
    assert not p.empty


def test_guard_lets_force_through() -> None:
    p = run({WEB: want()}, _pool(10), owned={WEB}, limits=PlanLimits(max_delete_share=0.5, force=True))
    assert p.refused is None and len(p.ops) == 10


def test_guard_counts_weight_zero_as_removal() -> None:
    zeroed = {DestKey.of(f"10.0.2.{i}", 80): serve(W0) for i in range(1, 11)}
    p = run({WEB: DesiredService(RR, zeroed)}, _pool(10), owned={WEB}, limits=PlanLimits())
    assert p.refused is not None


def test_guard_allows_a_share_under_the_limit_and_the_floor() -> None:
    keep = {DestKey.of(f"10.0.2.{i}", 80): serve() for i in range(1, 6)}
    assert run({WEB: DesiredService(RR, keep)}, _pool(10), owned={WEB}, limits=PlanLimits()).refused is None
    # A two-real pool losing both is under the floor: small setups are never stuck.
    assert run({WEB: want(rs1=serve(W0), rs2=serve(W0))}, [svc(WEB, dest(RS1), dest(RS2))], owned={WEB},
               limits=PlanLimits()).refused is None


def test_guard_absolute_cap() -> None:
    keep = {DestKey.of(f"10.0.2.{i}", 80): serve() for i in range(1, 8)}
    p = run({WEB: DesiredService(RR, keep)}, _pool(10), owned={WEB}, limits=PlanLimits(max_deletes=2))
    assert p.refused is not None and "cap of 2" in p.refused


def test_guard_ignores_dests_already_out_of_service() -> None:
    drained = [svc(WEB, *(dest(DestKey.of(f"10.0.2.{i}", 80), W0) for i in range(1, 11)))]
    assert run({}, drained, owned={WEB}, limits=PlanLimits()).refused is None


# --- drift ----------------------------------------------------------------------------------------------------


def test_drift_hand_deleted_dest_is_restored_and_counted() -> None:
    d = {WEB: want(rs1=serve(), rs2=serve())}
    p = run(d, [svc(WEB, dest(RS1))], owned={WEB}, previous=d)  # ipvsadm -d by hand
    assert ipvsadm(p) == ["-a -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 1"]
    assert p.drift == p.ops


def test_drift_hand_deleted_service_is_restored_and_counted() -> None:
    d = {WEB: want(rs1=serve())}
    p = run(d, [], owned={WEB}, previous=d)  # ipvsadm -D by hand
    assert len(p.ops) == 2 and p.drift == p.ops


def test_drift_hand_edits_are_counted() -> None:
    d = {WEB: want(rs1=serve(), rs2=serve(W0))}
    observed = [svc(WEB, dest(RS1, W2), dest(RS2, W1), attrs=ServiceAttrs(scheduler="sh"))]
    p = run(d, observed, owned={WEB}, previous=d)
    assert len(p.ops) == 3 and p.drift == p.ops


def test_drift_hand_added_dest_in_owned_service_is_drained_and_counted() -> None:
    d = {WEB: want(rs1=serve())}
    p = run(d, [svc(WEB, dest(RS1), dest(RS3, active=1))], owned={WEB}, previous=d)
    assert ipvsadm(p) == ["-e -t 10.0.0.1:80 -r 10.0.1.3:80 -g -w 0"] and p.drift == p.ops


def test_changes_from_config_or_health_are_not_drift() -> None:
    before = {WEB: want(rs1=serve(), rs2=serve())}
    after = {WEB: want(ServiceAttrs(scheduler="wlc"), rs1=serve(W0), rs3=serve())}
    observed = [svc(WEB, dest(RS1), dest(RS2, active=1))]
    p = run(after, observed, owned={WEB}, previous=before)
    assert len(p.ops) == 4 and p.drift == ()


def test_drain_completion_is_not_drift() -> None:
    d = {WEB: want(rs1=serve())}
    p = run(d, [svc(WEB, dest(RS1), dest(RS2, W0))], owned={WEB}, previous=d, drains={(WEB, RS2): NOW})
    assert len(p.ops) == 1 and p.drift == ()


def test_no_drift_without_a_previous_table() -> None:
    d = {WEB: want(rs1=serve())}
    assert run(d, [], owned={WEB}).drift == ()


# --- properties -----------------------------------------------------------------------------------------------

_SKEYS = [WEB, DNS, HAND, ServiceKey.mark(7), ServiceKey.inet(Proto.TCP, "2001:db8::1", 443)]
_DKEYS = [RS1, RS2, RS3, SORRY, DestKey.of("2001:db8::10", 443)]

service_attrs = st.builds(ServiceAttrs, scheduler=st.sampled_from(["rr", "wlc"]),
                          flags=st.sampled_from([0, int(SvcFlag.PERSISTENT)]), timeout=st.sampled_from([0, 300]))
dest_attrs = st.builds(DestAttrs, fwd=st.sampled_from([Fwd.MASQ, Fwd.ROUTE]), weight=st.integers(0, 3),
                       u_thresh=st.sampled_from([0, 100]))
desired_dests = st.dictionaries(st.sampled_from(_DKEYS), st.builds(DesiredDest, dest_attrs, st.sampled_from(Want)),
                                max_size=4)
desired_tables = st.dictionaries(
    st.sampled_from(_SKEYS),
    st.builds(DesiredService, service_attrs, desired_dests, st.sampled_from([None, 0.0, 30.0])),
    max_size=4)
kernel_dests = st.builds(Dest, st.sampled_from(_DKEYS), dest_attrs, st.integers(0, 2), st.integers(0, 2))


@st.composite
def kernel_tables(draw: st.DrawFn) -> list[Service]:
    keys = draw(st.lists(st.sampled_from(_SKEYS), unique=True, max_size=5))
    out = []
    for k in keys:
        ds = draw(st.lists(kernel_dests, max_size=4, unique_by=lambda d: d.key))
        out.append(Service(k, draw(service_attrs), tuple(ds)))
    return out


drain_tables = st.dictionaries(st.tuples(st.sampled_from(_SKEYS), st.sampled_from(_DKEYS)),
                               st.floats(NOW - 100, NOW), max_size=5)


def kernel_of(desired: Desired) -> list[Service]:
    """The kernel table a desired table settles into (SERVE dests only)."""
    return [Service(k, s.attrs, tuple(Dest(dk, dd.attrs) for dk, dd in s.dests.items() if dd.want is Want.SERVE))
            for k, s in desired.items()]


def _touched(op: Op) -> ServiceKey:
    return op.key if isinstance(op, AddService | EditService | DelService) else op.service


@settings(max_examples=150)
@given(desired_tables)
def test_prop_settled_table_plans_nothing(d: Desired) -> None:
    assert run(d, kernel_of(d), owned=d.keys(), previous=d).empty


@settings(max_examples=200)
@given(desired_tables, kernel_tables(), st.sets(st.sampled_from(_SKEYS)), drain_tables,
       st.floats(0, 200))
def test_prop_plan_converges_and_spares_foreign(d: Desired, observed: list[Service], owned: set[ServiceKey],
                                               drains: dict[DrainKey, float], later: float) -> None:
    now = NOW + later
    p = run(d, observed, owned=owned, drains=drains, now=now)
    mine = owned | d.keys()
    assert all(_touched(op) in mine for op in p.ops), "Rule 1: only owned services are touched"
    phases = [(AddService, EditService, AddDest, EditDest, DelDest, DelService).index(type(op)) for op in p.ops]
    assert phases == sorted(phases), "Rule 5: phase order"
    after = apply(observed, p.ops)  # asserts no EEXIST/ENOENT along the way
    before, table = {s.key: s for s in observed}, {s.key: s for s in after}
    for k, s in before.items():
        if k not in mine:
            assert table[k] == s, "foreign service changed"
    for k, ds in d.items():
        got = {x.key: x for x in table[k].dests}
        was = {x.key: x for x in before[k].dests} if k in before else {}
        for dk, dd in ds.dests.items():
            if dd.want is Want.SERVE:
                assert dk in got and got[dk].attrs == dd.attrs
            elif dd.want is Want.ABSENT:
                assert dk not in got
            elif dd.want is Want.KEEP:
                assert got.get(dk) == was.get(dk)
        for dk, x in got.items():
            if dk not in ds.dests or ds.dests[dk].want is Want.DRAIN:
                assert x.attrs.weight == 0 and (k, dk) in p.drains
    # Rule 8: planning again against the result, with the returned drains, has nothing left to do.
    again = run(d, after, owned=p.owned, drains=p.drains, now=now, previous=d)
    assert again.empty, [str(op) for op in again.ops]


@settings(max_examples=150)
@given(desired_tables, st.data())
def test_prop_hand_damage_is_all_drift_and_repaired(d: Desired, data: st.DataObject) -> None:
    settled = kernel_of(d)
    damaged = []
    for s in settled:
        match data.draw(st.sampled_from(["none", "delete-service", "delete-dest", "reweight"])):
            case "delete-service":
                continue
            case "delete-dest" if s.dests:
                s = replace(s, dests=s.dests[1:])
            case "reweight" if s.dests:
                s = replace(s, dests=(replace(s.dests[0], attrs=replace(s.dests[0].attrs, weight=9)), *s.dests[1:]))
        damaged.append(s)
    p = run(d, damaged, owned=d.keys(), previous=d)
    assert p.drift == p.ops
    assert run(d, apply(damaged, p.ops), owned=d.keys(), previous=d).empty


# --- against the fake kernel (the same contract the netlink adapter meets) -------------------------------------


async def _reconcile(k: FakeKernel, d: Desired, owned: Iterable[ServiceKey], previous: Desired | None = None) -> Plan:
    p = plan(d, await k.services(), owned=owned, limits=OPEN, now=NOW, drains={}, previous=previous)
    for op in p.ops:
        await kernel.apply(k, op)
    return p


async def test_fake_kernel_reconcile_repairs_drift_and_spares_foreign() -> None:
    k = FakeKernel()
    await k.add_service(HAND, RR)
    await k.add_dest(HAND, RS1, W1)
    d = {WEB: want(rs1=serve(), rs2=serve(W2)), DNS: DesiredService(RR, {RS1: serve()})}
    first = await _reconcile(k, d, ())
    assert len(first.ops) == 5 and first.drift == ()
    assert (await _reconcile(k, d, first.owned, previous=d)).empty
    await k.del_dest(WEB, RS2)  # ipvsadm -d by hand
    await k.edit_service(DNS, ServiceAttrs(scheduler="sh"))  # ipvsadm -E by hand
    repair = await _reconcile(k, d, first.owned, previous=d)
    assert [str(op) for op in repair.drift] == ["-E -u 10.0.0.1:53 -s rr", "-a -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 2"]
    assert (await _reconcile(k, d, first.owned, previous=d)).empty
    # The config drops everything: only our services go, the hand-made one stays, and there is never a flush.
    bye = await _reconcile(k, {}, first.owned, previous=d)
    assert [str(op) for op in bye.ops] == ["-D -t 10.0.0.1:80", "-D -u 10.0.0.1:53"]
    assert [s.key for s in await k.services()] == [HAND]
    assert "-C" not in k.log and not any("10.0.0.9" in line for line in k.log[2:])


_V4_SKEYS = [WEB, DNS, ServiceKey.mark(7)]
_V4_DKEYS = [RS1, RS2, RS3, SORRY]
v4_desired = st.dictionaries(
    st.sampled_from(_V4_SKEYS),
    st.builds(DesiredService, service_attrs,
              st.dictionaries(st.sampled_from(_V4_DKEYS), st.builds(DesiredDest, dest_attrs, st.sampled_from(Want)),
                              max_size=4)),
    max_size=3)


@settings(max_examples=60, deadline=None)
@given(v4_desired, v4_desired)
def test_prop_fake_kernel_moves_between_any_two_tables(before: Desired, after: Desired) -> None:
    async def go() -> None:
        k = FakeKernel()
        p1 = await _reconcile(k, before, ())
        kept = {(s.key, x.key): x.attrs for s in await k.services() for x in s.dests}
        p2 = await _reconcile(k, after, p1.owned, previous=before)
        assert p2.drift == ()
        p3 = await _reconcile(k, after, p2.owned, previous=after)
        assert p3.empty, [str(op) for op in p3.ops]
        table = {s.key: s for s in await k.services()}
        assert set(table) == set(after)  # idle dests drain at once, so retired services are gone
        for key, ds in after.items():
            got = {x.key: x.attrs for x in table[key].dests}
            serve = {dk: dd.attrs for dk, dd in ds.dests.items() if dd.want is Want.SERVE}
            keep = {dk: kept[key, dk] for dk, dd in ds.dests.items() if dd.want is Want.KEEP and (key, dk) in kept}
            assert got == serve | keep

    asyncio.run(go())


_ADDRS = st.sampled_from(["10.0.0.1", "10.0.0.10", "10.0.0.9", "2001:db8::1", "::1"])
_SKEY = st.builds(lambda a, p, port, m: ServiceKey.mark(m) if m else ServiceKey.inet(p, a, port),
                  _ADDRS, st.sampled_from([Proto.TCP, Proto.UDP]), st.sampled_from([9, 80, 443]), st.integers(0, 2))
_DKEY = st.builds(DestKey.of, _ADDRS, st.sampled_from([9, 80, 443]))  # few values: equal keys and ties are common


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 1), _SKEY, st.none() | _DKEY), max_size=30))
def test_prop_steps_sort_by_phase_then_the_keys_own_order(rows: list[tuple[int, ServiceKey, DestKey | None]]) -> None:
    """Rule 5 inside a phase: by (service, dest) as the keys' dataclass order has them (the plan sorts plain
    tuples of their fields, in C)."""
    from ipvsd.core.plan import _Step

    steps = [_Step(phase, DelService(k) if d is None else DelDest(k, d)) for phase, k, d in rows]
    want = sorted(rows, key=lambda r: (r[0], r[1], (0, r[2]) if r[2] is not None else (-1,)))
    got = [(s.phase, s.op.key if isinstance(s.op, DelService) else s.op.service,
            None if isinstance(s.op, DelService) else s.op.key) for s in sorted(steps, key=_Step.order)]
    assert got == want
