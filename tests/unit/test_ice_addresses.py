"""Where ICE host candidates are bound and what they advertise (the decisions, without aioice)."""

import pytest

from sfu.rtc.ice_addresses import NetworkSettings, announces, is_ipv4, keeps_private, pinned_for, port_order


def test_a_gather_uses_the_pinned_addresses_of_the_families_it_asks_for():
    pinned = ["127.0.0.1", "::1", "10.0.0.2"]
    assert pinned_for(pinned, use_ipv4=True, use_ipv6=True) == pinned
    assert pinned_for(pinned, use_ipv4=True, use_ipv6=False) == ["127.0.0.1", "10.0.0.2"]
    assert pinned_for(pinned, use_ipv4=False, use_ipv6=True) == ["::1"]
    assert pinned_for(pinned, use_ipv4=False, use_ipv6=False) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port_min": 40000}, "port_min and port_max go together"),
        ({"port_max": 40000}, "port_min and port_max go together"),
        ({"port_min": 0, "port_max": 10}, "bad port range 0-10"),
        ({"port_min": 50000, "port_max": 40000}, "bad port range 50000-40000"),
        ({"port_min": 40000, "port_max": 65536}, "bad port range 40000-65536"),
    ],
)
def test_a_bad_port_range_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        NetworkSettings(**options)


def test_good_settings_are_kept():
    settings = NetworkSettings(40000, 40000, "192.0.2.7", True)
    assert (settings.port_min, settings.port_max, settings.announced_address, settings.keep_private_host) == (
        40000,
        40000,
        "192.0.2.7",
        True,
    )
    assert NetworkSettings() == NetworkSettings(None, None, None, False)


def test_every_port_of_the_range_is_tried_once_from_the_start_on():
    assert list(port_order(40000, 40004, 0)) == [40000, 40001, 40002, 40003, 40004]
    assert list(port_order(40000, 40004, 3)) == [40003, 40004, 40000, 40001, 40002]
    assert list(port_order(40000, 40000, 0)) == [40000]


def test_the_announced_address_replaces_host_candidates_of_its_family_only():
    assert announces("10.0.0.2", "192.0.2.7")
    assert not announces("fe80::1", "192.0.2.7")
    assert announces("fe80::1", "2001:db8::7")
    assert is_ipv4("10.0.0.2") and not is_ipv4("::1")


def test_the_private_host_candidate_is_kept_only_if_asked_and_meaningful():
    assert keeps_private("10.0.0.2", "192.0.2.7", True)
    assert not keeps_private("10.0.0.2", "192.0.2.7", False)
    assert not keeps_private("0.0.0.0", "192.0.2.7", True), "the wildcard is no address to reach"
    assert not keeps_private("192.0.2.7", "192.0.2.7", True), "the same address twice"
