"""Bad input and failures: a clear error naming the field and the reason, and nothing half-built."""
from __future__ import annotations

import os
import signal

import pytest

from overlay_helpers import DEMONET, PLAYBOOKS, kernel_snapshot, kv, ns_exec, overlay_ns, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")
ACL_PORT = 8510
ACL_TOKEN = "0b8e5a34-0000-4000-8000-00000000c0de"

NETWORK_CASES = [
    ("cidr-prefix", {"name": "n1", "subnet": "192.168.5.0/33"}, "subnet: '192.168.5.0/33' is not a valid subnet"),
    ("cidr-host-bits", {"name": "n1", "subnet": "192.168.5.1/24"}, "subnet: '192.168.5.1/24' is not a valid subnet"),
    ("cidr-garbage", {"name": "n1", "subnet": "banana"}, "subnet: 'banana' is not a valid subnet"),
    ("ipv6-subnet", {"name": "n1", "subnet": "fd00::/64"}, "subnet: only IPv4 overlay subnets"),
    ("tiny-subnet", {"name": "n1", "subnet": "10.9.0.0/31"}, "subnet: 10.9.0.0/31 leaves no room"),
    ("gateway-outside", {"name": "n1", "subnet": "10.9.0.0/24", "gateway": "10.9.1.1"},
     "gateway: 10.9.1.1 is outside the subnet 10.9.0.0/24"),
    ("vni-zero", {"name": "n1", "subnet": "10.9.0.0/24", "vni": 0}, "vni: VNI 0 is outside 1..16777215"),
    ("vni-too-big", {"name": "n1", "subnet": "10.9.0.0/24", "vni": 16777216},
     "vni: VNI 16777216 is outside 1..16777215"),
    ("vni-taken", {"name": "n1", "subnet": "10.9.0.0/24", "vni": 256}, "vni: VNI 256 is already used by network demonet"),
    ("port-zero", {"name": "n1", "subnet": "10.9.0.0/24", "port": 0}, "port: UDP port 0 is outside 1..65535"),
    ("port-too-big", {"name": "n1", "subnet": "10.9.0.0/24", "port": 70000}, "port: UDP port 70000 is outside"),
    ("mtu-too-big", {"name": "n1", "subnet": "10.9.0.0/24", "mtu": 1480},
     "mtu: 1480 is too big for the underlay: eth0 has MTU 1500, which leaves at most 1450"),
    ("mtu-tiny", {"name": "n1", "subnet": "10.9.0.0/24", "mtu": 20}, "mtu: MTU 20 is outside 68..65535"),
    ("name-too-long", {"name": "n" * 65, "subnet": "10.9.0.0/24"}, "name: 'nnnn"),
    ("name-slash", {"name": "a/b", "subnet": "10.9.0.0/24"}, "name: 'a/b' is not a valid name"),
    ("redefine-subnet", {"name": "demonet", "subnet": "10.9.0.0/24"},
     "subnet: network demonet already exists with subnet 192.168.0.0/24"),
    ("redefine-internal", {"name": "demonet", "internal": True}, "internal: network demonet already exists"),
    ("create-without-subnet", {"name": "n2"}, "subnet: is required to create network n2"),
    ("vtep-no-interface", {"name": "n1", "subnet": "10.9.0.0/24", "vtep": "nope0"},
     "vtep: interface nope0 does not exist"),
    ("vtep-foreign-address", {"name": "n1", "subnet": "10.9.0.0/24", "vtep": "10.0.0.99"},
     "vtep: no interface on this host holds 10.0.0.99"),
    ("consul-no-route", {"name": "n1", "subnet": "10.9.0.0/24", "consul_host": "10.0.0.77"},
     "consul_host: Consul at http://10.0.0.77:8500"),
    ("consul-refused", {"name": "n1", "subnet": "10.9.0.0/24", "consul_port": 8599},
     "consul_host: Consul at http://10.0.0.5:8599: reading overlay/v1/networks/n1 failed: cannot connect"),
    ("consul-port-range", {"name": "n1", "subnet": "10.9.0.0/24", "consul_port": 70000},
     "consul_port: port 70000 is outside 1..65535"),
    ("consul-wrong-token", {"name": "n1", "subnet": "10.9.0.0/24", "consul_port": ACL_PORT, "consul_token": "wrong"},
     "consul_token: Consul at http://10.0.0.5:%d: reading overlay/v1/networks/n1 failed: permission denied" % ACL_PORT),
    ("consul-no-token", {"name": "n1", "subnet": "10.9.0.0/24", "consul_port": ACL_PORT},
     "consul_token: Consul at http://10.0.0.5:%d" % ACL_PORT),
]

