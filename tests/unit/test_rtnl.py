"""_rtnl builds its requests itself, without pyroute2's request compiler: each must be the request
pyroute2 would send for the same call, byte for byte (sequence number and port id aside), or the
kernel would be asked something else than the code says. pyroute2's IPBatch compiles a call into
bytes without sending it: that is the reference. Calls the socket must not serve itself go to
IPRoute (the fallback), checked with a stand-in that records them."""
from __future__ import annotations

import socket
import struct

import pytest

pytest.importorskip("pyroute2")

from pyroute2.iproute.linux import IPBatch  # noqa: E402

from ansible_collections.overlay.vxlan.plugins.module_utils import _rtnl  # noqa: E402

NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
MAC, MAC2 = "02:42:0a:00:00:02", "02:42:0a:00:00:03"

# (the call as the collection makes it, the request _rtnl builds for it)
CASES = {
    "link get by name": (lambda b: b.link("get", ifname="br0"), lambda: _rtnl.link_get(ifname="br0")),
    "link get by index": (lambda b: b.link("get", index=3), lambda: _rtnl.link_get(index=3)),
    "link set mtu, master, up": (lambda b: b.link("set", index=5, mtu=1450, master=3, state="up"),
                                 lambda: _rtnl.link_set(index=5, mtu=1450, master=3, state="up")),
    "link set down, mac": (lambda b: b.link("set", index=5, state="down", address=MAC),
                           lambda: _rtnl.link_set(index=5, state="down", address=MAC)),
    "link set no master": (lambda b: b.link("set", index=5, master=0), lambda: _rtnl.link_set(index=5, master=0)),
    "link set name, namespace, group, alias": (
        lambda b: b.link("set", index=5, ifname="x", net_ns_fd=7, group=9, ifalias="al"),
        lambda: _rtnl.link_set(index=5, ifname="x", net_ns_fd=7, group=9, ifalias="al")),
    "link del": (lambda b: b.link("del", index=5), lambda: _rtnl.link_del(index=5)),
    "link del group": (lambda b: b.link("del", group=77), lambda: _rtnl.link_del(group=77)),
    "veth add": (
        lambda b: b.link("add", ifname="a", mtu=1450, address=MAC, master=3, state="up", kind="veth",
                         peer={"ifname": "b", "mtu": 1450, "address": MAC2, "net_ns_fd": 7}),
        lambda: _rtnl.link_add(ifname="a", mtu=1450, address=MAC, master=3, state="up", kind="veth",
                               peer={"ifname": "b", "mtu": 1450, "address": MAC2, "net_ns_fd": 7})),
    "veth add, bare": (lambda b: b.link("add", ifname="a", kind="veth", peer={"ifname": "b"}),
                       lambda: _rtnl.link_add(ifname="a", kind="veth", peer={"ifname": "b"})),
    "bridge add": (lambda b: b.link("add", ifname="docker_gwbridge", kind="bridge"),
                   lambda: _rtnl.link_add(ifname="docker_gwbridge", kind="bridge")),
    "bridge add with a MAC": (lambda b: b.link("add", ifname="br0", kind="bridge", address=MAC),
                              lambda: _rtnl.link_add(ifname="br0", kind="bridge", address=MAC)),
    "vxlan add": (
        lambda b: b.link("add", ifname="vx-000100-abcde", kind="vxlan", vxlan_id=256, vxlan_port=4789,
                         vxlan_learning=0, vxlan_proxy=1, vxlan_l2miss=1, vxlan_l3miss=1),
        lambda: _rtnl.link_add(ifname="vx-000100-abcde", kind="vxlan", vxlan_id=256, vxlan_port=4789,
                               vxlan_learning=0, vxlan_proxy=1, vxlan_l2miss=1, vxlan_l3miss=1)),
    "route get": (lambda b: b.route("get", dst="10.0.0.5"), lambda: _rtnl.route_get("10.0.0.5")),
    "brport set": (lambda b: b.brport("set", index=5, learning=0, proxyarp=1),
                   lambda: _rtnl.brport_set(index=5, learning=0, proxyarp=1)),
    "brport set isolated": (lambda b: b.brport("set", index=5, isolated=1),
                            lambda: _rtnl.brport_set(index=5, isolated=1)),
    "fdb replace on a bridge port": (
        lambda b: b.fdb("replace", ifindex=5, lladdr=MAC, master=3, state=NUD_NOARP),
        lambda: _rtnl.fdb_change("replace", ifindex=5, lladdr=MAC, master=3, state=NUD_NOARP)),
    "fdb append on vxlan": (
        lambda b: b.fdb("append", ifindex=5, lladdr=MAC, dst="10.0.0.2", state=NUD_PERMANENT),
        lambda: _rtnl.fdb_change("append", ifindex=5, lladdr=MAC, dst="10.0.0.2", state=NUD_PERMANENT)),
    "neigh replace": (
        lambda b: b.neigh("replace", ifindex=3, dst="10.1.0.2", lladdr=MAC, state=NUD_PERMANENT),
        lambda: _rtnl.neigh_replace(ifindex=3, dst="10.1.0.2", lladdr=MAC, state=NUD_PERMANENT)),
    "addr add with broadcast": (
        lambda b: b.addr("add", index=5, address="10.1.0.2", prefixlen=24, broadcast="10.1.0.255"),
        lambda: _rtnl.addr_change("add", index=5, address="10.1.0.2", prefixlen=24, broadcast="10.1.0.255")),
    "addr add /31": (lambda b: b.addr("add", index=5, address="10.1.0.2", prefixlen=31),
                     lambda: _rtnl.addr_change("add", index=5, address="10.1.0.2", prefixlen=31)),
    "addr del": (lambda b: b.addr("del", index=5, address="10.1.0.2", prefixlen=24),
                 lambda: _rtnl.addr_change("del", index=5, address="10.1.0.2", prefixlen=24)),
    "default route replace": (lambda b: b.route("replace", dst="0.0.0.0/0", gateway="172.18.0.1", oif=5),
                              lambda: _rtnl.default_route_replace("172.18.0.1", 5)),
}


