"""The seed's walkthrough on simulated hosts, with real packets, through Ansible over SSH."""
from __future__ import annotations

import pytest

from overlay_helpers import (DEMONET, PLAYBOOKS, kernel_snapshot, kv, ns_exec, overlay_ns, ping,
                             ping_eventually, seed_vars)

SEED = str(PLAYBOOKS / "overlay_seed.yml")
VERIFY = str(PLAYBOOKS / "overlay_verify.yml")
BACKNET = {"name": "backnet", "subnet": "10.30.0.0/24", "internal": True}
ENDPOINTS = {
    "docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0", "ip": "192.168.0.100"},
                                                     {"name": "C2", "namespace": "c2"}]},
                {"network": "backnet", "endpoints": [{"name": "I0", "namespace": "i0"}]}],
    "docker1": [{"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]},
                {"network": "backnet", "endpoints": [{"name": "I1", "namespace": "i1"}]}],
}
VARS = seed_vars([DEMONET, BACKNET], ENDPOINTS)


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    for host, names in {"docker0": ["c0", "c2", "i0"], "docker1": ["c1", "i1"]}.items():
        for name in names:
            lab.hosts[host].add_netns(name)
    result = lab.ansible_playbook(SEED, extra_vars=VARS)
    result.assert_ok()
    lab.first_run = result
    return lab


def endpoint(lab, network_name, name):
    records = kv(lab)
    net = records["overlay/v1/networks/%s" % network_name]
    return records["overlay/v1/endpoints/%s/%s" % (net["id"], name)]


def test_consul_holds_the_network_and_endpoints(lab):
    records = kv(lab)
    demonet = records["overlay/v1/networks/demonet"]
    assert len(demonet["id"]) == 64 and int(demonet["id"], 16) >= 0
    assert (demonet["subnet"], demonet["gateway"], demonet["port"], demonet["mtu"], demonet["internal"]) == \
        ("192.168.0.0/24", "192.168.0.1", 4789, 1450, False)
    backnet = records["overlay/v1/networks/backnet"]
    assert {demonet["vni"], backnet["vni"]} == {256, 257}
    assert records["overlay/v1/vnis/%d" % demonet["vni"]]["id"] == demonet["id"]
    c0 = endpoint(lab, "demonet", "C0")
    assert (c0["ip"], c0["mac"], c0["host"], c0["vtep"]) == ("192.168.0.100", "02:42:c0:a8:00:64", "docker0",
                                                             "10.0.0.10")
    assert records["overlay/v1/ipam/%s/192.168.0.100" % demonet["id"]]["endpoint"] == "C0"
    assert records["overlay/v1/macs/%s/02:42:c0:a8:00:64" % demonet["id"]]["endpoint"] == "C0"
    c1 = endpoint(lab, "demonet", "C1")
    c2 = endpoint(lab, "demonet", "C2")
    # docker0 and docker1 allocate at the same time: between them they take the two lowest free addresses.
    assert c1["vtep"] == "10.0.0.11" and {c1["ip"], c2["ip"]} == {"192.168.0.2", "192.168.0.3"}
    assert records["overlay/v1/hosts/docker1"]["vtep"] == "10.0.0.11"


def test_same_network_id_and_namespace_on_every_host(lab):
    demonet = kv(lab)["overlay/v1/networks/demonet"]
    expected = "ovl-" + demonet["id"][:12]
    for name in ("docker0", "docker1"):
        assert expected in overlay_ns(lab.hosts[name])


