"""Many writers at once against a real Consul: no duplicate address, no duplicate VNI.

The writers are processes running the collection's own allocation code (the same calls the modules
make), pointed at the lab's Consul; running 8 Ansible processes would only add start-up time."""
from __future__ import annotations

import ipaddress
import multiprocessing

import pytest

from overlay_helpers import collection_import_path, kv

WRITERS = 8
ADDRESSES_PER_WRITER = 50
NETWORKS_PER_WRITER = 4


@pytest.fixture(scope="module")
def lab(module_lab_factory, collection_path):
    collection_import_path(collection_path)
    return module_lab_factory({"consul": "10.0.0.5"}, internet=False)


def _settings(port):
    return {"host": "127.0.0.1", "port": port, "scheme": "http", "token": None, "ca_cert": None, "verify": True,
            "timeout": 30, "prefix": "overlay"}


class _Underlay:
    def __init__(self, n):
        self.host, self.vtep = "writer%d" % n, "10.1.0.%d" % (n + 1)


def _allocate_addresses(args):
    port, network, n = args
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _endpoint, _keys, _records
    store = _consul.Consul(_settings(port))
    layout = _keys.Layout("overlay")
    items = [_endpoint.Item({"name": "w%d-e%d" % (n, i), "namespace": "ns%d" % i}, "",
                            {"ifname": "eth0", "gateway_ifname": "eth1"}) for i in range(ADDRESSES_PER_WRITER)]
    index = _records.read_network(store, layout, network["name"])[1]
    claimed = _records.claim_endpoints(store, layout, network, index, _Underlay(n).host,
                                       _endpoint.new_records_builder(network, None, _Underlay(n), items),
                                       len(items), "addresses")
    return [r["ip"] for r in claimed.records]


def _create_networks(args):
    port, n = args
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys, _records
    store = _consul.Consul(_settings(port))
    vnis = []
    for i in range(NETWORKS_PER_WRITER):
        subnet = ipaddress.ip_network("10.%d.%d.0/24" % (100 + n, i))
        record = _keys.network_record("w%d-n%d" % (n, i), subnet, "10.%d.%d.1" % (100 + n, i), None, 1450, 4789,
                                      False, "writer%d" % n)
        vnis.append(_records.create_network(store, _keys.Layout("overlay"), record)[0]["vni"])
    return vnis


def _run_at_once(fn, args):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(WRITERS) as pool:
        return pool.map(fn, args)


def test_eight_writers_allocate_400_addresses_without_duplicates(lab):
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys, _records
    port = lab._consul_forwarder().address[1]
    store = _consul.Consul(_settings(port))
    network = _records.create_network(store, _keys.Layout("overlay"), _keys.network_record(
        "crowded", ipaddress.ip_network("10.40.0.0/22"), "10.40.0.1", None, 1450, 4789, False, "test"))[0]
    per_writer = _run_at_once(_allocate_addresses, [(port, network, n) for n in range(WRITERS)])
    ips = [ip for batch in per_writer for ip in batch]
    assert len(ips) == WRITERS * ADDRESSES_PER_WRITER
    assert len(set(ips)) == len(ips), "an address was handed out twice"
    records = kv(lab)
    claims = [k for k in records if k.startswith("overlay/v1/ipam/%s/" % network["id"])]
    endpoints = [v for k, v in records.items() if k.startswith("overlay/v1/endpoints/%s/" % network["id"])]
    assert len(claims) == len(endpoints) == len(ips)
    assert sorted(e["ip"] for e in endpoints) == sorted(ips)
    assert "10.40.0.1" not in ips  # the gateway
    assert all(records[c]["endpoint"] for c in claims)


def test_eight_writers_create_networks_without_duplicate_vnis(lab):
    port = lab._consul_forwarder().address[1]
    vnis = [v for batch in _run_at_once(_create_networks, [(port, n) for n in range(WRITERS)]) for v in batch]
    assert len(vnis) == WRITERS * NETWORKS_PER_WRITER
    assert len(set(vnis)) == len(vnis), "a VNI was handed out twice"
    assert min(vnis) >= 256
    records = kv(lab)
    owners = {int(k.rsplit("/", 1)[1]): v["network"] for k, v in records.items() if k.startswith("overlay/v1/vnis/")}
    for vni in vnis:
        assert records["overlay/v1/networks/%s" % owners[vni]]["vni"] == vni
