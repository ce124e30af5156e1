"""The peers service: a remote host's vxlan0 learns a new endpoint without an Ansible run there."""
from __future__ import annotations

import time

from overlay_helpers import DEMONET, PLAYBOOKS, kv, ns_exec, ping, seed_vars

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
        "ansible_collections.overlay.vxlan.plugins.module_utils._watch",
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