ENDPOINT_CASES = [
    ("unknown-network", {"network": "nonet", "name": "E1", "namespace": "e1"},
     "network: no overlay network named nonet exists"),
    ("ip-outside", {"network": "demonet", "name": "E1", "namespace": "e1", "ip": "10.9.9.9"},
     "ip: 10.9.9.9 is outside the subnet 192.168.0.0/24"),
    ("ip-taken", {"network": "demonet", "name": "E1", "namespace": "e1", "ip": "192.168.0.100"},
     "ip: 192.168.0.100 is already taken by endpoint C0 of network demonet"),
    ("ip-gateway", {"network": "demonet", "name": "E1", "namespace": "e1", "ip": "192.168.0.1"},
     "ip: 192.168.0.1 is the gateway address of network demonet"),
    ("ip-broadcast", {"network": "demonet", "name": "E1", "namespace": "e1", "ip": "192.168.0.255"},
     "ip: 192.168.0.255 is the broadcast address"),
    ("ip-garbage", {"network": "demonet", "name": "E1", "namespace": "e1", "ip": "192.168.0"},
     "ip: '192.168.0' is not an IPv4 address"),
    ("namespace-missing", {"network": "demonet", "name": "E1", "namespace": "nope"},
     "namespace: network namespace nope does not exist"),
    ("namespace-pid-gone", {"network": "demonet", "name": "E1", "namespace": "999999"},
     "namespace: no process with PID 999999"),
    ("namespace-relative", {"network": "demonet", "name": "E1", "namespace": "run/netns/e1"},
     "namespace: namespace path 'run/netns/e1' must be absolute"),
    ("namespace-omitted", {"network": "demonet", "name": "E1"}, "namespace: is required to attach endpoint E1"),
    ("ifname-too-long", {"network": "demonet", "name": "E1", "namespace": "e1", "ifname": "eth0123456789abc"},
     "ifname: interface name 'eth0123456789abc' is 16 characters long; the kernel allows at most 15"),
    ("ifname-not-veth", {"network": "demonet", "name": "E1", "namespace": "e1", "ifname": "blocker"},
     "ifname: namespace e1 already has a bridge device named blocker"),
    ("same-ifnames", {"network": "demonet", "name": "E1", "namespace": "e1", "ifname": "eth1"},
     "gateway_ifname: must differ from the overlay interface name eth1"),
    ("mac-garbage", {"network": "demonet", "name": "E1", "namespace": "e1", "mac": "02:42:zz:00:00:01"},
     "mac: '02:42:zz:00:00:01' is not a MAC address"),
    ("mac-multicast", {"network": "demonet", "name": "E1", "namespace": "e1", "mac": "03:42:00:00:00:01"},
     "mac: 03:42:00:00:00:01 is a multicast MAC address"),
    ("name-twice", {"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1"},
                                                        {"name": "E1", "namespace": "e1"}]},
     "endpoints[1].name: endpoint E1 is listed twice"),
    ("ip-twice", {"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1", "ip": "192.168.0.50"},
                                                      {"name": "E2", "namespace": "e2", "ip": "192.168.0.50"}]},
     "endpoints[1].ip: 192.168.0.50 is requested for both E1 and E2"),
    ("bad-item-among-good", {"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1"},
                                                                 {"name": "E2", "namespace": "gone"}]},
     "endpoints[1].namespace: network namespace gone does not exist"),
    ("other-hosts-endpoint", {"network": "demonet", "name": "C1", "namespace": "e1"},
     "name: endpoint C1 of network demonet is attached on host docker1, not here (docker0)"),
    ("change-existing-ip", {"network": "demonet", "name": "C0", "namespace": "c0", "ip": "192.168.0.101"},
     "ip: endpoint C0 already has address 192.168.0.100; remove it first to change it"),
    ("gateway-subnet-garbage", {"network": "demonet", "name": "E1", "namespace": "e1", "gateway_subnet": "172.18/99"},
     "gateway_subnet: '172.18/99' is not a valid subnet"),
    ("endpoint-name-invalid", {"network": "demonet", "name": "E 1", "namespace": "e1"}, "name: 'E 1' is not a valid name"),
    ("detach-remote", {"network": "demonet", "name": "C1", "state": "absent"},
     "name: endpoint C1 is attached on host docker1; remove it there"),
]


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    lab.hosts["docker0"].add_netns("c0")
    lab.hosts["docker0"].add_netns("e1")
    lab.hosts["docker0"].add_netns("e2")
    lab.hosts["docker0"].run(["ip", "netns", "exec", "e1", "ip", "link", "add", "blocker", "type", "bridge"])
    lab.hosts["docker1"].add_netns("c1")
    endpoints = {"docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0",
                                                                   "ip": "192.168.0.100"}]}],
                 "docker1": [{"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]}]}
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], endpoints)).assert_ok()
    # A second Consul with ACLs on (default deny) for the token cases, on its own ports.
    host = lab.hosts["consul"]
    hcl = ('ports { http = %d, dns = -1, grpc = -1, serf_lan = 8311, serf_wan = 8312, server = 8310 } '
           'acl { enabled = true, default_policy = "deny", tokens { master = "%s" } }' % (ACL_PORT, ACL_TOKEN))
    lab._spawn("consul-acl", host.name, host.nsenter_cmd() + [
        str(lab_consul_bin()),
        "agent", "-dev", "-node", "acl", "-client", host.ip, "-bind", host.ip, "-hcl", hcl])
    from lab.nsutil import wait_tcp
    wait_tcp(lab.controller.netns_path(), (host.ip, ACL_PORT), timeout=20)
    return lab


