"""Isolation in the data plane (issue 7 section 2, issue 12 section 6), with real packets.

Forged VXLAN from an endpoint, hairpin forwarding through the gateway bridge, VXLAN from a VTEP that
Consul does not know, an admin's ACCEPT rule first in INPUT, and a run whose rules cannot be
installed. Each "blocked" case is shown to be delivered once the rule is taken away, so the test
can fail."""
from __future__ import annotations

import json
import subprocess

import pytest

from lab.core import INTERNET_IP
from overlay_helpers import DEMONET, PLAYBOOKS, kv, ns_exec, overlay_ns, ping_eventually, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")
BACKNET = {"name": "backnet", "subnet": "10.30.0.0/24", "internal": True}
ENDPOINTS = {
    "docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0", "ip": "192.168.0.100"},
                                                     {"name": "C2", "namespace": "c2"}]}],
    "docker1": [{"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]},
                {"network": "backnet", "endpoints": [{"name": "I1", "namespace": "i1"}]}],
}
VARS = seed_vars([DEMONET, BACKNET], ENDPOINTS)

LISTEN = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    data, peer = s.recvfrom(2048)
    print("GOT %s from %s" % (data.decode(errors="replace"), peer[0]), flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""

# A VXLAN datagram by hand: header with the VNI, then an Ethernet/IPv4/UDP frame for the victim.
FORGE = r"""
import socket, struct, sys
vtep, port, vni, dst_mac, dst_ip, src_ip, bind_ip = sys.argv[1:8]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
payload = b"INJECTED"
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("02420a1e0099") + b"\x08\x00"
vx = struct.pack("!II", 0x08000000, int(vni) << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if bind_ip != "-":
    s.bind((bind_ip, 0))
for _ in range(3):
    s.sendto(vx + eth + ip + udp, (vtep, int(port)))
"""

HAIRPIN = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(b"INJECTED", (sys.argv[1], 9999))
"""


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    for host, names in {"docker0": ["c0", "c2"], "docker1": ["c1", "i1"]}.items():
        for name in names:
            lab.hosts[host].add_netns(name)
    lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    return lab


def record(lab, network, name):
    records = kv(lab)
    net = records["overlay/v1/networks/%s" % network]
    return net, records["overlay/v1/endpoints/%s/%s" % (net["id"], name)]


def listen(host, ns, port=9999, timeout=4):
    proc = subprocess.Popen(host.nsenter_cmd() + ["ip", "netns", "exec", ns, "python3", "-c", LISTEN, str(port),
                                                  str(timeout)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def received(proc):
    out = proc.communicate(timeout=30)[0]
    return "GOT INJECTED" in out


def inject(lab, sender_host, sender_ns, target_host, target_ns, vtep, vni, mac, ip, bind_ip="-", port=4789):
    victim = listen(lab.hosts[target_host], target_ns)
    argv = ["python3", "-c", FORGE, vtep, str(port), str(vni), mac, ip, "10.30.0.66", bind_ip]
    if sender_ns:
        argv = ["ip", "netns", "exec", sender_ns] + argv
    lab.hosts[sender_host].run(argv)
    return received(victim)


def nft_table(host, table):
    return host.run(["nft", "list", "table", "inet", table], check=False).stdout


def vxlan_members(host):
    objs = json.loads(host.run(["nft", "-j", "list", "table", "inet", "overlay_vxlan"]).stdout)["nftables"]
    return {o["set"]["name"]: sorted(str(e) for e in o["set"].get("elem", ())) for o in objs if "set" in o}


class without_table:
    """Take one of our tables away for the duration (to show a blocked packet gets through without it)."""

    def __init__(self, host, table):
        self.host, self.table = host, table

    def __enter__(self):
        self.saved = nft_table(self.host, self.table)
        assert self.saved
        self.host.run(["nft", "delete", "table", "inet", self.table])

    def __exit__(self, *exc):
        self.host.run(["nft", "-f", "-"], input=self.saved)


def test_tables_exist_with_the_registered_vteps(lab):
    for name in ("docker0", "docker1"):
        members = vxlan_members(lab.hosts[name])
        assert members["vteps"] == ["10.0.0.10", "10.0.0.11"]
        assert "4789" in members["ports"]
        assert members["gateways"] == ["docker_gwbridge"]
        text = nft_table(lab.hosts[name], "overlay_vxlan")
        assert "hook prerouting priority raw" in text
    assert "oifname @bridges drop" in nft_table(lab.hosts["docker0"], "overlay_gateway")


def test_endpoint_cannot_inject_into_an_internal_network_on_another_host(lab):
    backnet, i1 = record(lab, "backnet", "I1")
    args = (lab, "docker0", "c0", "docker1", "i1", "10.0.0.11", backnet["vni"], i1["mac"], i1["ip"])
    assert not inject(*args)
    with without_table(lab.hosts["docker0"], "overlay_vxlan"):
        assert inject(*args)  # the very same datagram gets through without the rules: the test can fail
    assert not inject(*args)


def test_endpoint_cannot_inject_through_its_own_hosts_vtep(lab):
    # C1 and I1 share docker1: C1 aims at its own host's VTEP (directly, or via the gateway address).
    backnet, i1 = record(lab, "backnet", "I1")
    for vtep in ("10.0.0.11", "172.18.0.1"):
        assert not inject(lab, "docker1", "c1", "docker1", "i1", vtep, backnet["vni"], i1["mac"], i1["ip"])


def test_no_hairpin_through_the_gateway_bridge(lab):
    d0 = lab.hosts["docker0"]
    _net, c2 = record(lab, "demonet", "C2")
    ns_exec(d0, "c0", ["ip", "route", "replace", c2["gateway_ip"] + "/32", "via", "172.18.0.1", "dev", "eth1"],
            check=True)
    try:
        def send():
            victim = listen(d0, "c2")
            ns_exec(d0, "c0", ["python3", "-c", HAIRPIN, c2["gateway_ip"]], check=True)
            return received(victim)
        assert not send()
        with without_table(d0, "overlay_gateway"):
            assert send()
        assert not send()
    finally:
        ns_exec(d0, "c0", ["ip", "route", "del", c2["gateway_ip"] + "/32"])


def test_unregistered_vtep_is_dropped_even_with_an_admin_accept_first(lab):
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    demonet, c1 = record(lab, "demonet", "C1")
    d0.run(["ip", "addr", "add", "10.0.0.50/24", "dev", "eth0"])
    d1.run(["iptables", "-I", "INPUT", "1", "-p", "udp", "--dport", "4789", "-j", "ACCEPT"])
    try:
        args = (lab, "docker0", None, "docker1", "c1", "10.0.0.11", demonet["vni"], c1["mac"], c1["ip"], "10.0.0.50")
        assert not inject(*args)
        d1.run(["nft", "add", "element", "inet", "overlay_vxlan", "vteps", "{ 10.0.0.50 }"])
        assert inject(*args)  # registered, it is delivered: only the set stood in the way
        # The next sync (a module run) puts the set back to Consul's VTEPs.
        lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {}), limit="docker1").assert_ok()
        assert vxlan_members(d1)["vteps"] == ["10.0.0.10", "10.0.0.11"]
        assert not inject(*args)
    finally:
        d1.run(["iptables", "-D", "INPUT", "-p", "udp", "--dport", "4789", "-j", "ACCEPT"], check=False)
        d0.run(["ip", "addr", "del", "10.0.0.50/24", "dev", "eth0"], check=False)


def test_registered_vteps_still_carry_traffic(lab):
    assert ping_eventually(lab.hosts["docker1"], "c1", "192.168.0.100")


def test_rerun_changes_nothing_and_check_mode_reports(lab):
    before = {n: (nft_table(h, "overlay_vxlan"), nft_table(h, "overlay_gateway")) for n, h in lab.hosts.items()}
    result = lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    assert result.changed_count() == 0, result.changed_tasks()
    d0 = lab.hosts["docker0"]
    d0.run(["nft", "delete", "element", "inet", "overlay_vxlan", "vteps", "{ 10.0.0.11 }"])
    check = lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {}), limit="docker0", check=True, diff=True)
    check.assert_ok()
    actions = check.results("docker0", "Networks")["results"][0]["actions"]
    assert "nft: vteps add 10.0.0.11" in actions
    assert "10.0.0.11" not in vxlan_members(d0)["vteps"]  # check mode applied nothing
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {}), limit="docker0").assert_ok()
    after = {n: (nft_table(h, "overlay_vxlan"), nft_table(h, "overlay_gateway")) for n, h in lab.hosts.items()}
    assert after == before


def test_single_host_network_is_protected_before_any_peer(lab):
    # solonet lives on docker0 alone, on its own port: no peer has ever joined it.
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    solo = {"name": "solonet", "subnet": "10.40.0.0/24", "port": 4799}
    d0.add_netns("s0")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([solo], {"docker0": [
        {"network": "solonet", "endpoints": [{"name": "S0", "namespace": "s0"}]}]}), limit="docker0").assert_ok()
    d1.run(["ip", "addr", "add", "10.0.0.51/24", "dev", "eth0"])
    d0.run(["iptables", "-I", "INPUT", "1", "-p", "udp", "--dport", "4799", "-j", "ACCEPT"])
    try:
        assert "4799" in vxlan_members(d0)["ports"]
        net, s0 = record(lab, "solonet", "S0")
        args = (lab, "docker1", None, "docker0", "s0", "10.0.0.10", net["vni"], s0["mac"], s0["ip"], "10.0.0.51", 4799)
        assert not inject(*args)  # from an unregistered VTEP, with the admin's ACCEPT first in INPUT
        d0.run(["nft", "add", "element", "inet", "overlay_vxlan", "vteps", "{ 10.0.0.51 }"])
        assert inject(*args)  # the set alone stood in the way
    finally:
        d0.run(["iptables", "-D", "INPUT", "-p", "udp", "--dport", "4799", "-j", "ACCEPT"], check=False)
        d1.run(["ip", "addr", "del", "10.0.0.51/24", "dev", "eth0"], check=False)
        lab.ansible_playbook(SEED, extra_vars=seed_vars([solo], {"docker0": [
            {"network": "solonet", "state": "absent", "endpoints": [{"name": "S0", "namespace": "s0"}]}]}),
            limit="docker0").assert_ok()
        solo["state"] = "absent"
        lab.ansible_playbook(SEED, extra_vars=seed_vars([solo], {}), limit="docker0").assert_ok()
    assert vxlan_members(d0)["vteps"] == ["10.0.0.10", "10.0.0.11"]


def test_run_fails_when_the_rules_cannot_be_installed_and_builds_nothing(lab):
    d1 = lab.hosts["docker1"]
    saved = nft_table(d1, "overlay_vxlan")
    d1.run(["nft", "delete", "table", "inet", "overlay_vxlan"])
    # Another process owns a table of that name (nft's "flags owner"): nobody else may change it.
    holder = subprocess.Popen(d1.nsenter_cmd() + ["nft", "-i"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        holder.stdin.write("add table inet overlay_vxlan { flags owner; }\n")
        holder.stdin.flush()
        for _try in range(50):
            if "overlay_vxlan" in d1.run(["nft", "list", "tables"]).stdout:
                break
            d1.run(["sleep", "0.1"])
        before_ns = overlay_ns(d1)
        failnet = {"name": "failnet", "subnet": "10.41.0.0/24"}
        result = lab.ansible_playbook(SEED, extra_vars=seed_vars([failnet], {}), limit="docker1")
        res = result.results("docker1", "Networks")["results"][0]
        assert res["failed"]
        assert "nftables refused the VXLAN firewall (table inet overlay_vxlan)" in res["msg"]
        assert overlay_ns(d1) == before_ns
        assert "overlay/v1/networks/failnet" not in kv(lab)
        assert "vxlan" not in d1.run(["ip", "-o", "link", "show", "type", "vxlan"]).stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        if not nft_table(d1, "overlay_vxlan"):
            d1.run(["nft", "-f", "-"], input=saved)


CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except OSError as e:
    print("closed: %s" % e)
"""


def reaches(host, ns, ip, port=22):
    """A TCP connection from namespace ``ns`` to ip:port opens (the simulated hosts' sshd listens on 22)."""
    return ns_exec(host, ns, ["python3", "-c", CONNECT, ip, str(port)]).stdout.startswith("open")


def test_gateway_block_host_keeps_endpoints_off_the_hosts_own_addresses(lab):
    d0 = lab.hosts["docker0"]
    _net, c0 = record(lab, "demonet", "C0")
    steps = str(PLAYBOOKS / "steps.yml")

    def attach(block):
        ep = {"network": "demonet", "name": "C0", "namespace": "c0", "ip": "192.168.0.100",
              "gateway_block_host": block}
        result = lab.ansible_playbook(steps, extra_vars={"ep_args": {"docker0": [ep]}}, limit="docker0")
        res = result.results("docker0", "Endpoint")["results"][0]
        assert not res.get("failed"), res
        return res["changed"]

    # Docker's behaviour by default: the host's sshd answers an endpoint, on the underlay address and the bridge's.
    assert reaches(d0, "c0", "10.0.0.10")
    assert ping_eventually(d0, "c0", "172.18.0.1", tries=2)
    try:
        assert attach(True) is True
        assert not reaches(d0, "c0", "10.0.0.10")
        assert not ping_eventually(d0, "c0", "172.18.0.1", tries=2)
        # Traffic through NAT still leaves, and connections the host opens towards the endpoint still work.
        assert ping_eventually(d0, "c0", INTERNET_IP, tries=3)
        assert d0.run(["ping", "-c", "1", "-W", "2", c0["gateway_ip"]], check=False).returncode == 0
        assert reaches(lab.hosts["docker1"], "c1", "10.0.0.10")  # another host's endpoint: not this bridge
        assert attach(True) is False  # idempotent
    finally:
        assert attach(False) is True
    assert reaches(d0, "c0", "10.0.0.10")
