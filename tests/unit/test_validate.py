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


# -- issue 12 section 7: one pattern for every Consul key segment -----------------------------

HOSTILE_SEGMENTS = ["../networks/VICTIM", "a/b", "a b", "a%2Fb", "..", ".", "na\u00efve", "\u0430bc", "x" * 65,
                    "x" * 255, "V0\n", "\nV0", "V0\r", "", " lead", "trail ", "tab\tbed", "nul\x00", "-x", "_x",
                    None, 7, True, ["a"]]


@pytest.mark.parametrize("value", ["demonet", "C0", "a", "x" * 64, "a.b_c-d", "0abc", "6e24ab01cd23"])
def test_key_segment_accepts(value):
    assert _validate.key_segment(value, "name") == value
    assert _validate.object_name(value, "name") == value


@pytest.mark.parametrize("value", HOSTILE_SEGMENTS)
def test_key_segment_refuses_naming_the_option(value):
    with pytest.raises(OverlayError) as e:
        _validate.key_segment(value, "endpoints[2].name")
    assert e.value.field == "endpoints[2].name"
    assert e.value.message.startswith("endpoints[2].name: %r is not a valid name" % (value,))


@pytest.mark.parametrize("value", ["docker0", "a", "host-1.lab.example", "0x", "a" * 63, "a.b.c"])
def test_host_name_accepts(value):
    assert _validate.host_name(value, "host") == value


@pytest.mark.parametrize("value", HOSTILE_SEGMENTS + ["a_b", "-docker0", "docker0-", "docker0..lab", "docker0.",
                                                      ".docker0", "a" * 64 + ".b", "a" * 65])
def test_host_name_refuses(value):
    with pytest.raises(OverlayError) as e:
        _validate.host_name(value, "host")
    assert e.value.field == "host"
    assert "is not a valid host name" in e.value.message


def test_default_host_name_is_checked_too(monkeypatch):
    from ansible_collections.overlay.vxlan.plugins.module_utils import _underlay
    monkeypatch.setattr(_underlay.socket, "gethostname", lambda: "bad/host")
    with pytest.raises(OverlayError) as e:
        _underlay.host_name({"host": None})
    assert e.value.field == "host"
    assert "this machine's name 'bad/host' is not a valid host name" in e.value.message
    assert "set host" in e.value.message
    monkeypatch.setattr(_underlay.socket, "gethostname", lambda: "docker7")
    assert _underlay.host_name({"host": None}) == "docker7"
    assert _underlay.host_name({"host": "docker0"}) == "docker0"
    with pytest.raises(OverlayError, match="^host: '' is not a valid host name"):
        _underlay.host_name({"host": ""})


@pytest.mark.parametrize("value,want", [(None, "overlay"), ("overlay", "overlay"), ("/rt/", "rt"),
                                        ("rt/x1/v.2", "rt/x1/v.2")])
def test_consul_prefix_accepts(value, want):
    assert _validate.consul_prefix(value) == want


@pytest.mark.parametrize("value,reason", [
    ("rt/../rt2", "segment '..' of 'rt/../rt2'"), ("rt/.", "segment '.'"), ("//", "must not be empty"),
    ("", "must not be empty"), ("rt//x", "segment ''"), ("rt/a b", "segment 'a b'"), ("rt%2Fx", "segment 'rt%2Fx'"),
    ("overlay\n", "segment 'overlay\\n'"), (" overlay", "segment ' overlay'"), ("r\u00e9seau", "segment"),
    ("x" * 65, "segment"), (5, "is not a string"),
])
def test_consul_prefix_refuses(value, reason):
    with pytest.raises(OverlayError) as e:
        _validate.consul_prefix(value, "consul_prefix")
    assert e.value.field == "consul_prefix"
    assert reason in e.value.message


def test_connection_settings_checks_the_prefix():
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul
    assert _consul.connection_settings({"consul_prefix": "rt/x"}, environ={})["prefix"] == "rt/x"
    with pytest.raises(OverlayError, match="^consul_prefix: segment '..'"):
        _consul.connection_settings({"consul_prefix": "rt/../rt2"}, environ={})


# -- values are refused, not stripped -------------------------------------------------------------

@pytest.mark.parametrize("check,args", [
    (_validate.subnet, ("10.9.0.0/24\n", "subnet")),
    (_validate.overlay_subnet, (" 10.9.0.0/24", "subnet")),
    (_validate.ipv4_in, ("10.9.0.5\n", ipaddress.ip_network("10.9.0.0/24"), "ip")),
    (_validate.mac, ("02:42:0a:09:00:05\n", "mac")),
    (_validate.interface_address, ("10.9.0.5/24\n", "addresses")),
    (_validate.no_space, ("e1\n", "namespace")),
])
def test_trailing_newline_is_refused_naming_the_option(check, args):
    with pytest.raises(OverlayError) as e:
        check(*args)
    assert e.value.field == args[-1]
    assert "contains whitespace or a control character" in e.value.message


@pytest.mark.parametrize("value", ["eth0\n", "eth\x000", "eth\x7f"])
def test_ifname_refuses_control_characters(value):
    with pytest.raises(OverlayError, match="^ifname: interface name"):
        _validate.ifname(value, "ifname")


# -- subnets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["10.9.0.0/24", "192.168.0.0/24", "172.16.0.0/12", "100.64.0.0/10", "1.0.0.0/8"])
def test_overlay_subnet_accepts(value):
    assert str(_validate.overlay_subnet(value, "subnet")) == value