def test_devices_inside_the_overlay_namespace(lab):
    demonet = kv(lab)["overlay/v1/networks/demonet"]
    host = lab.hosts["docker1"]
    ns = "ovl-" + demonet["id"][:12]
    vx = ns_exec(host, ns, ["ip", "-d", "link", "show", "vxlan0"], check=True).stdout
    for word in ("vxlan id %d" % demonet["vni"], "dstport 4789", "nolearning", "proxy", "l2miss", "l3miss",
                 "mtu 1450", "master br0"):
        assert word in vx
    assert "192.168.0.1/24" in ns_exec(host, ns, ["ip", "addr", "show", "br0"], check=True).stdout
    fdb = ns_exec(host, ns, ["bridge", "fdb", "show", "dev", "vxlan0"], check=True).stdout
    line = next(x for x in fdb.splitlines() if x.startswith("02:42:c0:a8:00:64 dst 10.0.0.10"))
    assert line.endswith("self permanent")
    neigh = ns_exec(host, ns, ["ip", "neigh", "show", "dev", "vxlan0"], check=True).stdout
    assert "192.168.0.100 lladdr 02:42:c0:a8:00:64 PERMANENT" in neigh
    # vxlan0's UDP socket stays on the underlay: the host namespace listens on 4789.
    assert ":4789" in host.run(["ss", "-uln"]).stdout


def test_container_interfaces_and_routes(lab):
    host = lab.hosts["docker0"]
    eth0 = ns_exec(host, "c0", ["ip", "-d", "addr", "show", "eth0"], check=True).stdout
    assert "mtu 1450" in eth0 and "02:42:c0:a8:00:64" in eth0 and "192.168.0.100/24" in eth0
    eth1 = ns_exec(host, "c0", ["ip", "addr", "show", "eth1"], check=True).stdout
    assert "172.18.0." in eth1 and "02:42:ac:12:00:" in eth1
    assert ns_exec(host, "c0", ["ip", "route", "show", "default"], check=True).stdout.startswith(
        "default via 172.18.0.1 dev eth1")


def test_container_on_docker1_pings_c0(lab):
    assert ping_eventually(lab.hosts["docker1"], "c1", "192.168.0.100")


def test_host_itself_cannot_reach_the_overlay(lab):
    assert not ping(lab.hosts["docker1"], None, "192.168.0.100", wait=1)
    assert not ping(lab.hosts["docker0"], None, "192.168.0.100", wait=1)


def test_container_reaches_the_internet_through_nat(lab):
    # The simulated internet has no route back to 172.18.0.0/16: replies arrive only if masqueraded.
    assert ping_eventually(lab.hosts["docker0"], "c0", "198.51.100.1")
    nat = lab.hosts["docker0"].run(["iptables", "-t", "nat", "-S", "POSTROUTING"]).stdout
    assert "-A POSTROUTING -s 172.18.0.0/16 ! -o docker_gwbridge -j MASQUERADE" in nat


def test_two_containers_cannot_talk_through_the_gateway_bridge(lab):
    host = lab.hosts["docker0"]
    c2 = endpoint(lab, "demonet", "C2")
    assert ping_eventually(host, "c0", c2["ip"])          # the overlay joins them
    assert not ping(host, "c0", c2["gateway_ip"], wait=1)  # the gateway bridge does not
    assert ping(host, "c0", "172.18.0.1", wait=1)          # but the bridge itself answers


def test_internal_network_has_no_gateway_interface(lab):
    host = lab.hosts["docker0"]
    links = ns_exec(host, "i0", ["ip", "-o", "link"], check=True).stdout
    assert "eth0" in links and "eth1" not in links
    assert ns_exec(host, "i0", ["ip", "route", "show", "default"], check=True).stdout.strip() == ""
    i1 = endpoint(lab, "backnet", "I1")
    assert ping_eventually(host, "i0", i1["ip"])
    assert not ping(host, "i0", "198.51.100.1", wait=1)


def test_second_run_is_unchanged_and_verify_is_clean(lab):
    again = lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    assert again.changed_tasks() == []
    verify = lab.ansible_playbook(VERIFY).assert_ok()
    for name in ("docker0", "docker1"):
        res = verify.results(name, "Verify")
        assert res["in_sync"], res["differences"]
        names = [n["name"] for n in res["networks"]]
        assert names == ["backnet", "demonet"]


