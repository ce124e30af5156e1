"""Issue 12 item 2 with a real 3-server Consul cluster in the lab: the leader is killed while two
hosts attach batches through Ansible (each talking to a follower) and the peers service runs on
both. A leader election must be a transient failure: every run succeeds, Consul holds no
duplicate address or MAC, nothing is left claimed without interfaces, and both hosts' tables
match Consul (packets cross)."""
from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from lab.core import CONSUL_BIN, CONSUL_PORT
from overlay_helpers import PLAYBOOKS, kv, ns_exec, ping_eventually

STEPS = str(PLAYBOOKS / "steps.yml")
SERVERS = {"s1": "10.0.0.5", "s2": "10.0.0.6", "s3": "10.0.0.7"}
HOSTS = {**SERVERS, "docker0": "10.0.0.10", "docker1": "10.0.0.11"}
NET = {"name": "quorum", "subnet": "10.77.0.0/24"}
BATCHES, PER_BATCH = 4, 8


def _get(lab, name, path):
    fwd = lab._cluster_fwd.get(name)  # one forwarder per server (the fixture starts the map)
    if fwd is None:
        fwd = lab._cluster_fwd[name] = lab.forward(SERVERS[name], CONSUL_PORT)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open("http://%s:%d%s" % (fwd.address[0], fwd.address[1], path), timeout=2).read().decode()


def leader(lab, ask):
    """The leader's name as server ``ask`` sees it ('' while there is none)."""
    try:
        addr = _get(lab, ask, "/v1/status/leader").strip().strip('"')
    except OSError:
        return ""
    return next((n for n, ip in SERVERS.items() if addr.startswith(ip + ":")), "")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


@pytest.fixture
def cluster(lab_factory):
    lab = lab_factory(HOSTS, consul=None, groups={"consul_servers": list(SERVERS),
                                                  "overlay_hosts": ["docker0", "docker1"]},
                      inventory_vars={"lab_consul_addr": "%s:%d" % (SERVERS["s1"], CONSUL_PORT)})
    lab._cluster_fwd = {}
    procs = {}
    for name, ip in SERVERS.items():
        h = lab.hosts[name]
        data = lab.workdir / "hosts" / name / "consul-data"
        data.mkdir(parents=True, exist_ok=True)
        joins = [a for other, oip in SERVERS.items() if other != name for a in ("-retry-join", oip)]
        # raft_multiplier 1: elections in about a second (the production setting; Consul's default 5 is for
        # small machines), which is the window every run in flight must ride through.
        procs[name] = lab._spawn("consul", name, h.nsenter_cmd() + [
            str(CONSUL_BIN), "agent", "-server", "-bootstrap-expect", "3", "-node", name, "-data-dir", str(data),
            "-bind", ip, "-client", ip, *joins, "-hcl", "disable_update_check = true",
            "-hcl", "performance { raft_multiplier = 1 }"])
    wait_for(lambda: all(leader(lab, n) for n in SERVERS), 60, "a leader seen by all three servers")
    return lab, procs