@pytest.mark.parametrize("value,reason", [
    ("0.0.0.0/0", "is every IPv4 address"), ("0.0.0.0/8", "is 'this network'"), ("0.0.0.0/1", "contains"),
    ("127.0.0.0/8", "is loopback"), ("127.1.0.0/24", "is loopback"), ("126.0.0.0/7", "contains the loopback"),
    ("169.254.0.0/16", "is link-local"), ("169.254.5.0/24", "is link-local"),
    ("169.0.0.0/8", "contains the link-local"),
    ("224.0.0.0/4", "is multicast"), ("224.0.0.0/24", "is multicast"), ("239.255.0.0/16", "is multicast"),
    ("240.0.0.0/4", "is reserved"), ("240.0.0.0/24", "is reserved"), ("255.255.255.0/24", "is reserved"),
    ("192.0.0.0/2", "contains the multicast"),
])
def test_overlay_subnet_refuses_special_ranges_with_the_reason(value, reason):
    with pytest.raises(OverlayError) as e:
        _validate.overlay_subnet(value, "subnet")
    assert e.value.field == "subnet"
    assert e.value.message.startswith("subnet: %s " % value)
    assert reason in e.value.message


@pytest.mark.parametrize("net,other,relation", [
    ("10.0.0.0/8", "10.0.0.0/24", "contains"), ("10.0.0.128/25", "10.0.0.0/24", "is inside"),
    ("10.0.0.0/24", "10.0.0.0/24", "is"), ("172.18.5.0/24", "172.18.0.0/16", "is inside"),
])
def test_no_overlap_refuses(net, other, relation):
    with pytest.raises(OverlayError) as e:
        _validate.no_overlap(ipaddress.ip_network(net), other, "subnet", "the underlay network %s of eth0" % other)
    assert e.value.message == "subnet: %s %s the underlay network %s of eth0; the two must not overlap" % (
        net, relation, other)


def test_no_overlap_accepts_disjoint_and_unknown():
    assert str(_validate.no_overlap("10.9.0.0/24", "10.0.0.0/24", "subnet", "x")) == "10.9.0.0/24"
    assert _validate.no_overlap("10.9.0.0/24", None, "subnet", "x") == "10.9.0.0/24"


def test_network_request_refuses_the_gateway_subnet_unless_internal():
    from ansible_collections.overlay.vxlan.plugins.module_utils import _network
    params = {"name": "n1", "state": "present", "subnet": "172.18.5.0/24"}
    with pytest.raises(OverlayError, match="^subnet: 172.18.5.0/24 is inside the gateway subnet 172.18.0.0/16"):
        _network.Request(params)
    assert str(_network.Request(dict(params, internal=True)).subnet) == "172.18.5.0/24"


# -- booleans are not integers --------------------------------------------------------------------

@pytest.mark.parametrize("option,value", [("vni", True), ("port", True), ("mtu", False), ("mtu", True),
                                          ("vni", False)])
def test_network_request_refuses_booleans(option, value):
    from ansible_collections.overlay.vxlan.plugins.module_utils import _network
    with pytest.raises(OverlayError) as e:
        _network.Request({"name": "n1", "state": "present", "subnet": "10.9.0.0/24", option: value})
    assert e.value.message == "%s: %r is a boolean, not an integer" % (option, value)


def test_gateway_pool_exhausted_names_gateway_subnet():
    from ansible_collections.overlay.vxlan.plugins.module_utils import _allocate
    with pytest.raises(OverlayError) as e:
        _allocate.free_addresses("172.30.0.0/30", {"172.30.0.1"}, 2, field="gateway_subnet")
    assert e.value.field == "gateway_subnet"
    with pytest.raises(OverlayError) as e:
        _allocate.free_addresses("172.30.0.0/30", {"172.30.0.1"}, 2, randomize=True, field="gateway_subnet")
    assert e.value.field == "gateway_subnet"
    with pytest.raises(OverlayError) as e:
        _allocate.free_addresses("10.9.0.0/30", set(), 3)
    assert e.value.field == "ip"


def test_endpoint_items_refuse_hostile_values():
    from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint
    base = {"network": "demonet", "name": "E1", "namespace": "e1", "ifname": "eth0", "gateway_ifname": "eth1"}
    for option, value, field in [("network", "../networks/VICTIM", "network"), ("name", "V0\n", "name"),
                                 ("namespace", "e1\n", "namespace"), ("ip", "10.0.0.2\n", "ip"),
                                 ("mac", "02:42:0a:00:00:02\n", "mac")]:
        with pytest.raises(OverlayError) as e:
            _endpoint.items_from(dict(base, **{option: value}))
        assert e.value.field == field, (option, e.value.message)
    with pytest.raises(OverlayError) as e:
        _endpoint.items_from({"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1", "ip": "1.2.3.4\n"}],
                              "ifname": "eth0", "gateway_ifname": "eth1"})
    assert e.value.field == "endpoints[0].ip"


def test_empty_endpoint_name_is_refused_as_a_name():
    from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint
    with pytest.raises(OverlayError, match="^name: '' is not a valid name"):
        _endpoint.items_from({"network": "demonet", "name": "", "namespace": "e1", "ifname": "eth0",
                              "gateway_ifname": "eth1"})