def lab_consul_bin():
    from lab import CONSUL_BIN
    return CONSUL_BIN


def _by_id(result, task, cases):
    items = result.results("docker0", task)["results"]
    assert len(items) == len(cases)
    return {case[0]: item for case, item in zip(cases, items)}


def test_bad_input_gets_a_clear_error_and_changes_nothing(lab):
    d0 = lab.hosts["docker0"]
    before_kv, before_kernel = kv(lab), kernel_snapshot(d0)
    extra = {"network_cases": [{"id": i, "args": a} for i, a, _expected in NETWORK_CASES],
             "endpoint_cases": [{"id": i, "args": a} for i, a, _expected in ENDPOINT_CASES]}
    result = lab.ansible_playbook(str(PLAYBOOKS / "bad_input.yml"), extra_vars=extra)
    outcomes = {}
    outcomes.update(_by_id(result, "Network cases", NETWORK_CASES))
    outcomes.update(_by_id(result, "Endpoint cases", ENDPOINT_CASES))
    wrong = []
    for case_id, _args, expected in NETWORK_CASES + ENDPOINT_CASES:
        item = outcomes[case_id]
        if not item.get("failed") or expected not in item.get("msg", ""):
            wrong.append((case_id, item.get("failed"), item.get("msg")))
    assert wrong == [], "cases without the expected error:\n" + "\n".join(map(str, wrong))
    assert len(NETWORK_CASES) + len(ENDPOINT_CASES) >= 25
    assert kv(lab) == before_kv
    assert kernel_snapshot(d0) == before_kernel


