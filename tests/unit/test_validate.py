from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.overlay.vxlan.plugins.module_utils import _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError


@pytest.mark.parametrize("name", ["eth0", "a", "veth-0123456789", "x.y_z-1"])
def test_ifname_accepts(name):
    assert _validate.ifname(name, "name") == name


@pytest.mark.parametrize("name,reason", [
    ("", "non-empty"),
    ("veth-0123456789a", "at most 15"),
    ("eth 0", "whitespace"),
    ("a/b", "'/'"),
    ("a:b", "':'"),
    ("..", "'.'"),
])
def test_ifname_rejects_with_field_and_reason(name, reason):
    with pytest.raises(OverlayError) as e:
        _validate.ifname(name, "peer.name")
    assert e.value.field == "peer.name"
    assert reason in e.value.message
    assert e.value.message.startswith("peer.name: ")


@pytest.mark.parametrize("value,ok", [(68, True), (65535, True), (67, False), (65536, False), ("x", False)])
def test_mtu_range(value, ok):
    if ok:
        assert _validate.mtu(value, "mtu") == value
    else:
        with pytest.raises(OverlayError, match="^mtu: "):
            _validate.mtu(value, "mtu")


def test_mac_normalised_and_checked():
    assert _validate.mac("02-42-C0-A8-00-64", "mac") == "02:42:c0:a8:00:64"
    with pytest.raises(OverlayError, match="multicast"):
        _validate.mac("01:00:5e:00:00:01", "mac")
    with pytest.raises(OverlayError, match="all-zero"):
        _validate.mac("00:00:00:00:00:00", "mac")
    with pytest.raises(OverlayError, match="not a MAC"):
        _validate.mac("02:42:c0:a8:00", "mac")


def test_addresses_sorted_and_unique():
    got = _validate.interface_addresses(["fd00::1/64", "10.0.0.2/24", "10.0.0.1/24"], "addresses")
    assert [str(a) for a in got] == ["10.0.0.1/24", "10.0.0.2/24", "fd00::1/64"]
    with pytest.raises(OverlayError, match="listed twice"):
        _validate.interface_addresses(["10.0.0.1/24", "10.0.0.1/16"], "addresses")
    with pytest.raises(OverlayError, match="^addresses: 'bogus' is not"):
        _validate.interface_addresses(["bogus"], "addresses")


def test_subnet_rules():
    assert _validate.subnet("192.168.0.0/24", "subnet") == ipaddress.ip_network("192.168.0.0/24")
    for bad, reason in [("192.168.0.1/24", "host bits"), ("192.168.0.0/33", "not a valid"),
                        ("fd00::/64", "only IPv4"), ("10.0.0.0/31", "no room")]:
        with pytest.raises(OverlayError, match=reason):
            _validate.subnet(bad, "subnet")


def test_ipv4_in_subnet():
    net = ipaddress.ip_network("192.168.0.0/24")
    assert str(_validate.ipv4_in("192.168.0.100", net, "ip")) == "192.168.0.100"
    with pytest.raises(OverlayError, match="outside the subnet"):
        _validate.ipv4_in("192.168.1.1", net, "ip")
    with pytest.raises(OverlayError, match="broadcast"):
        _validate.ipv4_in("192.168.0.255", net, "ip")
    with pytest.raises(OverlayError, match="network address"):
        _validate.ipv4_in("192.168.0.0", net, "ip")


@pytest.mark.parametrize("name", ["demonet", "C0", "a.b-c_d"])
def test_object_names(name):
    assert _validate.object_name(name, "name") == name


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 65, None])
def test_object_names_rejected(name):
    with pytest.raises(OverlayError, match="^name: "):
        _validate.object_name(name, "name")