def _static_fdb(host, ns):
    out = ns_exec(host, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    return {line.split()[0] for line in out.splitlines() if " dst " in line}


def test_a_leader_killed_mid_batch_fails_no_run(cluster, collection_path):
    lab, procs = cluster
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    for host in (d0, d1):
        for i in range(BATCHES * PER_BATCH):
            host.add_netns("q%d" % i)
    # The hosts talk to a follower (as to a local agent); the leader is the victim.
    first = leader(lab, "s1")
    talk = next(n for n in SERVERS if n != first)
    lab.consul_host = talk  # lab.consul_client() (kv()) asks it too
    addr = {"lab_consul_addr": "%s:%d" % (SERVERS[talk], CONSUL_PORT)}
    lab.ansible_playbook(STEPS, extra_vars=dict(addr, net_args={"docker0": [NET], "docker1": [NET]})).assert_ok()
    for host in (d0, d1):
        lab._spawn("peers", host.name, host.nsenter_cmd() + [
            "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
            "ansible_collections.overlay.vxlan.agent",
            "--host", host.name, "--vtep", "eth0", "--consul-host", SERVERS[talk]])
    results = {}

    def attach(host):
        runs = []
        for b in range(BATCHES):
            eps = [{"name": "%s-%d" % (host.upper(), b * PER_BATCH + i), "namespace": "q%d" % (b * PER_BATCH + i)}
                   for i in range(PER_BATCH)]
            runs.append(lab.ansible_playbook(STEPS, extra_vars=dict(
                addr, ep_args={host: [{"network": "quorum", "endpoints": eps}]}), limit=host))
        results[host] = runs

    threads = [threading.Thread(target=attach, args=(h,)) for h in ("docker0", "docker1")]
    for t in threads:
        t.start()
    # Kill the leader once the first batches are in Consul (the runs are mid-way: claims landing).
    wait_for(lambda: sum(k.startswith("overlay/v1/endpoints/") for k in kv(lab)) >= PER_BATCH, 60,
             "the first batch in Consul")
    assert all(t.is_alive() for t in threads), "the runs ended before the leader could be killed"
    killed_at = time.monotonic()
    lab._stop_procs([procs[first]])
    new = wait_for(lambda: leader(lab, talk) not in ("", first) and leader(lab, talk), 30, "a new leader")
    print("leader %s killed; %s elected after %.2fs" % (first, new, time.monotonic() - killed_at))
    for t in threads:
        t.join()
    failed = [(h, i, r.stdout[-1500:]) for h, runs in results.items() for i, r in enumerate(runs) if r.rc != 0]
    assert failed == [], failed

    records = kv(lab)
    net = records["overlay/v1/networks/quorum"]
    eps = {k: v for k, v in records.items() if k.startswith("overlay/v1/endpoints/%s/" % net["id"])}
    assert len(eps) == 2 * BATCHES * PER_BATCH, sorted(eps)
    ips = [v["ip"] for v in eps.values()]
    macs = [v["mac"] for v in eps.values()]
    assert len(set(ips)) == len(ips) and len(set(macs)) == len(macs)
    # Every claim belongs to a record (nothing claimed survives), and every record has its interfaces.
    claims = {k.rsplit("/", 1)[1] for k in records if k.startswith("overlay/v1/ipam/%s/" % net["id"])}
    assert claims <= set(ips) | {net["gateway"]}, claims - set(ips)
    mac_claims = {k.rsplit("/", 1)[1] for k in records if k.startswith("overlay/v1/macs/%s/" % net["id"])}
    assert mac_claims <= set(macs), mac_claims - set(macs)
    gw_claims = [k for k in records if k.startswith("overlay/v1/gateway-ipam/")]
    assert len(gw_claims) == len(eps), len(gw_claims)
    ns = "ovl-" + net["id"][:12]
    for host, other in ((d0, "docker1"), (d1, "docker0")):
        mine = [v for v in eps.values() if v["host"] == host.name]
        for v in mine:
            assert "eth0@" in ns_exec(host, v["namespace"], ["ip", "-o", "link"]).stdout, v
        theirs = {v["mac"] for v in eps.values() if v["host"] == other}
        wait_for(lambda h=host, t=theirs: t <= _static_fdb(h, ns), 10, "%s's FDB towards %s" % (host.name, other))
    a = next(v for v in eps.values() if v["host"] == "docker0")
    b = next(v for v in eps.values() if v["host"] == "docker1")
    assert ping_eventually(d0, a["namespace"], b["ip"])
    verify = lab.ansible_playbook(STEPS, extra_vars=dict(addr, verify=True)).assert_ok()
    for host in ("docker0", "docker1"):
        assert verify.results(host, "Verify")["in_sync"], verify.results(host, "Verify")