def test_kernel_refusal_after_the_store_write_is_rolled_back(lab):
    # Someone else's vxlan device already holds VNI 5000 on port 4789 in the host namespace: the
    # kernel refuses ours only after the record was written, so the record must go again.
    d0 = lab.hosts["docker0"]
    d0.run(["ip", "link", "add", "squatter", "type", "vxlan", "id", "5000", "dstport", "4789"])
    try:
        before_ns = overlay_ns(d0)
        vars_ = seed_vars([{"name": "clash", "subnet": "10.50.0.0/24", "vni": 5000}], {})
        result = lab.ansible_playbook(SEED, extra_vars=vars_, limit="docker0")
        res = result.results("docker0", "Networks")["results"][0]
        assert res["failed"]
        assert "the kernel refused to create the vxlan device (vni 5000, port 4789)" in res["msg"]
        records = kv(lab)
        assert "overlay/v1/networks/clash" not in records and "overlay/v1/vnis/5000" not in records
        assert overlay_ns(d0) == before_ns
    finally:
        d0.run(["ip", "link", "del", "squatter"])


def test_gateway_failure_after_claiming_releases_the_claims(lab):
    d0 = lab.hosts["docker0"]
    d0.add_netns("g1")
    # A veth squats the gateway bridge's name: detected only when the gateway bridge is built.
    d0.run(["ip", "link", "add", "gwsquat", "type", "veth", "peer", "name", "gwsquat1"])
    try:
        before_kv = kv(lab)
        vars_ = seed_vars([DEMONET], {"docker0": [{"network": "demonet", "endpoints": [
            {"name": "G1", "namespace": "g1"}]}]})
        vars_["networks"] = [DEMONET]
        result = lab.ansible_playbook(str(PLAYBOOKS / "gateway_squat.yml"), extra_vars=vars_)
        res = result.results("docker0", "Endpoint")
        assert res["failed"] and "gateway_bridge: gwsquat exists but is a veth device, not a bridge" in res["msg"]
        assert kv(lab) == before_kv
        assert "eth0" not in ns_exec(d0, "g1", ["ip", "-o", "link"]).stdout
    finally:
        d0.run(["ip", "link", "del", "gwsquat"])


def test_consul_freezing_mid_playbook_leaves_nothing_half_built(lab):
    d0 = lab.hosts["docker0"]
    d0.add_netns("f0")
    consul_pid = lab._consul_proc().pid
    before_kv = kv(lab)
    try:
        result = lab.ansible_playbook(str(PLAYBOOKS / "consul_freezes.yml"), extra_vars={"consul_pid": consul_pid})
    finally:
        os.kill(consul_pid, signal.SIGCONT)
    assert result.results("docker0", "Network")["status"] == "ok", result.results("docker0", "Network")
    res = result.results("docker0", "Endpoint")
    assert res["failed"]
    assert "consul_host: Consul at http://10.0.0.5:8500" in res["msg"] and "no answer within 2" in res["msg"]
    assert kv(lab) == before_kv
    assert len(ns_exec(d0, "f0", ["ip", "-o", "link"]).stdout.splitlines()) == 1  # lo only


def test_consul_gone_gives_a_clear_error_and_no_kernel_change(lab):
    d0 = lab.hosts["docker0"]
    d0.add_netns("f1")
    before = kernel_snapshot(d0)
    lab.stop_consul()
    try:
        vars_ = seed_vars([DEMONET], {"docker0": [{"network": "demonet", "endpoints": [
            {"name": "F1", "namespace": "f1"}]}]})
        result = lab.ansible_playbook(SEED, extra_vars=vars_, limit="docker0")
        res = result.results("docker0", "Networks")["results"][0]
        assert res["failed"]
        assert res["msg"].startswith("consul_host: Consul at http://10.0.0.5:8500: reading overlay/v1/networks/demonet "
                                     "failed: cannot connect")
        assert kernel_snapshot(d0) == before
    finally:
        lab.start_consul()  # dev mode: it comes back empty, which is why this test runs last
