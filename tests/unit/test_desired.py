"""Tests of the desired-table builder: failure modes, warmup/adopt, maintenance, fallback, quorum, fail-open."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ipvsd import kernel
from ipvsd.config.schema import Config
from ipvsd.core import desired
from ipvsd.core.desired import Built, RealState
from ipvsd.core.maintenance import MaintenanceKey
from ipvsd.core.plan import DesiredDest, Want, plan
from ipvsd.kernel.fake import FakeKernel
from ipvsd.model import Dest, DestAttrs, DestKey, Fwd, Proto, Service, ServiceAttrs, ServiceKey

WEB = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
RS = [DestKey.of(f"10.0.1.{i}", 80) for i in range(1, 6)]
SORRY = DestKey.of("10.0.9.9", 80)


@dataclass(frozen=True)
class H:
    up: bool
    settled: bool = True


def config(*, reals: int = 2, services: dict[str, Any] | None = None, **vs: Any) -> Config:
    svc = {"address": "10.0.0.1", "port": 80, "scheduler": "rr", "checks": [{"type": "tcp"}],
           "reals": [{"address": f"10.0.1.{i}", "port": 80, "forward": "route"} for i in range(1, reals + 1)], **vs}
    return Config.model_validate({"services": [svc], **(services or {})})


def build(cfg: Config, health: Mapping[int, H | bool], **kw: Any) -> Built:
    h = {(WEB, RS[i]): (v if isinstance(v, H) else H(v)) for i, v in health.items()}
    return desired.build(cfg, h, **kw)


def dests(b: Built) -> dict[str, tuple[str, int]]:
    return {d.addr: (dd.want.value, dd.attrs.weight) for d, dd in b.table[WEB].dests.items()}


def serving(n: int, *, weight: int = 1) -> list[Service]:
    return [Service(WEB, ServiceAttrs("rr"), tuple(Dest(RS[i], DestAttrs(fwd=Fwd.ROUTE, weight=weight))
                                                  for i in range(n)))]


def test_no_checks_means_always_up() -> None:
    b = desired.build(config(checks=[]), {})
    assert dests(b) == {"10.0.1.1": ("serve", 1), "10.0.1.2": ("serve", 1)}
    assert b.table[WEB].attrs == ServiceAttrs(scheduler="rr")


def test_failure_removes_by_default_and_quiesces_when_asked() -> None:
    assert dests(build(config(), {0: False, 1: True})) == {"10.0.1.1": ("absent", 1), "10.0.1.2": ("serve", 1)}
    assert dests(build(config(on_failure="quiesce"), {0: False, 1: True}))["10.0.1.1"] == ("serve", 0)
    per_real = config()
    reals = (per_real.services[0].reals[0].model_copy(update={"on_failure": "quiesce"}),
             per_real.services[0].reals[1])
    per_real = per_real.model_copy(update={"services": (per_real.services[0].model_copy(update={"reals": reals}),)})
    assert dests(build(per_real, {0: False, 1: False})) == {"10.0.1.1": ("serve", 0), "10.0.1.2": ("absent", 1)}


def test_recovery_restores_the_configured_weight() -> None:
    cfg = config(on_failure="quiesce", reals=1)
    cfg = cfg.model_copy(update={"services": (cfg.services[0].model_copy(update={"reals": (
        cfg.services[0].reals[0].model_copy(update={"weight": 5}),)}),)})
    assert dests(build(cfg, {0: False})) == {"10.0.1.1": ("serve", 0)}
    assert dests(build(cfg, {0: True})) == {"10.0.1.1": ("serve", 5)}


def test_unchecked_real_with_alpha_starts_down() -> None:
    b = build(config(), {0: H(up=True, settled=False)})  # alpha is ipvsd's default
    assert dests(b) == {"10.0.1.1": ("absent", 1), "10.0.1.2": ("absent", 1)}


def test_unchecked_real_with_alpha_that_the_kernel_serves_is_adopted_not_removed() -> None:
    # a restart: the kernel serves both reals, no check has run yet
    cfg = config(fallback={"address": "10.0.9.9"})
    b = build(cfg, {0: H(up=True, settled=False)}, observed=serving(2))
    assert dests(b) == {"10.0.1.1": ("keep", 1), "10.0.1.2": ("keep", 1)}
    assert b.quorum == {WEB: True}  # so no sorry server either
    assert plan(b.table, serving(2), owned=(WEB,), limits=desired.limits(cfg), now=0, drains={}).empty
    # one the kernel has at weight 0 (quiesced before the restart) stays down until checked
    assert dests(build(cfg, {}, observed=serving(2, weight=0)))["10.0.1.1"] == ("absent", 1)


def test_unchecked_real_without_alpha_keeps_the_kernel_state_and_quorum() -> None:
    cfg = config(checks=[{"type": "tcp", "alpha": False}], fallback={"address": "10.0.9.9"})
    b = build(cfg, {}, observed=serving(2))
    assert dests(b) == {"10.0.1.1": ("keep", 1), "10.0.1.2": ("keep", 1)}  # no sorry server on a restart
    assert b.reals[(WEB, RS[0])] is RealState.UNKNOWN and b.quorum == {WEB: True}
    # Nothing moves in the kernel: adopted as it is.
    assert plan(b.table, serving(2), owned=(), limits=desired.limits(cfg), now=0, drains={}).empty


def test_maintenance_drains_by_address_port_or_service() -> None:
    for entry in (MaintenanceKey("10.0.1.1"), MaintenanceKey("10.0.1.1", 80), MaintenanceKey("10.0.1.1", 0, WEB)):
        b = build(config(), {0: True, 1: True}, maintenance=[entry])
        assert dests(b)["10.0.1.1"] == ("drain", 0), entry
        assert b.reals[(WEB, RS[0])] is RealState.MAINT
    other = ServiceKey.inet(Proto.TCP, "10.0.0.2", 80)
    for entry in (MaintenanceKey("10.0.1.1", 443), MaintenanceKey("10.0.1.1", 0, other)):
        assert dests(build(config(), {0: True, 1: True}, maintenance=[entry]))["10.0.1.1"] == ("serve", 1)


def test_fallback_goes_in_when_no_real_is_up_and_leaves_when_one_is_back() -> None:
    cfg = config(fallback={"address": "10.0.9.9"})
    down = build(cfg, {0: False, 1: False})
    assert dests(down)["10.0.9.9"] == ("serve", 1) and down.quorum == {WEB: False}
    up = build(cfg, {0: True, 1: False}, quorum=down.quorum)
    assert "10.0.9.9" not in dests(up)  # absent: the planner drains it out
    inhibit = config(fallback={"address": "10.0.9.9", "inhibit": True})
    assert dests(build(inhibit, {0: True, 1: True}))["10.0.9.9"] == ("serve", 0)


def test_quorum_with_hysteresis_as_keepalived() -> None:
    cfg = config(reals=5, quorum=3, hysteresis=1, fallback={"address": "10.0.9.9"})
    q = build(cfg, dict.fromkeys(range(5), True)).quorum  # 5 >= 3+1: gained
    assert q == {WEB: True}
    for ups, expect in ((3, True), (2, True), (1, False), (3, False), (4, True)):
        b = build(cfg, {i: i < ups for i in range(5)}, quorum=q)
        q = b.quorum
        assert q == {WEB: expect}, ups
        assert ("10.0.9.9" in dests(b)) is not expect
    # Without quorum the alive reals leave while the sorry server is in (keepalived removes them).
    lost = build(cfg, {0: True, 1: False, 2: False, 3: False, 4: False}, quorum={WEB: False})
    assert dests(lost)["10.0.1.1"] == ("absent", 1)


def test_quorum_without_fallback_changes_nothing_in_the_table() -> None:
    cfg = config(reals=3, quorum=3)
    b = build(cfg, {0: True, 1: False, 2: False})
    assert b.quorum == {WEB: False} and dests(b)["10.0.1.1"] == ("serve", 1)


def test_fail_open_keeps_every_real_in_when_too_many_fail() -> None:
    cfg = config(reals=4, services={"settings": {"limits": {"panic_fraction": 0.5}}})
    b = build(cfg, {0: False, 1: False, 2: False, 3: True})
    assert b.fail_open == {WEB}
    assert {v for v in dests(b).values()} == {("serve", 1)}
    half = build(cfg, {0: False, 1: False, 2: True, 3: True})
    assert half.fail_open == frozenset() and dests(half)["10.0.1.1"] == ("absent", 1)


def test_hostname_reals_use_the_resolution_given() -> None:
    cfg = config(checks=[], reals=0)
    cfg = cfg.model_copy(update={"services": (cfg.services[0].model_copy(update={"reals": (
        Config.model_validate({"services": [{"address": "10.0.0.1", "port": 80, "reals": [
            {"address": "web1.example", "port": 80}]}]}).services[0].reals)}),)})
    assert dests(desired.build(cfg, {}, resolved={"web1.example": "10.0.1.7"})) == {"10.0.1.7": ("serve", 1)}
    assert dests(desired.build(cfg, {})) == {}


def test_limits_come_from_settings() -> None:
    cfg = config(services={"settings": {"drain_timeout": 30, "limits": {"max_delete_fraction": 0.25,
                                                                          "max_deletes": 7}}})
    lim = desired.limits(cfg, force=True)
    assert (lim.max_delete_share, lim.max_deletes, lim.drain_timeout, lim.force) == (0.25, 7, 30.0, True)


def test_drain_timeout_per_service() -> None:
    assert desired.build(config(drain_timeout=12), {}).table[WEB].drain_timeout == 12


def _apply(k: FakeKernel, b: Built, cfg: Config) -> list[Service]:
    async def go() -> list[Service]:
        p = plan(b.table, await k.services(), owned=(), limits=desired.limits(cfg), now=0, drains={})
        for op in p.ops:
            await kernel.apply(k, op)
        return await k.services()

    return asyncio.run(go())


def test_build_then_plan_end_to_end() -> None:
    cfg = config(on_failure="quiesce", fallback={"address": "10.0.9.9"})
    k = FakeKernel()
    table = _apply(k, build(cfg, {0: True, 1: True}), cfg)
    assert {d.key: d.attrs.weight for d in table[0].dests} == {RS[0]: 1, RS[1]: 1}
    table = _apply(k, build(cfg, {0: False, 1: False}), cfg)
    assert {d.key: d.attrs.weight for d in table[0].dests} == {RS[0]: 0, RS[1]: 0, SORRY: 1}
    table = _apply(k, build(cfg, {0: True, 1: False}, quorum={WEB: False}), cfg)
    assert {d.key: d.attrs.weight for d in table[0].dests} == {RS[0]: 1, RS[1]: 0}  # idle sorry server deleted
    assert build(cfg, {0: True, 1: False}).table[WEB].dests[RS[1]] == DesiredDest(
        DestAttrs(fwd=Fwd.ROUTE, weight=0), Want.SERVE)
