"""The agent's Docker door, driven over its unix socket exactly as dockerd calls it (empty bodies,
``Err`` vs ``Error``, the call order of docker network create / docker run / docker rm), with a
real Consul, real netlink on two simulated hosts and real packets. The test plays dockerd's part
of Join (move the handed-off end into the container, name it eth0, address it)."""
from __future__ import annotations

import http.client
import json
import socket
import time

from overlay_helpers import collection_import_path, kv, ns_exec, ping, together

SUBNET = "192.168.0.0/24"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path_ = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path_)


def call(sock, method, body=None):
    conn = UnixHTTP(sock)
    data = b"" if body is None else json.dumps(body).encode()
    conn.request("POST", "/" + method, body=data,
                 headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, (method, resp.status, out)
    return out


def wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def start_agent(lab, host, collection_path, tmp_path, extra=()):
    sock = str(tmp_path / ("%s.sock" % host.name))
    proc = lab._spawn("agent", host.name, host.nsenter_cmd() + [
        "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
        "ansible_collections.overlay.vxlan.agent", "--host", host.name, "--vtep", "eth0",
        "--consul-host", "10.0.0.5", "--docker-plugin", "--docker-socket", sock,
        "--state-dir", str(tmp_path / ("state-" + host.name)), "--docker-host", "unix://" + str(tmp_path / "none")] + list(extra))
    assert wait_until(lambda: _answers(sock), timeout=20), "the agent's socket did not answer"
    return sock, proc


def _answers(sock):
    try:
        return call(sock, "Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
    except OSError:
        return False


def docker_network_create(sock, network_id, name="demonet", subnet=SUBNET):
    pool = call(sock, "IpamDriver.RequestPool", {"AddressSpace": "overlay.vxlan", "Pool": subnet, "Options": {},
                                                 "V6": False})
    assert "Error" not in pool, pool
    gateway = pool["Data"]["com.docker.network.gateway"]
    created = call(sock, "NetworkDriver.CreateNetwork", {
        "NetworkID": network_id, "Options": {"com.docker.network.generic": {"name": name}},
        "IPv4Data": [{"AddressSpace": "overlay.vxlan", "Pool": subnet, "Gateway": gateway}], "IPv6Data": []})
    return pool, created


def docker_run(host, sock, network_id, endpoint_id, pool_id, ns, ip=""):
    addr = call(sock, "IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ip, "Options": {}})
    if "Error" in addr:
        return addr
    ep = call(sock, "NetworkDriver.CreateEndpoint", {"NetworkID": network_id, "EndpointID": endpoint_id,
                                                     "Options": {}, "Interface": {"Address": addr["Address"],
                                                                                  "AddressIPv6": "", "MacAddress": ""}})
    if "Err" in ep:
        return ep
    assert call(sock, "NetworkDriver.EndpointOperInfo", {"NetworkID": network_id, "EndpointID": endpoint_id}) == \
        {"Value": {}}
    join = call(sock, "NetworkDriver.Join", {"NetworkID": network_id, "EndpointID": endpoint_id,
                                             "SandboxKey": "/var/run/docker/netns/x", "Options": {}})
    src = join["InterfaceName"]["SrcName"]
    assert join["InterfaceName"]["DstPrefix"] == "eth" and "Gateway" not in join
    # dockerd's part: move, rename, address, MAC (the one CreateEndpoint returned), up
    host.run(["ip", "link", "set", src, "netns", ns])
    ns_exec(host, ns, ["ip", "link", "set", src, "name", "eth0"], check=True)
    ns_exec(host, ns, ["ip", "addr", "add", addr["Address"], "dev", "eth0"], check=True)
    ns_exec(host, ns, ["ip", "link", "set", "eth0", "address", ep["Interface"]["MacAddress"], "up"], check=True)
    return {"address": addr["Address"], "mac": ep["Interface"]["MacAddress"]}


def test_docker_calls_build_one_cluster_network_and_reach_across_hosts(lab_factory, collection_path, tmp_path):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    s0, _a0 = start_agent(lab, d0, collection_path, tmp_path, extra=("--log-calls",))
    s1, a1 = start_agent(lab, d1, collection_path, tmp_path)
    # Capabilities arrive with empty bodies.
    assert call(s0, "NetworkDriver.GetCapabilities")["Scope"] == "local"
    assert call(s0, "IpamDriver.GetCapabilities") == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
    assert "LocalDefaultAddressSpace" in call(s0, "IpamDriver.GetDefaultAddressSpaces")

    # docker network create on both hosts: one network in Consul, the same PoolID and gateway.
    pool0, created0 = docker_network_create(s0, "a" * 64)
    pool1, created1 = docker_network_create(s1, "b" * 64)
    assert created0 == {} and created1 == {}, (created0, created1)
    assert pool0["PoolID"] == pool1["PoolID"] and pool0["Data"] == pool1["Data"] == \
        {"com.docker.network.gateway": "192.168.0.1/24"}
    store = kv(lab)
    nets = [v for k, v in store.items() if k.startswith("overlay/v1/networks/")]
    assert [n["name"] for n in nets] == ["demonet"] and nets[0]["subnet"] == SUBNET

    # A conflicting definition is refused at create time: another subnet for the name, an overlap.
    _pool, refused = docker_network_create(s1, "c" * 64, subnet="192.168.1.0/24")
    assert "subnet" in refused.get("Err", ""), refused
    overlap = call(s1, "IpamDriver.RequestPool", {"Pool": "192.168.0.0/25", "Options": {}, "V6": False})
    assert "overlaps" in overlap.get("Error", ""), overlap

    # docker run --ip 192.168.0.100 on docker0, and without --ip on docker1.
    d0.add_netns("c0")
    d1.add_netns("c1")
    c0 = docker_run(d0, s0, "a" * 64, "e0" * 32, pool0["PoolID"], "c0", ip="192.168.0.100")
    assert c0 == {"address": "192.168.0.100/24", "mac": "02:42:c0:a8:00:64"}, c0
    # --log-calls: every answered call with its duration (docker0 only: docker1's agent logs none).
    timed = [line.split()[-3:] for line in lab._log_path("agent", "docker0").read_text().splitlines()
             if line.endswith(" ms")]
    assert {t[0] for t in timed} >= {"IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint",
                                     "NetworkDriver.Join"} and all(float(t[1]) >= 0 for t in timed), timed
    assert not [line for line in lab._log_path("agent", "docker1").read_text().splitlines() if line.endswith(" ms")]
    c1 = docker_run(d1, s1, "b" * 64, "e1" * 32, pool1["PoolID"], "c1")
    assert c1["address"] != c0["address"], c1
    # the same --ip anywhere else is refused, naming the address
    taken = call(s1, "IpamDriver.RequestAddress", {"PoolID": pool1["PoolID"], "Address": "192.168.0.100",
                                                   "Options": {}})
    assert "192.168.0.100" in taken.get("Error", "") and "taken" in taken["Error"], taken
    outside = call(s1, "IpamDriver.RequestAddress", {"PoolID": pool1["PoolID"], "Address": "10.9.9.9",
                                                     "Options": {}})
    assert "Error" in outside, outside

    store = kv(lab)
    net_id = nets[0]["id"]
    rec0 = store["overlay/v1/endpoints/%s/%s" % (net_id, "e0" * 32)]
    assert rec0["ip"] == "192.168.0.100" and rec0["host"] == "docker0" and rec0["id"] == "e0" * 32
    assert store["overlay/v1/ipam/%s/192.168.0.100" % net_id]["endpoint"] == "e0" * 32  # taken over
    assert wait_until(lambda: ping(d1, "c1", "192.168.0.100", wait=1), timeout=10), "c1 cannot reach c0"
    link = ns_exec(d0, "c0", ["ip", "-j", "link", "show", "eth0"], check=True).stdout
    assert json.loads(link)[0]["mtu"] == nets[0]["mtu"]

    # docker rm -f c0: Leave, DeleteEndpoint, ReleaseAddress; docker1's agent drops the peer.
    ns = "ovl-" + net_id[:12]
    assert call(s0, "NetworkDriver.Leave", {"NetworkID": "a" * 64, "EndpointID": "e0" * 32}) == {}
    assert call(s0, "NetworkDriver.DeleteEndpoint", {"NetworkID": "a" * 64, "EndpointID": "e0" * 32}) == {}
    assert call(s0, "IpamDriver.ReleaseAddress", {"PoolID": pool0["PoolID"], "Address": "192.168.0.100"}) == {}
    assert wait_until(lambda: "02:42:c0:a8:00:64" not in ns_exec(d1, ns, ["bridge", "fdb", "show", "dev",
                                                                          "vxlan0"]).stdout, timeout=5)
    store = kv(lab)
    assert not [k for k in store if "192.168.0.100" in k or ("e0" * 32) in k], sorted(store)

    # An address whose endpoint never came is released by ReleaseAddress; unknown ids all succeed.
    spare = call(s0, "IpamDriver.RequestAddress", {"PoolID": pool0["PoolID"], "Address": "", "Options": {}})
    ip = spare["Address"].split("/")[0]
    assert any(k.endswith("/" + ip) for k in kv(lab))
    assert call(s0, "IpamDriver.ReleaseAddress", {"PoolID": pool0["PoolID"], "Address": ip}) == {}
    assert not any(k.endswith("/" + ip) for k in kv(lab))
    for method in ("NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"):
        assert call(s0, method, {"NetworkID": "f" * 64, "EndpointID": "9" * 64}) == {}
    assert call(s0, "NetworkDriver.DeleteNetwork", {"NetworkID": "f" * 64}) == {}
    assert call(s0, "IpamDriver.ReleaseAddress", {"PoolID": "overlay.vxlan/10.1.0.0/24", "Address": "10.1.0.5"}) == {}
    assert call(s0, "IpamDriver.ReleasePool", {"PoolID": pool0["PoolID"]}) == {}

    # The agent stops on SIGTERM without leaving its socket behind (dockerd would wait 15 s on a
    # stale one), and after a restart still answers for a NetworkID it never saw created.
    a1.popen.terminate()
    a1.popen.wait(timeout=10)
    assert not (tmp_path / "docker1.sock").exists(), "a stale socket stayed behind"
    s1, a1 = start_agent(lab, d1, collection_path, tmp_path)
    d1.add_netns("c2")
    c2 = docker_run(d1, s1, "b" * 64, "e2" * 32, pool1["PoolID"], "c2", ip="192.168.0.100")
    assert c2["address"] == "192.168.0.100/24", c2  # the released address is free again
    assert wait_until(lambda: ping(d1, "c2", c1["address"].split("/")[0], wait=1), timeout=5)

    # Drift met by a scoped CreateEndpoint (the agent's sync runs): vxlan0 deleted, br0's MTU changed by
    # hand. Its two point reads see it, and the full ensure builds the overlay namespace back.
    ns_exec(d1, ns, ["ip", "link", "del", "vxlan0"], check=True)
    ns_exec(d1, ns, ["ip", "link", "set", "br0", "mtu", "1300"], check=True)
    d1.add_netns("c3")
    c3 = docker_run(d1, s1, "b" * 64, "e3" * 32, pool1["PoolID"], "c3")
    assert "address" in c3, c3
    links = {i["ifname"]: i for i in json.loads(ns_exec(d1, ns, ["ip", "-j", "-d", "link", "show"], check=True).stdout)}
    assert links["br0"]["mtu"] == nets[0]["mtu"] and links["vxlan0"]["master"] == "br0", links
    assert "UP" in links["vxlan0"]["flags"] and links["vxlan0"]["linkinfo"]["info_data"]["id"] == nets[0]["vni"]


def test_parallel_docker_runs_on_two_hosts_never_share_an_address_and_lost_releases_are_collected(
        lab_factory, collection_path, tmp_path):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    # Full passes (with the garbage collection) every 2 s; claims without a record wait 10 s.
    s0, _a0 = start_agent(lab, d0, collection_path, tmp_path, ["--wait", "2", "--gc-grace", "10"])
    s1, _a1 = start_agent(lab, d1, collection_path, tmp_path, ["--wait", "2", "--gc-grace", "10"])
    pool, _c = docker_network_create(s0, "a" * 64)
    docker_network_create(s1, "b" * 64)
    got = {s0: [], s1: []}

    def requests(sock):
        for _i in range(12):
            got[sock].append(call(sock, "IpamDriver.RequestAddress",
                                  {"PoolID": pool["PoolID"], "Address": "", "Options": {}}))

    together(lambda: requests(s0), lambda: requests(s1))
    answers = got[s0] + got[s1]
    assert all("Address" in a for a in answers), answers
    addresses = [a["Address"] for a in answers]
    assert len(set(addresses)) == 24, sorted(addresses)
    net_id = [v for k, v in kv(lab).items() if k.startswith("overlay/v1/networks/")][0]["id"]
    claims = [k for k in kv(lab) if k.startswith("overlay/v1/ipam/%s/" % net_id)]
    assert len(claims) == 24, claims
    # Docker's ReleaseAddress never came (the agent was down when the containers stopped): the
    # garbage collection releases the claims no endpoint took, after the grace period.
    assert wait_until(lambda: not [k for k in kv(lab) if k.startswith("overlay/v1/ipam/%s/" % net_id)],
                      timeout=45), "claims without an endpoint were not collected"
    # CreateEndpoint for an address whose claim was collected meanwhile claims it afresh.
    ep = call(s0, "NetworkDriver.CreateEndpoint", {"NetworkID": "a" * 64, "EndpointID": "e9" * 32, "Options": {},
                                                   "Interface": {"Address": addresses[0], "MacAddress": ""}})
    assert "Err" not in ep, ep
    store = kv(lab)
    ip = addresses[0].split("/")[0]
    assert store["overlay/v1/endpoints/%s/%s" % (net_id, "e9" * 32)]["ip"] == ip
    assert store["overlay/v1/ipam/%s/%s" % (net_id, ip)]["endpoint"] == "e9" * 32


def test_docker_network_rm_is_reference_counted_across_hosts(lab_factory, collection_path, tmp_path):
    collection_import_path(collection_path)
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    s0, _a0 = start_agent(lab, d0, collection_path, tmp_path)
    s1, _a1 = start_agent(lab, d1, collection_path, tmp_path)
    docker_network_create(s0, "a" * 64)
    docker_network_create(s1, "b" * 64)
    store = kv(lab)
    record = store["overlay/v1/networks/demonet"]
    assert record["origin"] == "docker"
    users = "overlay/v1/users/%s/" % record["id"]
    assert sorted(k[len(users):] for k in store if k.startswith(users)) == ["docker0/" + "a" * 64,
                                                                            "docker1/" + "b" * 64]
    ns = "ovl-" + record["id"][:12]
    assert ns in d0.run(["ip", "netns", "list"]).stdout and ns in d1.run(["ip", "netns", "list"]).stdout

    # docker network rm on docker0 frees nothing docker1 uses: the network and its VNI stay.
    d1.add_netns("c1")
    pool = call(s1, "IpamDriver.RequestPool", {"Pool": SUBNET, "Options": {}, "V6": False})
    c1 = docker_run(d1, s1, "b" * 64, "e1" * 32, pool["PoolID"], "c1")
    assert "address" in c1, c1
    assert call(s0, "NetworkDriver.DeleteNetwork", {"NetworkID": "a" * 64}) == {}
    store = kv(lab)
    assert store["overlay/v1/networks/demonet"]["id"] == record["id"]
    assert "overlay/v1/vnis/%d" % record["vni"] in store
    assert [k for k in store if k.startswith(users)] == [users + "docker1/" + "b" * 64]
    assert ns not in d0.run(["ip", "netns", "list"]).stdout  # docker0's part went with its last use
    assert ns in d1.run(["ip", "netns", "list"]).stdout

    # The last user's rm removes the network Docker created, once its endpoint is gone.
    call(s1, "NetworkDriver.Leave", {"NetworkID": "b" * 64, "EndpointID": "e1" * 32})
    call(s1, "NetworkDriver.DeleteEndpoint", {"NetworkID": "b" * 64, "EndpointID": "e1" * 32})
    call(s1, "IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": c1["address"].split("/")[0]})
    assert call(s1, "NetworkDriver.DeleteNetwork", {"NetworkID": "b" * 64}) == {}
    assert kv(lab) == {k: v for k, v in kv(lab).items() if k.startswith("overlay/v1/hosts/")}, kv(lab)
    assert ns not in d1.run(["ip", "netns", "list"]).stdout

    # A network the inventory created (overlay_network: no origin) stays when every Docker user leaves.
    import ipaddress
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys, _records
    store = _consul.Consul({"host": "127.0.0.1", "port": lab._consul_forwarder().address[1], "scheme": "http",
                            "token": None, "ca_cert": None, "verify": True, "timeout": 10, "prefix": "overlay"})
    _records.create_network(store, _keys.Layout("overlay"), _keys.network_record(
        "invnet", ipaddress.ip_network("10.66.0.0/24"), "10.66.0.1", None, 1450, 4789, False, "inventory"))
    docker_network_create(s0, "c" * 64, name="invnet", subnet="10.66.0.0/24")
    docker_network_create(s1, "d" * 64, name="invnet", subnet="10.66.0.0/24")
    assert call(s0, "NetworkDriver.DeleteNetwork", {"NetworkID": "c" * 64}) == {}
    assert call(s1, "NetworkDriver.DeleteNetwork", {"NetworkID": "d" * 64}) == {}
    store = kv(lab)
    assert "origin" not in store["overlay/v1/networks/invnet"]
    assert not [k for k in store if k.startswith("overlay/v1/users/")]


def test_difference_passes_leave_every_host_as_a_full_sync_would(lab_factory, collection_path, tmp_path):
    # CreateEndpoint secures only its own port (point requests) and the agents' passes woken by a
    # change apply only what changed; a DeleteEndpoint (the full path) makes the next pass full.
    # No periodic full pass within the test (--wait 300): after a mix of runs and removals on both
    # hosts, a verify (the full repair plan, computed without applying) finds nothing to do.
    import os

    from overlay_helpers import PLAYBOOKS
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    s0, _a0 = start_agent(lab, d0, collection_path, tmp_path, ["--wait", "300"])
    s1, _a1 = start_agent(lab, d1, collection_path, tmp_path, ["--wait", "300"])
    pool, _c = docker_network_create(s0, "a" * 64)
    docker_network_create(s1, "b" * 64)
    runs = []

    def run(i, host, sock, network_id):
        ns = "x%d%s" % (i, host.name[-1])
        host.add_netns(ns)
        endpoint_id = os.urandom(32).hex()
        out = docker_run(host, sock, network_id, endpoint_id, pool["PoolID"], ns)
        assert "Err" not in out and "Error" not in out, out
        runs.append((host, sock, network_id, endpoint_id, ns, out))

    for i in range(4):
        run(i, d0, s0, "a" * 64)
        run(i, d1, s1, "b" * 64)
    for host, sock, network_id, endpoint_id, ns, out in (runs[2], runs[5]):  # docker rm -f, one per host
        call(sock, "NetworkDriver.Leave", {"NetworkID": network_id, "EndpointID": endpoint_id})
        call(sock, "NetworkDriver.DeleteEndpoint", {"NetworkID": network_id, "EndpointID": endpoint_id})
        call(sock, "IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": out["address"].split("/")[0]})
    gone = {runs[2][3], runs[5][3]}
    for i in range(4, 6):  # difference passes again after the full ones
        run(i, d0, s0, "a" * 64)
        run(i, d1, s1, "b" * 64)
    live = [r for r in runs if r[3] not in gone]
    net_id = [v for k, v in kv(lab).items() if k.startswith("overlay/v1/networks/")][0]["id"]
    ns = "ovl-" + net_id[:12]

    def peers_of(host):
        out = ns_exec(host, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
        return {line.split()[0] for line in out.splitlines() if " dst " in line}

    def macs_on(host):
        return {r[5]["mac"] for r in live if r[0] is host}

    assert wait_until(lambda: peers_of(d0) == macs_on(d1) and peers_of(d1) == macs_on(d0), timeout=10), \
        (sorted(peers_of(d0)), sorted(macs_on(d1)), sorted(peers_of(d1)), sorted(macs_on(d0)))
    verify = lab.ansible_playbook(str(PLAYBOOKS / "overlay_verify.yml")).assert_ok()
    for host in ("docker0", "docker1"):  # "gateway": Docker's own docker_gwbridge gives egress, not ours
        diffs = [d for d in verify.results(host, "Verify")["differences"] if d["kind"] != "gateway"]
        assert not diffs, (host, diffs)
    # Every container reaches every other across hosts, and none can send as another address.
    first = next(r for r in live if r[0] is d0)
    for other in [r for r in live if r[0] is d1]:
        assert wait_until(lambda o=other: ping(d0, first[4], o[5]["address"].split("/")[0], wait=1), timeout=5), other
    target = next(r for r in live if r[0] is d1)[5]["address"].split("/")[0]
    ns_exec(d0, first[4], ["ip", "addr", "add", "192.168.0.250/24", "dev", "eth0"], check=True)
    spoofed = ns_exec(d0, first[4], ["ping", "-c", "2", "-W", "1", "-I", "192.168.0.250", target])
    assert spoofed.returncode != 0, "a container sent as an address that is not its own"
