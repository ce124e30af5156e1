"""The CNI plugin's names and resolver: the container's name and aliases taken from the call and
carried into the endpoint record the engine creates, and the result's ``dns`` from the conflist."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from ansible_collections.overlay.vxlan.cni import __main__ as cni
from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint, _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

PODMAN_ARGS = "IgnoreUnknown=1;K8S_POD_NAME=P1;IP=192.168.0.50"
NETWORK = {"id": "n" * 64, "name": "demonet", "subnet": "192.168.0.0/24", "gateway": "192.168.0.1"}


def names(config, args, container="c" * 64):
    notes = []
    got = cni.names_of(config, {"CNI_ARGS": args, "CNI_CONTAINERID": container}, notes.append)
    return got, notes


def test_the_container_name_is_taken_from_k8s_pod_name():
    assert names({"name": "demonet"}, PODMAN_ARGS) == (["P1"], [])
    # containerd (Kubernetes) passes the namespace too: the pod's name is the name.
    assert names({"name": "demonet"}, "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x") \
        == (["web-0"], [])
    assert names({"name": "demonet"}, "IgnoreUnknown=1;IP=192.168.0.5") == (None, [])  # none: the record keeps its own
    assert names({"name": "demonet"}, "K8S_POD_NAME=") == (None, [])


def test_network_aliases_come_from_runtime_config_for_this_network_only():
    config = {"name": "demonet", "network": "demonet",
              "runtimeConfig": {"aliases": {"demonet": ["db", "0123456789ab", "db"], "other": ["elsewhere"]}}}
    assert names(config, PODMAN_ARGS) == (["0123456789ab", "P1", "db"], [])
    # Podman keys the aliases by its network's name, the conflist's, even when the plugin names another overlay.
    config = dict(config, name="podnet", runtimeConfig={"aliases": {"podnet": ["db"]}})
    assert names(config, PODMAN_ARGS)[0] == ["P1", "db"]
    for junk in ({"aliases": "db"}, {"aliases": {"demonet": "db"}}, "x", None):
        assert names({"name": "demonet", "runtimeConfig": junk}, PODMAN_ARGS) == (["P1"], [])


def test_a_name_that_is_no_dns_name_is_left_out_with_a_note_not_an_error():
    got, notes = names({"name": "demonet", "runtimeConfig": {"aliases": {"demonet": ["ok", "-bad", "a..b"]}}},
                       "K8S_POD_NAME=" + "x" * 64)
    assert got == ["ok"], got
    assert len(notes) == 3 and all("not a DNS name" in n and "cccccccccccc" in n for n in notes), notes
    assert "'-bad'" in notes[1] and "'a..b'" in notes[2]
    got, notes = names({"name": "demonet"}, "K8S_POD_NAME=white space")
    assert got is None and len(notes) == 1


@pytest.mark.parametrize("name", ["P1", "web-0", "my_app", "_x", "a.b.c", "0123456789ab", "a" * 63,
                                  ".".join(["a" * 63] * 3) + "." + "b" * 61])
def test_dns_names_accepted(name):
    assert _validate.is_dns_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a..b", ".a", "a.", "a b", "a/b", "a:b", "é", "a" * 64,
                                  ".".join(["a" * 63] * 4), None, 7, ["a"]])
def test_dns_names_refused(name):
    assert not _validate.is_dns_name(name)


def test_dns_names_sorted_unique_and_refused_naming_the_field():
    assert _validate.dns_names(["b", "a", "b"], "aliases") == ["a", "b"]
    assert _validate.dns_names(None, "aliases") is None and _validate.dns_names([], "aliases") == []
    with pytest.raises(OverlayError) as e:
        _validate.dns_names(["ok", "no way"], "endpoints[0].aliases")
    assert e.value.field == "endpoints[0].aliases" and "'no way'" in e.value.reason
    with pytest.raises(OverlayError):
        _validate.dns_names("P1", "aliases")


def test_the_engine_carries_aliases_into_the_record_it_creates():
    defaults = {"ifname": "eth0", "gateway_ifname": "eth1", "container_runtime": "docker", "container_socket": None}
    item = _endpoint.Item({"name": "c" * 64, "aliases": ["P1", "db", "P1"]}, "", defaults)
    assert item.aliases == ["P1", "db"]
    assert _endpoint.Item({"name": "c" * 64}, "", defaults).aliases is None
    with pytest.raises(OverlayError) as e:
        _endpoint.Item({"name": "c" * 64, "aliases": ["P 1"]}, "endpoints[2].", defaults)
    assert e.value.field == "endpoints[2].aliases"
    # The single-endpoint form passes the option through.
    items = _endpoint.items_from({"network": "demonet", "name": "c" * 64, "aliases": ["P1"]})
    assert [i.aliases for i in items] == [["P1"]]

    item.ns = SimpleNamespace(spec="/run/netns/p1")
    plain = _endpoint.Item({"name": "d" * 64}, "", defaults)
    plain.ns = SimpleNamespace(spec="/run/netns/p2")
    build = _endpoint.new_records_builder(NETWORK, None, SimpleNamespace(host="docker1", vtep="10.0.0.11"),
                                          [item, plain])
    records = build(({}, {}, {}, set()), 0, 2, 0)
    assert records[0]["aliases"] == ["P1", "db"] and records[0]["name"] == "c" * 64, records[0]
    assert "aliases" not in records[1], records[1]


def endpoint_out(gateway=True):
    endpoint = {"ifname": "eth0", "mac": "02:42:c0:a8:00:32", "ip": "192.168.0.50", "prefixlen": 24,
                "gateway_ip": None, "gateway_ifname": None, "interfaces": {}}
    if gateway:
        endpoint.update(gateway_ip="172.18.0.2", gateway_ifname="eth1", interfaces={
            "eth1": {"mac": "02:42:ac:12:00:02", "addresses": ["172.18.0.2/16"]}})
    return {"network": {"mtu": 1450}, "endpoints": [endpoint]}


def test_the_result_carries_the_resolver_when_the_container_has_a_route_to_it():
    dns = cni.dns_of({"dns_nameservers": ["172.18.0.1"], "dns_search": ["demonet"]})
    assert dns == (["172.18.0.1"], ["demonet"])
    out = cni.result_of("1.0.0", endpoint_out(), "/run/netns/p1", dns)
    assert out["dns"] == {"nameservers": ["172.18.0.1"], "search": ["demonet"]}, out
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "172.18.0.1"}]
    out = cni.result_of("1.0.0", endpoint_out(), "/run/netns/p1", cni.dns_of({"dns_nameservers": ["172.18.0.1"]}))
    assert out["dns"] == {"nameservers": ["172.18.0.1"]}, out
    # No nameservers configured: an empty dns, as before (the runtime keeps the host's resolvers).
    assert cni.result_of("1.0.0", endpoint_out(), "/run/netns/p1", cni.dns_of({}))["dns"] == {}
    assert cni.result_of("1.0.0", endpoint_out(), "/run/netns/p1")["dns"] == {}
    # An internal network's endpoint has no eth1 and no default route: no resolver it could reach.
    out = cni.result_of("1.0.0", endpoint_out(gateway=False), "/run/netns/p1", dns)
    assert out["dns"] == {} and out["routes"] == [] and len(out["interfaces"]) == 1, out


@pytest.mark.parametrize("config, words", [
    ({"dns_nameservers": "172.18.0.1"}, "must be a list"),
    ({"dns_nameservers": ["172.18.0.300"]}, "not an IP address"),
    ({"dns_nameservers": ["127.0.0.1"]}, "loopback"),
    ({"dns_nameservers": ["::1"]}, "loopback"),
    ({"dns_nameservers": ["172.18.0.1"], "dns_search": "demonet"}, "dns_search"),
    ({"dns_nameservers": ["172.18.0.1"], "dns_search": ["demo net"]}, "dns_search"),
])
def test_a_bad_resolver_configuration_is_refused_before_anything_is_attached(config, words):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c" * 64, "CNI_NETNS": "/run/netns/nosuch", "CNI_IFNAME": "eth0",
           "CNI_ARGS": PODMAN_ARGS}
    out, err = io.StringIO(), io.StringIO()
    rc = cni.main(stdin=io.StringIO(json.dumps(dict(config, cniVersion="1.0.0", name="demonet",
                                                    consul_host="192.0.2.1"))),
                  stdout=out, environ=env, stderr=err)
    result = json.loads(out.getvalue())
    assert rc == 1 and result["code"] == cni.ERR_CONFIG and words in result["msg"], result
    assert result["msg"].startswith("dns_"), result


def test_the_address_of_runtime_config_ips_one_per_endpoint():
    assert cni.runtime_ip({}) is None and cni.runtime_ip({"runtimeConfig": {"ips": []}}) is None
    assert cni.runtime_ip({"runtimeConfig": {"ips": ["192.168.0.7/24"]}}) == "192.168.0.7"
    assert cni.runtime_ip({"runtimeConfig": {"ips": ["192.168.0.7"]}}) == "192.168.0.7"
    for bad in (["192.168.0.7/24", "192.168.0.8/24"], "192.168.0.7", [7]):
        with pytest.raises(cni.CniError) as e:
            cni.runtime_ip({"runtimeConfig": {"ips": bad}})
        assert e.value.code == cni.ERR_ARGS and e.value.msg.startswith("runtimeConfig.ips:")
