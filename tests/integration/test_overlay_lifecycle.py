"""Containers attached by PID and by path, many endpoints in one task, and a network's removal."""
from __future__ import annotations

from overlay_helpers import PLAYBOOKS, kv, ns_exec, overlay_ns, ping, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")


def pid_pings(host, pid, ip, tries=3):
    cmd = ["nsenter", "-t", str(pid), "-n", "ping", "-c1", "-W2", ip]
    return any(host.run(cmd, check=False).returncode == 0 for _try in range(tries))


NET = {"name": "life", "subnet": "10.60.0.0/24"}


def test_containers_by_pid_and_by_path_and_a_batch_in_one_task(lab_factory):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    pid_a = d0.spawn_container()
    pid_b = d1.spawn_container()
    for i in range(20):
        d0.add_netns("b%d" % i)
    endpoints = {
        "docker0": [{"network": "life", "endpoints": [{"name": "byPid", "namespace": str(pid_a)}] +
                     [{"name": "b%d" % i, "namespace": "b%d" % i} for i in range(20)]}],
        "docker1": [{"network": "life", "endpoints": [{"name": "byPath", "namespace": "/proc/%d/ns/net" % pid_b}]}],
    }
    run = lab.ansible_playbook(SEED, extra_vars=seed_vars([NET], endpoints)).assert_ok()
    batch = run.results("docker0", "Endpoints")["results"][0]
    assert len(batch["endpoints"]) == 21
    assert len({e["ip"] for e in batch["endpoints"]}) == 21
    by_pid = next(e for e in batch["endpoints"] if e["name"] == "byPid")
    assert by_pid["interfaces"]["eth0"]["mtu"] == 1450
    by_path = run.results("docker1", "Endpoints")["results"][0]["endpoints"][0]
    # The container processes' namespaces hold the interfaces.
    out = d1.run(["nsenter", "-t", str(pid_b), "-n", "ip", "-o", "addr", "show", "eth0"]).stdout
    assert by_path["ip"] + "/24" in out
    assert pid_pings(d1, pid_b, by_pid["ip"])
    for e in batch["endpoints"][1:21:5]:
        assert pid_pings(d1, pid_b, e["ip"])
        assert not ping(d1, None, e["ip"], wait=1)  # the host itself stays outside
    again = lab.ansible_playbook(SEED, extra_vars=seed_vars([NET], endpoints)).assert_ok()
    assert again.changed_tasks() == []


def test_network_absent_keeps_the_record_while_endpoints_remain_anywhere(lab_factory):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d0.add_netns("a0")
    endpoints = {"docker0": [{"network": "life", "endpoints": [{"name": "A0", "namespace": "a0"}]}]}
    lab.ansible_playbook(SEED, extra_vars=seed_vars([NET], endpoints)).assert_ok()
    record = kv(lab)["overlay/v1/networks/life"]
    absent = seed_vars([dict(name="life", state="absent")], {})
    # docker1 has no endpoint: its part goes, the record stays for docker0's endpoint.
    run = lab.ansible_playbook(SEED, extra_vars=absent, limit="docker1")
    res = run.results("docker1", "Networks")["results"][0]
    assert res["changed"] and res["kept_in_store"] and res["remaining_endpoints"] == 1
    assert overlay_ns(d1) == [] and "overlay/v1/networks/life" in kv(lab)
    # docker0 still has A0: refused without force, nothing removed.
    run = lab.ansible_playbook(SEED, extra_vars=absent, limit="docker0")
    res = run.results("docker0", "Networks")["results"][0]
    assert res["failed"] and "state: network life still has endpoints on this host (A0)" in res["msg"]
    assert overlay_ns(d0) == ["ovl-" + record["id"][:12]]
    # With force: endpoints, host part, record, VNI and address claims all go.
    forced = seed_vars([dict(name="life", state="absent", force=True)], {})
    lab.ansible_playbook(SEED, extra_vars=forced, limit="docker0").assert_ok()
    assert [k for k in kv(lab) if "/networks/" in k or "/vnis/" in k or "/ipam/" in k or "/endpoints/" in k] == []
    assert overlay_ns(d0) == []
    assert "eth0" not in ns_exec(d0, "a0", ["ip", "-o", "link"]).stdout
    assert not ping(d0, "a0", "198.51.100.1", wait=1)
    again = lab.ansible_playbook(SEED, extra_vars=forced, limit="docker0").assert_ok()
    assert again.changed_tasks() == []


def test_both_hosts_leave_even_after_the_record_is_gone(lab_factory):
    # Whichever host removes the record first, the other must still remove its own part: it finds
    # it by br0's label, and a later network can reuse the VNI on both hosts.
    lab = lab_factory()
    lab.ansible_playbook(SEED, extra_vars=seed_vars([NET], {})).assert_ok()
    assert all(overlay_ns(h) for h in (lab.hosts["docker0"], lab.hosts["docker1"]))
    run = lab.ansible_playbook(SEED, extra_vars=seed_vars([dict(name="life", state="absent")], {})).assert_ok()
    assert {h for h, t in run.changed_tasks() if t == "Networks"} == {"docker0", "docker1"}
    assert overlay_ns(lab.hosts["docker0"]) == [] and overlay_ns(lab.hosts["docker1"]) == []
    assert "overlay/v1/networks/life" not in kv(lab)
    again = dict(NET, name="life2", subnet="10.61.0.0/24")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([again], {})).assert_ok()
    assert kv(lab)["overlay/v1/networks/life2"]["vni"] == 256
