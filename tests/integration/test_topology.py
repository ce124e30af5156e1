"""overlay_network_info topology=data|dot: what it returns is what the kernel really holds,
checked against iproute2's own JSON on each simulated host, and reading it changes nothing."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from overlay_helpers import DEMONET, PLAYBOOKS, kernel_snapshot, kv, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")
ENDPOINTS = {"docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0",
                                                              "ip": "192.168.0.100"}]}],
             "docker1": [{"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]}]}
TOPOLOGY = """\
- name: Topology
  hosts: overlay_hosts
  gather_facts: false
  tasks:
    - name: Topology
      overlay.vxlan.overlay_network_info:
        name: demonet
        topology: dot
        consul_host: "{{ lab_consul_addr.split(':')[0] }}"
        host: "{{ inventory_hostname }}"
        vtep: eth0
"""


@pytest.fixture(scope="module")
def lab(module_lab_factory, tmp_path_factory):
    lab = module_lab_factory()
    lab.hosts["docker0"].add_netns("c0")
    lab.hosts["docker1"].add_netns("c1")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], ENDPOINTS)).assert_ok()
    pb = tmp_path_factory.mktemp("topology") / "topology.yml"
    pb.write_text(TOPOLOGY)
    before = {h: kernel_snapshot(lab.hosts[h]) for h in ("docker0", "docker1")}
    lab.topo_run = lab.ansible_playbook(str(pb)).assert_ok()
    lab.unchanged = before == {h: kernel_snapshot(lab.hosts[h]) for h in ("docker0", "docker1")}
    return lab


def ipj(host, ns, *cmd):
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return json.loads(host.run(prefix + list(cmd)).stdout or "[]")


@pytest.mark.parametrize("name,local,remote,ep", [
    ("docker0", "10.0.0.10", "10.0.0.11", "C0"),
    ("docker1", "10.0.0.11", "10.0.0.10", "C1")])
def test_topology_matches_the_kernel(lab, name, local, remote, ep):
    res = lab.topo_run.results(name, "Topology")
    assert res["changed"] is False
    topo, host = res["topology"], lab.hosts[name]
    records = kv(lab)
    net = records["overlay/v1/networks/demonet"]
    ns = "ovl-" + net["id"][:12]
    assert topo["host"] == name
    assert (topo["underlay"]["vtep"], topo["underlay"]["interface"]) == (local, "eth0")
    assert topo["consul"]["host"] == lab.consul_addr.split(":")[0]

    (tnet,) = topo["networks"]
    assert tnet["namespace"] == ns and ns in host.run(["ip", "netns", "list"]).stdout
    (vx,) = ipj(host, ns, "ip", "-j", "-d", "link", "show", "vxlan0")
    data = vx["linkinfo"]["info_data"]
    assert (tnet["vxlan"]["ifindex"], tnet["vxlan"]["vni"], tnet["vxlan"]["port"]) == \
        (vx["ifindex"], data["id"], data["port"]) == (vx["ifindex"], net["vni"], 4789)
    assert (tnet["vxlan"]["proxy"], tnet["vxlan"]["l2miss"], tnet["vxlan"]["l3miss"]) == \
        (data["proxy"], data["l2miss"], data["l3miss"]) == (True, True, True)
    (br,) = ipj(host, ns, "ip", "-j", "link", "show", "br0")
    assert (tnet["bridge"]["ifindex"], tnet["bridge"]["mtu"]) == (br["ifindex"], br["mtu"])
    ports = ipj(host, ns, "ip", "-j", "link", "show", "master", "br0")
    assert sorted((p["name"], p["ifindex"]) for p in tnet["ports"]) == sorted((p["ifname"], p["ifindex"]) for p in ports)

    # vxlan0's static FDB and neighbour entries, and the tunnel they make to the other VTEP.
    fdb = {(e["mac"], e["dst"]) for e in ipj(host, ns, "bridge", "-j", "fdb", "show", "dev", "vxlan0") if e.get("dst")}
    assert {(e["mac"], e["dst"]) for e in tnet["fdb"]} == fdb
    entries = ipj(host, ns, "ip", "-j", "neigh", "show", "dev", "vxlan0", "nud", "permanent")
    neigh = {(e["dst"], e["lladdr"]) for e in entries}
    assert {(e["ip"], e["mac"]) for e in tnet["neighbours"]} == neigh
    other = [e for k, e in records.items() if k.startswith("overlay/v1/endpoints/") and e["host"] != name]
    assert tnet["tunnels"] == [{"local": local, "remote": remote, "remote_host": other[0]["host"],
                                "macs": [other[0]["mac"]]}]

    # The endpoint's veth pairs, by peer ifindex: eth0 <-> a br0 port, eth1 <-> a gateway bridge port.
    (tep,) = topo["endpoints"]
    cns = ep.lower()
    assert tep["name"] == ep and tep["namespace"] == cns
    by_name = {i["name"]: i for i in tep["interfaces"]}
    assert sorted(by_name) == ["eth0", "eth1"]
    for ifname, peer_ns, master in (("eth0", ns, "br0"), ("eth1", None, "docker_gwbridge")):
        (k,) = ipj(host, cns, "ip", "-j", "link", "show", ifname)
        mine = by_name[ifname]
        assert (mine["ifindex"], mine["peer_ifindex"], mine["mac"]) == (k["ifindex"], k["link_index"], k["address"])
        (peer,) = [p for p in ipj(host, peer_ns, "ip", "-j", "link", "show") if p["ifindex"] == k["link_index"]]
        assert (mine["peer"]["name"], mine["peer"]["ifindex"], mine["peer"]["master"]) == \
            (peer["ifname"], peer["ifindex"], peer["master"]) == (peer["ifname"], k["link_index"], master)
    routes = ipj(host, cns, "ip", "-j", "route", "show")
    default = [r for r in routes if r["dst"] == "default"][0]
    assert tep["routes"][0] == {"dst": "default", "via": default["gateway"], "dev": default["dev"]}

    gw = topo["gateway_bridge"]
    assert gw["name"] == "docker_gwbridge" and gw["nat"] is True and gw["ip_forward"] is True
    assert [p["name"] for p in gw["ports"]] == [by_name["eth1"]["peer"]["name"]]
    assert all(p["isolated"] for p in gw["ports"])


def test_dot_document_and_nothing_changed(lab):
    assert lab.unchanged, "reading the topology changed the kernel"
    dot = lab.topo_run.results("docker0", "Topology")["dot"]
    assert dot.startswith("graph overlay {") and "VXLAN 256 -> 10.0.0.11" in dot
    c1 = [e for k, e in kv(lab).items() if k.endswith("/C1")][0]
    assert c1["mac"] in dot
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
        assert "<svg" in svg and "vxlan0" in svg and "br0" in svg
