"""VIP roles from observed addresses: the held rule (not on lo, interface up, address usable), the VIP set from
the config, and the changes with their times and words (the alerts on ipvsd_vip_held: test_metrics)."""

from __future__ import annotations

from ipvsd.config.schema import Config
from ipvsd.core import roles
from ipvsd.core.roles import Address, Link, Observed, RoleChange, VipRole

LO = Link(1, "lo", up=True, loopback=True)
ETH0 = Link(2, "eth0", up=True, loopback=False)
ETH1 = Link(3, "eth1", up=True, loopback=False)
LINKS = {1: LO, 2: ETH0, 3: ETH1}
VIP = "10.2.0.254"


def seen(*addresses: Address, links: dict[int, Link] | None = None) -> Observed:
    return Observed(LINKS if links is None else links, frozenset(addresses))


def test_direct_routing_vip_on_lo_everywhere_is_held_only_where_it_is_also_on_ethernet() -> None:
    backup = seen(Address(1, VIP, 32), Address(2, "10.2.0.240", 24))
    master = seen(Address(1, VIP, 32), Address(2, "10.2.0.240", 24), Address(2, VIP, 32))
    assert roles.holders([VIP], backup) == {VIP: ()}
    assert roles.holders([VIP], master) == {VIP: ("eth0",)}


def test_an_interface_that_is_down_or_an_unusable_address_does_not_hold() -> None:
    down = {**LINKS, 2: Link(2, "eth0", up=False, loopback=False)}
    assert roles.holders([VIP], seen(Address(2, VIP, 32), links=down)) == {VIP: ()}
    assert roles.holders(["fd00::254"], seen(Address(2, "fd00::254", 128, usable=False))) == {"fd00::254": ()}
    assert roles.holders([VIP], seen(Address(9, VIP, 32))) == {VIP: ()}  # an interface not (yet) seen
    both = seen(Address(3, VIP, 32), Address(2, VIP, 24), Address(1, VIP, 32))
    assert roles.holders([VIP], both) == {VIP: ("eth0", "eth1")}


def test_vips_are_the_address_services_and_settings_vips() -> None:
    config = Config.model_validate({
        "settings": {"vips": ["10.2.0.253", "fd00:0:0::1"]},
        "services": [{"address": VIP, "port": 80, "reals": [{"address": "10.2.1.1"}]},
                     {"address": VIP, "port": 443, "reals": [{"address": "10.2.1.1"}]},
                     {"fwmark": 22, "reals": [{"address": "10.2.1.1", "port": 22}]}]})
    assert roles.vips_of(config) == {VIP, "10.2.0.253", "fd00::1"}


def test_update_reports_first_readings_changes_and_moves_and_keeps_since_across_a_move() -> None:
    vips = [VIP, "10.2.0.253"]
    first, changes = roles.update({}, vips, seen(Address(1, VIP, 32)), now=100.0)
    assert first == {VIP: VipRole(VIP, False, (), 100.0), "10.2.0.253": VipRole("10.2.0.253", False, (), 100.0)}
    assert [(c.vip, c.held, c.was) for c in changes] == [("10.2.0.253", False, None), (VIP, False, None)]

    again, changes = roles.update(first, vips, seen(Address(1, VIP, 32)), now=101.0)
    assert again == first and changes == ()

    took, changes = roles.update(first, vips, seen(Address(1, VIP, 32), Address(2, VIP, 32)), now=102.0)
    assert took[VIP] == VipRole(VIP, True, ("eth0",), 102.0)
    assert changes == (RoleChange(VIP, True, ("eth0",), first[VIP]),)
    assert changes[0].describe() == "10.2.0.254 is now held by this director (on eth0)"

    moved, changes = roles.update(took, vips, seen(Address(3, VIP, 32)), now=103.0)
    assert moved[VIP] == VipRole(VIP, True, ("eth1",), 102.0)  # still held: since stays
    assert changes[0].describe() == "10.2.0.254 is held by this director on other interfaces now (on eth1)"

    lost, changes = roles.update(moved, vips, seen(), now=104.0)
    assert lost[VIP] == VipRole(VIP, False, (), 104.0)
    assert changes[0].describe() == "10.2.0.254 is no longer held by this director (it was on eth1)"


def test_a_vip_dropped_from_the_config_goes_without_a_change_and_an_added_one_is_a_first_reading() -> None:
    now = seen(Address(2, VIP, 32))
    before, _ = roles.update({}, [VIP, "10.2.0.253"], now, now=1.0)
    after, changes = roles.update(before, [VIP, "10.2.0.252"], now, now=2.0)
    assert set(after) == {VIP, "10.2.0.252"}
    assert [(c.vip, c.was) for c in changes] == [("10.2.0.252", None)]
    assert changes[0].describe() == "10.2.0.252 is not held by this director"


def test_summary_names_the_held_vips_and_counts_the_others() -> None:
    got, _ = roles.update({}, ["fd00::1", VIP, "10.2.0.9"], seen(Address(2, VIP, 32), Address(2, "fd00::1", 64)),
                          now=1.0)
    assert roles.summary(got.values()) == ("this director holds 2 of its 3 VIPs: 10.2.0.254 (on eth0), "
                                           "fd00::1 (on eth0)")
    assert roles.summary([]) == "no VIPs to watch"
    assert roles.summary([VipRole(VIP, False, (), 1.0)]) == "this director holds none of its 1 VIPs"
    assert roles.canonical("FD00:0::1%eth0") == "fd00::1"

