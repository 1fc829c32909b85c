"""The probe plan of a reloaded configuration reuses the part of every service the reload did not touch, and is
the plan a fresh planning gives (`ipvsd.core.probes.plan_probes`)."""

from __future__ import annotations

from typing import Any

from ipvsd.config.schema import Config
from ipvsd.core.health import HealthState
from ipvsd.core.probes import health_of, plan_probes

HTTP = {"type": "http", "path": "/", "interval": 1}


def svc(vip: str, *reals: str, connect: str | None = None) -> dict[str, Any]:
    check = {**HTTP, **({"address": connect} if connect else {})}
    return {"address": vip, "port": 80, "checks": [check], "reals": [{"address": r} for r in reals]}


def test_untouched_services_keep_their_part_and_the_plan_is_a_fresh_one() -> None:
    old = Config.model_validate({"services": [svc("10.0.0.1", "10.1.0.1", "10.1.0.2"), svc("10.0.0.2", "web")]})
    names = {"web": "10.1.0.9"}
    first = plan_probes(old, resolve=lambda n: n if n[0].isdigit() else names.get(n))
    new = old.model_copy(update={"services": (old.services[0], *Config.model_validate(
        {"services": [svc("10.0.0.2", "web", "10.1.0.3")]}).services)})
    again = plan_probes(new, resolve=lambda n: n if n[0].isdigit() else names.get(n), previous=first)
    fresh = plan_probes(new, resolve=lambda n: n if n[0].isdigit() else names.get(n))
    assert again == fresh
    assert again.parts[id(new.services[0])] is first.parts[id(old.services[0])]
    assert len(again.reals) == 4


def test_a_name_that_resolves_anew_plans_its_service_again() -> None:
    config = Config.model_validate({"services": [svc("10.0.0.1", "web"), svc("10.0.0.2", "10.1.0.5", connect="db")]})
    names: dict[str, str] = {"web": "10.1.0.9", "db": "10.1.0.7"}

    def resolve(n: str) -> str | None:
        return n if n[0].isdigit() else names.get(n)

    first = plan_probes(config, resolve=resolve)
    names["web"] = "10.1.0.10"
    del names["db"]
    again = plan_probes(config, resolve=resolve, previous=first)
    assert again == plan_probes(config, resolve=resolve)
    assert [dkey.addr for _, dkey in again.reals] == ["10.1.0.10", "10.1.0.5"]
    assert list(again.down) and not list(first.down)
    names.update(web="10.1.0.10", db="10.1.0.7")
    assert plan_probes(config, resolve=resolve, previous=again) == plan_probes(config, resolve=resolve)


def test_health_is_judged_for_checked_and_plan_down_reals_only() -> None:
    config = Config.model_validate({"services": [
        svc("10.0.0.1", "10.1.0.1", "10.1.0.2"),
        {**svc("10.0.0.2", "10.1.0.3"), "checks": []},  # no checks: up, no health entry
        svc("10.0.0.3", "10.1.0.4", connect="db"),  # its check's name does not resolve: down by the plan
    ]})
    plan = plan_probes(config, resolve=lambda n: n if n[0].isdigit() else None)
    up = {k: HealthState(up=True, settled=True, streak=1, since=0.0) for k in plan.jobs}
    got = health_of(plan, up.get)
    assert {dkey.addr for _, dkey in got} == {"10.1.0.1", "10.1.0.2", "10.1.0.4"}
    assert [h.up for _, h in sorted(got.items(), key=lambda kv: kv[0][1].addr)] == [True, True, False]
    assert got[next(k for k in got if k[1].addr == "10.1.0.4")].reason.startswith("dns: db")
    # The judged reals plan_probes gathers from its parts are the ones a plan works out from its own tables.
    assert plan.judged == plan.judged_reals()
    made = type(plan)(plan.jobs, plan.reals, plan.unresolved, plan.down, plan.decides)  # without them: worked out
    assert made.judged == plan.judged
    assert {dkey.addr for _, dkey in plan.judged} == {"10.1.0.1", "10.1.0.2", "10.1.0.4"}
