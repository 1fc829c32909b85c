"""The model's own rules and its translation into kernel keys and attributes."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import BaseModel, ValidationError

from ipvsd import model
from ipvsd.config.schema import Config, HttpCheck, RealServer, VirtualService, _Frozen


def svc(**kw: object) -> VirtualService:
    return VirtualService.model_validate({"address": "10.0.0.1", "port": 80, **kw})


def test_service_key_and_attrs_for_an_inet_service() -> None:
    s = svc(protocol="udp", scheduler="sh", sched_flags="sh-port,sh-fallback", ops=True,
            persistence={"timeout": 600, "netmask": 24})
    assert s.service_key() == model.ServiceKey.inet(model.Proto.UDP, "10.0.0.1", 80)
    attrs = s.service_attrs()
    assert attrs.flags == (model.SvcFlag.SCHED1 | model.SvcFlag.SCHED2 | model.SvcFlag.ONEPACKET
                           | model.SvcFlag.PERSISTENT)
    assert (attrs.timeout, attrs.netmask) == (600, 0xFFFFFF00)
    assert attrs.notation(s.af) == "-s sh -b flag-1,flag-2 -p 600 -M 255.255.255.0 -o"


def test_netmask_defaults_to_one_client_per_family() -> None:
    assert svc().service_attrs().netmask == model.full_netmask(model.AF_INET)
    v6 = VirtualService(address="2001:db8::1", port=80, persistence={"timeout": 5})  # type: ignore[arg-type]
    assert v6.service_attrs().netmask == 128
    v6m = VirtualService(address="2001:db8::1", port=80, persistence={"netmask": "/64"})  # type: ignore[arg-type]
    assert v6m.service_attrs().netmask == 64
    assert v6m.service_attrs().timeout == 300


def test_fwmark_service_key_carries_the_family() -> None:
    s = VirtualService(fwmark=7, family="inet6")
    assert s.service_key() == model.ServiceKey.mark(7, model.AF_INET6)
    assert str(s.service_key()) == "-f 7 -6"


def test_dest_attrs_map_forwarding_weight_thresholds_and_tunnel() -> None:
    r = RealServer.model_validate({"address": "10.0.1.1", "port": 80, "forward": "tun", "weight": 4,
                                   "u_threshold": 9, "l_threshold": 2,
                                   "tunnel": {"type": "gue", "port": 5555, "csum": "remcsum"}})
    a = r.dest_attrs()
    assert (a.fwd, a.weight, a.u_thresh, a.l_thresh) == (model.Fwd.TUNNEL, 4, 9, 2)
    assert (a.tun_type, a.tun_port, a.tun_flags) == (model.TunType.GUE, 5555, model.TunFlags.REMCSUM)
    assert r.dest_attrs(weight=0).weight == 0
    assert RealServer(address="10.0.1.1", forward="gate").dest_attrs().fwd == model.Fwd.ROUTE  # type: ignore[arg-type]


def test_hostname_reals_are_kept_and_keyed_by_their_resolved_address() -> None:
    r = RealServer(address="Web1.Example.com", port=80)
    assert r.address == "web1.example.com"
    assert r.dest_key("10.0.1.9") == model.DestKey.of("10.0.1.9", 80)


@pytest.mark.parametrize("bad", ["1.2.3", "a..b", "-x", "10.0.0.256", "x" * 64])
def test_invalid_real_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        RealServer(address=bad)


def test_status_ranges_parse_and_match() -> None:
    c = HttpCheck.model_validate({"type": "http", "expect_status": [200, "204", "300-302"], "path": "x"})
    assert c.path == "/x"
    assert [c.accepts(s) for s in (200, 204, 301, 299, 404)] == [True, True, True, False, False]
    assert c.model_dump(mode="json")["expect_status"] == ["200", "204", "300-302"]
    with pytest.raises(ValidationError):
        HttpCheck.model_validate({"type": "http", "expect_status": "302-300"})


def test_real_checks_and_failure_policy_inherit_from_the_service() -> None:
    s = svc(checks=[{"type": "tcp"}], on_failure="quiesce",
            reals=[{"address": "10.0.1.1", "port": 80}, {"address": "10.0.1.2", "port": 80, "checks": [],
                                                            "on_failure": "remove"}])
    a, b = s.reals
    assert [c.type for c in s.checks_for(a)] == ["tcp"] and s.checks_for(b) == ()
    assert (s.on_failure_for(a), s.on_failure_for(b)) == ("quiesce", "remove")


def test_fallback_takes_the_service_port() -> None:
    s = svc(fallback={"address": "127.0.0.1"})
    assert s.fallback_dest() == (model.DestKey.of("127.0.0.1", 80), model.DestAttrs(fwd=model.Fwd.ROUTE, weight=1))


@pytest.mark.parametrize("data", [
    {"address": "10.0.0.1"},                       # no port
    {"fwmark": 1, "address": "10.0.0.1", "port": 80},
    {"address": "10.0.0.1", "port": 80, "ops": True},
    {"address": "10.0.0.1", "port": 80, "scheduler": "Round Robin"},
    {"address": "10.0.0.1", "port": 80, "sched_flags": ["flag-9"]},
    {"address": "10.0.0.1", "port": 80, "reals": [{"address": "10.0.1.1", "forward": "masq",
                                                   "tunnel": {"type": "gre"}}]},
])
def test_invalid_services_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VirtualService.model_validate(data)


@pytest.mark.parametrize(("written", "forward"), [("masq", "masq"), ("NAT", "masq"), ("Masq", "masq"), ("m", "masq"),
                                                  ("DR", "route"), ("gate", "route"), ("Direct", "route"),
                                                  ("TUN", "tunnel"), ("ipip", "tunnel")])
def test_forwarding_is_read_in_any_of_its_names_and_cases(written: str, forward: str) -> None:
    assert svc(reals=[{"address": "10.0.1.1", "forward": written}]).reals[0].forward == forward


@pytest.mark.parametrize("scheduler", ["wlc", "mh", "twos", "my_sched2"])
def test_a_scheduler_name_the_kernel_could_load_is_taken(scheduler: str) -> None:
    assert svc(scheduler=scheduler).scheduler == scheduler


def test_a_real_written_twice_is_found_wherever_it_is() -> None:
    reals = [{"address": f"10.0.1.{i}", "port": 80} for i in range(1, 6)]
    assert len(svc(reals=reals).reals) == 5
    with pytest.raises(ValidationError, match=r"real 10\.0\.1\.2:80 appears twice"):
        svc(reals=[*reals, {"address": "10.0.1.2", "port": 80}])
    assert len(svc(reals=[*reals, {"address": "10.0.1.2", "port": 81}]).reals) == 6


def test_models_are_frozen_and_hashable() -> None:
    c = Config.model_validate({"services": [{"address": "10.0.0.1", "port": 80, "checks": [{"type": "tcp"}]}]})
    with pytest.raises(ValidationError):
        c.services[0].port = 81
    assert hash(c.services[0].checks[0]) == hash(c.services[0].checks[0].model_copy())


def _models(cls: type[BaseModel] = _Frozen) -> list[type[BaseModel]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_models(sub)]
    return out


REQUIRED = {"address": "192.0.2.1", "command": "/bin/true", "interface": "eth0", "table": 100}
IDENTITY = {"VirtualService": {"fwmark": 1}}  # required by a model validator, not by a field


@pytest.mark.parametrize("cls", _models(), ids=lambda c: c.__name__)
def test_defaults_are_what_validation_makes_of_them(cls: type[BaseModel]) -> None:
    # The models do not validate their defaults (validate_default costs a third of validating a large
    # config): every default must already be in the form validation would give it.
    checked = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "validate_default": True}})
    data: dict[str, object] = dict(IDENTITY.get(cls.__name__, {}))
    for name, field in cls.model_fields.items():
        if field.is_required():
            data[name] = get_args(field.annotation)[0] if name == "type" else REQUIRED[name]
    plain, strict = cls.model_validate(data), checked.model_validate(data)
    for name in cls.model_fields:
        a, b = getattr(plain, name), getattr(strict, name)
        assert (a, type(a)) == (b, type(b)), f"{cls.__name__}.{name}: default {a!r}, validated {b!r}"


def test_a_reals_kernel_key_and_attributes_are_made_once_and_a_copy_does_not_inherit_them() -> None:
    import copy

    from ipvsd.config.schema import RealServer

    real = RealServer(address="10.0.0.1", port=80, weight=2)
    assert real.dest_key() is real.dest_key("10.0.0.1") and real.dest_attrs() is real.dest_attrs(2)
    assert real.dest_attrs(0).weight == 0 and real.dest_key("10.0.0.9").addr == "10.0.0.9"
    assert real == RealServer(address="10.0.0.1", port=80, weight=2)  # the caches are not fields
    assert hash(real) == hash(RealServer(address="10.0.0.1", port=80, weight=2))
    assert real.model_copy(update={"weight": 5}).dest_attrs().weight == 5
    assert real.model_copy(update={"port": 81}, deep=True).dest_key().port == 81
    assert copy.copy(real).dest_attrs() == real.dest_attrs()


def test_the_services_that_ramp_are_found_once_and_a_copy_finds_its_own() -> None:
    from ipvsd.config.schema import Config

    config = Config.model_validate({"services": [
        {"address": "10.0.0.1", "port": 80, "reals": [{"address": "10.0.1.1", "port": 80, "slow_start": 30}]},
        {"address": "10.0.0.2", "port": 80, "reals": [{"address": "10.0.1.2", "port": 80}]}]})
    assert [vs.address for vs in config.slow_starting] == ["10.0.0.1"]
    assert config.slow_starting is config.slow_starting
    assert config.model_copy(update={"services": config.services[1:]}).slow_starting == ()
    assert config == Config.model_validate(config.model_dump())  # the cache is not a field


def test_a_service_has_one_key_object_and_a_copy_makes_its_own() -> None:
    """Every pass looks services up by key: the same object spares the comparison of fields."""
    from ipvsd.config.schema import Config

    vs = Config.model_validate({"services": [{"address": "10.0.0.1", "port": 80}]}).services[0]
    assert vs.service_key() is vs.service_key()
    assert vs.model_copy(update={"port": 81}).service_key().port == 81


def test_every_check_of_a_service_is_its_own_and_its_reals_once_each() -> None:
    from ipvsd.config.schema import Config

    vs = Config.model_validate({"services": [{
        "address": "10.0.0.1", "port": 80, "checks": [{"type": "tcp"}],
        "reals": [{"address": "10.0.1.1", "checks": [{"type": "http", "path": "/a"}]},
                  {"address": "10.0.1.2"}, {"address": "10.0.1.3", "checks": [{"type": "http", "path": "/a"}]}],
    }]}).services[0]
    assert [c.type for c in vs.every_check] == ["tcp", "http", "http"]  # the reals' checks are two models here
    assert vs.model_copy(update={"reals": vs.reals[1:2]}).every_check == vs.checks