def test_check_mode_changes_nothing_and_diff_shows_the_change(lab):
    lab.hosts["docker1"].add_netns("c3")
    more = dict(VARS, endpoints=dict(ENDPOINTS, docker1=[
        {"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}, {"name": "C3", "namespace": "c3"}]}]))
    before_kv, before_kernel = kv(lab), kernel_snapshot(lab.hosts["docker1"])
    check = lab.ansible_playbook(SEED, extra_vars=more, check=True, diff=True).assert_ok()
    assert ("docker1", "Endpoints") in check.changed_tasks()
    res = check.results("docker1", "Endpoints")["results"][0]
    assert any("register endpoint C3" in a for a in res["actions"])
    assert sorted(res["diff"]["after"]["endpoints"]) == ["C1", "C3"]
    assert sorted(res["diff"]["before"]["endpoints"]) == ["C1"]  # C3 is new; C1 shows its fields, unchanged
    assert res["diff"]["after"]["endpoints"]["C1"] == res["diff"]["before"]["endpoints"]["C1"]
    assert res["diff"]["before"]["endpoints"]["C1"]["namespace"] == "c1"
    assert res["diff"]["after"]["endpoints"]["C3"]["namespace"] == "c3"
    assert kv(lab) == before_kv
    assert kernel_snapshot(lab.hosts["docker1"]) == before_kernel
    lab.hosts["docker1"].del_netns("c3")


def test_drift_is_repaired(lab):
    demonet = kv(lab)["overlay/v1/networks/demonet"]
    ns = "ovl-" + demonet["id"][:12]
    d1 = lab.hosts["docker1"]
    ns_exec(d1, ns, ["ip", "link", "del", "vxlan0"], check=True)
    d0 = lab.hosts["docker0"]
    c1_mac = endpoint(lab, "demonet", "C1")["mac"]
    ns_exec(d0, ns, ["bridge", "fdb", "del", c1_mac, "dev", "vxlan0", "dst", "10.0.0.11"], check=True)
    ns_exec(d0, "c2", ["ip", "link", "del", "eth0"], check=True)
    repaired = lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    changed = set(repaired.changed_tasks())
    assert ("docker1", "Networks") in changed and ("docker0", "Endpoints") in changed
    assert ("docker0", "Networks") in changed  # the FDB entry
    assert ping_eventually(d1, "c1", "192.168.0.100")
    assert c1_mac + " dst 10.0.0.11" in ns_exec(d0, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    assert ping_eventually(d0, "c0", endpoint(lab, "demonet", "C2")["ip"])
    assert lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok().changed_tasks() == []
    verify = lab.ansible_playbook(VERIFY).assert_ok()
    assert all(verify.results(h, "Verify")["in_sync"] for h in ("docker0", "docker1"))
    vx = ns_exec(d1, ns, ["ip", "-d", "link", "show", "vxlan0"], check=True).stdout
    assert "vxlan id %d" % demonet["vni"] in vx and "master br0" in vx and "nolearning" in vx


def test_removed_endpoint_leaves_remote_tables_at_their_next_run(lab):
    c2 = endpoint(lab, "demonet", "C2")
    demonet = kv(lab)["overlay/v1/networks/demonet"]
    ns = "ovl-" + demonet["id"][:12]
    d1 = lab.hosts["docker1"]
    assert c2["mac"] in ns_exec(d1, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    removed = dict(VARS, endpoints={"docker0": [{"network": "demonet", "state": "absent",
                                                 "endpoints": [{"name": "C2"}]}]})
    lab.ansible_playbook(SEED, extra_vars=removed).assert_ok()
    assert "overlay/v1/endpoints/%s/C2" % demonet["id"] not in kv(lab)
    assert "overlay/v1/ipam/%s/%s" % (demonet["id"], c2["ip"]) not in kv(lab)
    assert c2["mac"] not in ns_exec(d1, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    assert c2["ip"] + " " not in ns_exec(d1, ns, ["ip", "neigh", "show", "dev", "vxlan0"]).stdout
    assert "eth0" not in ns_exec(lab.hosts["docker0"], "c2", ["ip", "-o", "link"]).stdout
