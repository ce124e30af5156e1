"""The peers service: a remote host's vxlan0 learns a new endpoint without an Ansible run there."""
from __future__ import annotations

import time

from overlay_helpers import DEMONET, PLAYBOOKS, kv, ns_exec, ping, seed_vars, together, write_records

SEED = str(PLAYBOOKS / "overlay_seed.yml")


def wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_watcher_adds_and_removes_remote_endpoints(lab_factory, collection_path):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d1.add_netns("c1")
    d0.add_netns("c0")
    # docker1 joins demonet with C1; docker0 only creates its part of the network.
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker1": [
        {"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]}]})).assert_ok()
    watcher = lab._spawn("peers", d1.name, d1.nsenter_cmd() + [
        "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
        "ansible_collections.overlay.vxlan.agent",
        "--host", "docker1", "--vtep", "eth0", "--consul-host", "10.0.0.5"])
    demonet = kv(lab)["overlay/v1/networks/demonet"]
    ns = "ovl-" + demonet["id"][:12]

    def fdb_has(mac):
        # Only the static entry towards docker0; br0 may also have learned the MAC from traffic.
        return "%s dst 10.0.0.10" % mac in ns_exec(d1, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout

    # C0 attaches on docker0 alone; docker1 gets no Ansible run at all.
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
        {"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0", "ip": "192.168.0.100"}]}]}),
        limit="docker0").assert_ok()
    assert wait_until(lambda: fdb_has("02:42:c0:a8:00:64")), "the watcher did not add C0's FDB entry"
    assert wait_until(lambda: ping(d1, "c1", "192.168.0.100", wait=1), timeout=5)

    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
        {"network": "demonet", "state": "absent", "endpoints": [{"name": "C0"}]}]}), limit="docker0").assert_ok()
    assert wait_until(lambda: not fdb_has("02:42:c0:a8:00:64")), "the watcher did not remove C0's FDB entry"
    assert "192.168.0.100 " not in ns_exec(d1, ns, ["ip", "neigh", "show", "dev", "vxlan0"]).stdout
    assert watcher.popen.poll() is None, "the watcher died"