def _anonymous(data):
    """The request without its sequence number and port id (bytes 8-15 of the header)."""
    data = bytearray(data)
    struct.pack_into("=II", data, 8, 0, 0)
    return bytes(data)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_request_is_the_one_pyroute2_compiles(case):
    compile_call, build = CASES[case]
    batch = IPBatch()
    try:
        compile_call(batch)
        reference = _anonymous(batch.batch)
    finally:
        batch.close()
    msg = build()
    msg["header"]["pid"] = 0
    msg.encode()
    assert _anonymous(msg.data) == reference, case


class Recorder:
    """Stands in for the IPRoute behind the socket: records what reaches it."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return ["from iproute"]
        return call

    def close(self):
        self.calls.append(("close", (), {}))


@pytest.fixture
def sock():
    rec = Recorder()
    s = _rtnl.Socket(lambda: rec)
    s.recorder = rec
    yield s
    s.close()


@pytest.mark.parametrize("call", [
    lambda s: s.link("add", ifname="vx", kind="vxlan", vxlan_id=256, vxlan_group="239.1.1.1", ifalias_x=1),
    lambda s: s.link("add", ifname="b", kind="bridge", br_stp_state=1),
    lambda s: s.link("add", ifname="v", kind="macvlan", link=2),
    lambda s: s.link("add", ifname="a", kind="veth"),
    lambda s: s.link("set", index=5, txqlen=10),
    lambda s: s.link("get", ifname="a", index=2),
    lambda s: s.link("dump"),
    lambda s: s.get_links(2),
    lambda s: s.brport("set", index=5, cost=200),
    lambda s: s.brport("show", index=5),
    lambda s: s.addr("add", index=5, address="fd00::1", prefixlen=64),
    lambda s: s.addr("add", index=5, address="10.0.0.1", prefixlen=24, label="x"),
    lambda s: s.fdb("replace", ifindex=5, lladdr=MAC, dst="10.0.0.2", state=NUD_PERMANENT),
    lambda s: s.fdb("append", ifindex=5, lladdr=MAC, master=3, state=NUD_PERMANENT),
    lambda s: s.fdb("del", ifindex=5, lladdr=MAC),
    lambda s: s.neigh("del", ifindex=3, dst="10.0.0.1"),
    lambda s: s.get_neighbours(family=socket.AF_BRIDGE),
    lambda s: s.get_default_routes(family=socket.AF_INET6),
    lambda s: s.route("replace", dst="10.0.0.0/8", gateway="10.0.0.1", oif=5),
    lambda s: s.route("get", dst="fd00::1"),
    lambda s: s.route("get", dst="10.0.0.1", oif=2),
    lambda s: s.get_routes(family=socket.AF_INET, table=254),
])
def test_what_it_does_not_build_goes_to_iproute(sock, call):
    assert call(sock) == ["from iproute"]
    assert len(sock.recorder.calls) == 1


def test_the_fallback_is_opened_once_and_closed_with_the_socket():
    opened = []

    def open_iproute():
        opened.append(Recorder())
        return opened[-1]

    s = _rtnl.Socket(open_iproute)
    s.link("dump")
    s.get_routes(table=254)
    s.close()
    assert len(opened) == 1 and [c[0] for c in opened[0].calls] == ["link", "get_routes", "close"]
    s2 = _rtnl.Socket(open_iproute)
    s2.close()
    assert len(opened) == 1, "a socket that never needed IPRoute must not open one"
