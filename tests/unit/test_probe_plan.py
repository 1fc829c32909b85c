"""The probe plan of a reloaded configuration reuses the part of every service the reload did not touch, and is
the plan a fresh planning gives (`ipvsd.core.probes.plan_probes`)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsd.config.schema import Config
from ipvsd.core.health import HealthState
from ipvsd.core.probes import ProbePlan, health_of, patches, plan_probes
from ipvsd.shell.resolver import names_of

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


# --- a reload's plan patched into a copy of the last one: the same plan as planning the whole configuration ----

_REALS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "web", "db")
_CHECKS: tuple[list[dict[str, Any]], ...] = (
    [], [HTTP], [{**HTTP, "interval": 2}], [{"type": "tcp", "interval": 1}],
    [{**HTTP, "address": "db"}], [HTTP, {"type": "tcp", "interval": 1, "port": 81}],
)


def _service(vip: int, reals: list[int], checks: int) -> dict[str, Any]:
    return {"address": f"10.0.0.{vip}", "port": 80, "checks": _CHECKS[checks],
            "reals": [{"address": _REALS[r]} for r in reals]}


_SERVICE = st.tuples(st.lists(st.integers(0, len(_REALS) - 1), max_size=4, unique=True),
                     st.integers(0, len(_CHECKS) - 1))
_EDIT = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 20), _SERVICE),
    st.tuples(st.just("swap"), st.integers(0, 20), st.integers(0, 20)),
    st.tuples(st.just("add"), st.integers(0, 20), _SERVICE),
    st.tuples(st.just("drop"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("names"), st.sampled_from(["web", "db"]), st.sampled_from([None, "10.1.0.8", "10.1.0.9"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SERVICE, min_size=1, max_size=12), st.lists(st.lists(_EDIT, min_size=1, max_size=3), max_size=6))
def test_a_patched_plan_is_the_whole_planning(first: list[tuple[list[int], int]],
                                             rounds: list[list[tuple[Any, ...]]]) -> None:
    names: dict[str, str | None] = {"web": "10.1.0.9", "db": "10.1.0.7"}

    def resolve(n: str) -> str | None:
        return n if n[0].isdigit() else names.get(n)

    vips = iter(range(1, 10_000))
    config = Config.model_validate({"services": [_service(next(vips), r, c) for r, c in first]})
    plan = plan_probes(config, resolve=resolve)
    for edits in rounds:
        services = list(config.services)
        for kind, a, b in edits:
            if kind == "names":
                names[a] = b
            elif kind == "swap" and services:
                i, j = a % len(services), b % len(services)
                services[i], services[j] = services[j], services[i]
            elif kind == "drop" and len(services) > 1:
                del services[a % len(services)]
            elif kind in ("replace", "add"):
                made = Config.model_validate({"services": [_service(next(vips), *b)]}).services[0]
                if kind == "add" or not services:
                    services.insert(a % (len(services) + 1), made)
                else:
                    services[a % len(services)] = made
        config = config.model_copy(update={"services": tuple(services)})
        # the names a reload asks for, found through the running plan's parts (a changed service has none)
        assert list(names_of(config, plan).items()) == list(names_of(config).items())
        again = plan_probes(config, resolve=resolve, previous=plan)
        whole = plan_probes(config, resolve=resolve)
        assert again == whole  # jobs (each probe's check, timing included), reals, unresolved, down, decides
        assert again.judged == whole.judged and again.asking == whole.asking and again.shared == whole.shared
        assert list(again.parts) == list(whole.parts)
        plan = again


def test_a_reload_that_changed_one_service_patches_the_plan() -> None:
    config = Config.model_validate({"services": [svc(f"10.0.0.{i}", f"10.1.0.{i}") for i in range(1, 20)]})
    first = plan_probes(config)
    edited = config.model_copy(update={"services": (
        *config.services[:5], Config.model_validate({"services": [svc("10.0.0.6", "10.1.0.66")]}).services[0],
        *config.services[6:])})
    again = plan_probes(edited, previous=first)
    assert again == plan_probes(edited)
    # the patch: the changed service's keys last; the whole planning would keep the configuration's order
    assert [dkey.addr for _, dkey in again.reals][-1] == "10.1.0.66"
    assert plan_probes(edited, previous=again) is again  # nothing changed since: the same plan


def test_patches_says_whether_a_reload_patches_the_plan_or_plans_it_whole() -> None:
    """What the daemon asks to prepare a reload on the loop (a patch) rather than in a thread (the whole)."""
    config = Config.model_validate({"services": [svc(f"10.0.0.{i}", f"10.1.0.{i}") for i in range(1, 20)]})
    first = plan_probes(config)
    other = Config.model_validate({"services": [svc(f"10.0.0.{i}", f"10.1.1.{i}") for i in range(1, 20)]})

    def edited(n: int) -> Config:  # the first n services replaced by other objects
        return config.model_copy(update={"services": (*other.services[:n], *config.services[n:])})

    assert patches(config, first) and patches(edited(1), first) and patches(edited(8), first)
    assert not patches(edited(9), first)  # more than PATCH_SHARE of 19, and more than 1/8 of them
    assert not patches(config.model_copy(update={"services": config.services[1:]}), first)  # one dropped
    assert not patches(config, None) and not patches(config, ProbePlan.empty())