def _static_macs(host, ns):
    out = ns_exec(host, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    return {line.split()[0] for line in out.splitlines() if " dst " in line}


def _permanent_neighbours(host, ns):
    out = ns_exec(host, ns, ["ip", "neigh", "show", "dev", "vxlan0", "nud", "permanent"]).stdout
    return {line.split()[0] for line in out.splitlines()}


def test_a_sync_from_an_older_read_never_removes_newer_peers(lab_factory, collection_path):
    # Issue 12 section 5: docker0's 25-endpoint attach runs while docker1 attaches 5; a module sync
    # based on a read taken before docker1's records landed removed them and the service never put
    # them back. With the peers service on both hosts, both tables match Consul soon after both runs.
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    for i in range(25):
        d0.add_netns("a%d" % i)
    for i in range(10):
        d1.add_netns("b%d" % i)
    net = {"name": "busy", "subnet": "10.73.0.0/24"}
    lab.ansible_playbook(SEED, extra_vars=seed_vars([net], {})).assert_ok()
    for host in (d0, d1):
        lab._spawn("peers", host.name, host.nsenter_cmd() + [
            "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
            "ansible_collections.overlay.vxlan.agent",
            "--host", host.name, "--vtep", "eth0", "--consul-host", "10.0.0.5"])
    ns = "ovl-" + kv(lab)["overlay/v1/networks/busy"]["id"][:12]

    def in_consul(host):
        return {(v["mac"], v["ip"]) for k, v in kv(lab).items()
                if k.startswith("overlay/v1/endpoints/") and v["host"] == host}

    def tables_match():
        return all({m for m, _ip in in_consul(other)} == _static_macs(host, ns)
                   and {ip for _m, ip in in_consul(other)} == _permanent_neighbours(host, ns)
                   for host, other in ((d0, "docker1"), (d1, "docker0")))

    rounds = [  # (docker0's endpoints task, docker1's)
        ({"network": "busy", "endpoints": [{"name": "A%d" % i, "namespace": "a%d" % i} for i in range(25)]},
         {"network": "busy", "endpoints": [{"name": "B%d" % i, "namespace": "b%d" % i} for i in range(5)]}),
        ({"network": "busy", "state": "absent", "endpoints": [{"name": "A%d" % i} for i in range(25)]},
         {"network": "busy", "endpoints": [{"name": "B%d" % i, "namespace": "b%d" % i} for i in range(5, 10)]}),
    ]
    for n, (task0, task1) in enumerate(rounds):
        runs = together(*[lambda h=h, t=t: lab.ansible_playbook(SEED, extra_vars=seed_vars([net], {h: [t]}), limit=h)
                          for h, t in (("docker0", task0), ("docker1", task1))])
        for r in runs:
            r.assert_ok()
        # Well inside the service's periodic full resync (30 s): only a correct sync order passes.
        assert wait_until(tables_match, timeout=5), "round %d: docker0 %s / docker1 %s" % (
            n, sorted(_static_macs(d0, ns)), sorted(_static_macs(d1, ns)))
    assert len(_static_macs(d0, ns)) == 10 and _static_macs(d1, ns) == set()


def test_change_passes_apply_what_changed_and_full_passes_repair_drift(lab_factory, collection_path):
    # Records written straight into Consul as a far host's run would (with their change marks): the
    # service moves an FDB entry whose record changed, removes one whose record went; a change pass
    # writes only what changed (it never reads the tables back), and the periodic full resync repairs
    # a hand-deleted entry.
    lab = lab_factory()
    d1 = lab.hosts["docker1"]
    d1.add_netns("c1")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker1": [
        {"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]}]}), limit="docker1").assert_ok()
    watcher = lab._spawn("peers", d1.name, d1.nsenter_cmd() + [
        "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
        "ansible_collections.overlay.vxlan.agent",
        "--host", "docker1", "--vtep", "eth0", "--consul-host", "10.0.0.5", "--wait", "6"])
    log_path = lab._log_path("peers", "docker1")
    net = kv(lab)["overlay/v1/networks/demonet"]
    ns = "ovl-" + net["id"][:12]

    def put(name, ip, vtep):
        mac = "02:42:" + ":".join("%02x" % int(b) for b in ip.split("."))
        record = {"schema": 1, "id": "%064x" % int(ip.split(".")[-1]), "name": name, "network_id": net["id"],
                  "network": "demonet", "ip": ip, "prefixlen": 24, "mac": mac, "host": "far", "vtep": vtep,
                  "ifname": "eth0", "gateway_ip": None, "namespace": "x"}
        write_records(lab, collection_path, {"overlay/v1/endpoints/%s/%s" % (net["id"], name): record})
        return mac

    def fdb(mac):
        out = ns_exec(d1, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
        return {line.split(" dst ")[1].split()[0] for line in out.splitlines() if line.startswith(mac + " ") and " dst " in line}

    def neighbour(ip):
        return ip in _permanent_neighbours(d1, ns)

    f1 = put("F1", "192.168.0.201", "10.0.0.10")
    assert wait_until(lambda: fdb(f1) == {"10.0.0.10"} and neighbour("192.168.0.201")), log_path.read_text()
    f1 = put("F1", "192.168.0.201", "10.0.0.12")  # the record changed: its entry moves
    assert wait_until(lambda: fdb(f1) == {"10.0.0.12"}), (fdb(f1), log_path.read_text())
    assert neighbour("192.168.0.201")
    # Deleted and created again at once under the same name on a third host (two transactions back
    # to back, one wake or two): the change pass re-reads the record's shard and follows.
    write_records(lab, collection_path, {"overlay/v1/endpoints/%s/F1" % net["id"]: None})
    f1 = put("F1", "192.168.0.201", "10.0.0.13")
    assert wait_until(lambda: fdb(f1) == {"10.0.0.13"}, timeout=3), (fdb(f1), log_path.read_text())
    assert neighbour("192.168.0.201")

    # Drift: F1's neighbour deleted by hand. The change pass that brings F2 writes F2's entries only ...
    time.sleep(1)  # the move's pass is over
    ns_exec(d1, ns, ["ip", "neigh", "del", "192.168.0.201", "dev", "vxlan0"], check=True)
    f2 = put("F2", "192.168.0.202", "10.0.0.10")
    assert wait_until(lambda: fdb(f2) == {"10.0.0.10"} and neighbour("192.168.0.202")), log_path.read_text()
    assert not neighbour("192.168.0.201"), "a change pass read the tables back (or a full pass came early)"
    # ... and the periodic full resync (--wait 6: 6 s after the last change) repairs it.
    assert wait_until(lambda: neighbour("192.168.0.201"), timeout=15), log_path.read_text()
    assert "neigh: add 192.168.0.201 lladdr %s" % f1 in log_path.read_text()

    write_records(lab, collection_path, {"overlay/v1/endpoints/%s/F1" % net["id"]: None})  # the record went: its entries go
    assert wait_until(lambda: fdb(f1) == set() and not neighbour("192.168.0.201")), log_path.read_text()
    assert fdb(f2) == {"10.0.0.10"} and neighbour("192.168.0.202")
    assert watcher.popen.poll() is None, "the watcher died"
    log = log_path.read_text()
    assert "sync failed" not in log and "error" not in log and "Traceback" not in log, log
