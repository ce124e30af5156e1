"""Issue 7's store and input classes through Ansible on simulated hosts: races between hosts,
batches that fail part-way, stale namespaces, orphans, and input that would destroy something.
Each test asserts the refusal or the recovery AND that nothing else changed."""
from __future__ import annotations

import subprocess

import pytest

from overlay_helpers import PLAYBOOKS, kernel_snapshot, kv, ns_exec, overlay_ns, ping_eventually, together

STEPS = str(PLAYBOOKS / "steps.yml")


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    return module_lab_factory()


def steps(lab, net=None, ep=None, verify=False, limit=None):
    return lab.ansible_playbook(STEPS, extra_vars={"net_args": net or {}, "ep_args": ep or {}, "verify": verify},
                                limit=limit)


def results(result, host, task):
    """The loop items of ``task`` on ``host``, each with a status: ok, changed or failed."""
    event = result.results(host, task)
    items = event.get("results")
    if items is None:  # not a loop (Verify)
        items = [event]
    return [dict(r, status="failed" if r.get("failed") else "changed" if r.get("changed") else "ok") for r in items]


def only(result, host, task):
    found = results(result, host, task)
    assert len(found) == 1, found
    return found[0]


def net_key(records, name):
    return records.get("overlay/v1/networks/%s" % name)


def remove_everything(lab):
    """Leave each test's networks behind it: detach and remove what Consul holds."""
    records = kv(lab)
    eps = {}
    for key, value in records.items():
        if key.startswith("overlay/v1/endpoints/") and isinstance(value, dict):
            eps.setdefault(value["host"], []).append({"network": value["network"], "name": value["name"],
                                                      "state": "absent"})
    steps(lab, ep=eps)
    names = [v["name"] for k, v in kv(lab).items() if k.startswith("overlay/v1/networks/")]
    steps(lab, net={"docker0": [{"name": n, "state": "absent", "force": True} for n in names],
                    "docker1": [{"name": n, "state": "absent", "force": True} for n in names]})
    lab.consul_client().kv.delete("overlay/", recurse=True)
    steps(lab, net={"docker0": [], "docker1": []})


@pytest.fixture(autouse=True)
def _clean(lab):
    yield
    remove_everything(lab)


def test_same_name_created_at_once_with_other_subnets_fails_on_the_loser(lab):
    # Both hosts create demonet at the same moment, each with its own subnet: one wins, the other
    # must fail naming the subnet (whether it lost the race or read the winner's record first).
    for _round in range(3):
        result = steps(lab, net={"docker0": [{"name": "twin", "subnet": "10.61.0.0/24"}],
                                 "docker1": [{"name": "twin", "subnet": "10.62.0.0/24"}]})
        outcomes = {h: only(result, h, "Network") for h in ("docker0", "docker1")}
        stored = net_key(kv(lab), "twin")
        winner = "docker0" if stored["subnet"] == "10.61.0.0/24" else "docker1"
        loser = "docker1" if winner == "docker0" else "docker0"
        assert outcomes[winner]["status"] in ("ok", "changed")
        assert outcomes[loser]["status"] == "failed"
        assert outcomes[loser]["msg"].startswith("subnet: network twin already exists with subnet %s"
                                                 % stored["subnet"])
        assert overlay_ns(lab.hosts[loser]) == []
        remove_everything(lab)


def test_a_batch_that_runs_out_of_addresses_releases_what_it_claimed(lab):
    d0 = lab.hosts["docker0"]
    d0.add_netns("pb")
    steps(lab, net={"docker0": [{"name": "small", "subnet": "10.63.0.0/27"}]})  # 29 free addresses
    before = kv(lab)
    eps = [{"name": "P%d" % i, "namespace": "pb", "ifname": "o%d" % i, "gateway_ifname": "g%d" % i}
           for i in range(30)]
    result = steps(lab, ep={"docker0": [{"network": "small", "endpoints": eps}]})
    res = only(result, "docker0", "Endpoint")
    assert res["status"] == "failed"
    assert "ip: subnet 10.63.0.0/27 has 5 free addresses; 6 are needed" in res["msg"]  # the third chunk of 12
    assert kv(lab) == before  # the first two transactions' 24 endpoints were released again
    assert ns_exec(d0, "pb", ["ip", "-o", "link"]).stdout.count("\n") == 1  # lo only
    d0.del_netns("pb")


def test_attach_after_removal_on_another_host_is_refused_and_leaves_nothing(lab):
    d1 = lab.hosts["docker1"]
    d1.add_netns("ra")
    steps(lab, net={"docker0": [{"name": "gone", "subnet": "10.64.0.0/24"}],
                    "docker1": [{"name": "gone", "subnet": "10.64.0.0/24"}]})
    # Removal on docker0 and attach on docker1 at once, many times: whichever commits first wins,
    # and never both (no endpoint record or claim under a network that is gone).
    for _round in range(4):
        removed, attached = together(
            lambda: steps(lab, net={"docker0": [{"name": "gone", "state": "absent"}]}, limit="docker0"),
            lambda: steps(lab, ep={"docker1": [{"network": "gone", "name": "RA", "namespace": "ra"}]},
                          limit="docker1"))
        records = kv(lab)
        network = net_key(records, "gone")
        if network is None:
            assert not [k for k in records if "/endpoints/" in k or "/ipam/" in k or "/macs/" in k
                        or "/gateway-ipam/" in k], records
            assert only(attached, "docker1", "Endpoint")["status"] == "failed"
        else:
            assert not network.get("removing")
            assert only(removed, "docker0", "Network")["kept_in_store"] in (True, False)
        steps(lab, ep={"docker1": [{"network": "gone", "name": "RA", "state": "absent"}]}, limit="docker1")
        steps(lab, net={"docker0": [{"name": "gone", "subnet": "10.64.0.0/24"}],
                        "docker1": [{"name": "gone", "subnet": "10.64.0.0/24"}]})
    d1.del_netns("ra")


def test_a_stale_namespace_does_not_block_the_next_network_with_its_vni(lab):
    d1 = lab.hosts["docker1"]
    steps(lab, net={"docker0": [{"name": "old", "subnet": "10.65.0.0/24"}],
                    "docker1": [{"name": "old", "subnet": "10.65.0.0/24"}]})
    old = net_key(kv(lab), "old")
    # docker0 removes the network; docker1 never runs absent and keeps its namespace.
    steps(lab, net={"docker0": [{"name": "old", "state": "absent"}]}, limit="docker0")
    assert net_key(kv(lab), "old") is None and "ovl-" + old["id"][:12] in overlay_ns(d1)
    result = steps(lab, net={"docker0": [{"name": "new", "subnet": "10.66.0.0/24"}],
                             "docker1": [{"name": "new", "subnet": "10.66.0.0/24"}]})
    new = net_key(kv(lab), "new")
    assert new["vni"] == old["vni"]  # the VNI was free again
    for host in ("docker0", "docker1"):
        assert only(result, host, "Network")["status"] == "changed", only(result, host, "Network")
    assert overlay_ns(d1) == ["ovl-" + new["id"][:12]]
    vx = ns_exec(d1, "ovl-" + new["id"][:12], ["ip", "-d", "link", "show", "vxlan0"]).stdout
    assert "vxlan id %d" % new["vni"] in vx


def test_after_consul_is_wiped_a_rerun_converges_every_host(lab):
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d0.add_netns("w0")
    d1.add_netns("w1")
    nets = [{"name": "wiped", "subnet": "10.67.0.0/24"}]
    eps = {"docker0": [{"network": "wiped", "name": "W0", "namespace": "w0", "ip": "10.67.0.100"}],
           "docker1": [{"network": "wiped", "name": "W1", "namespace": "w1"}]}
    steps(lab, net={"docker0": nets, "docker1": nets}, ep=eps)
    lab.consul_client().kv.delete("overlay/", recurse=True)  # Consul rebuilt empty
    result = steps(lab, net={"docker0": nets, "docker1": nets}, ep=eps)
    for host in ("docker0", "docker1"):
        assert only(result, host, "Endpoint")["status"] == "changed", only(result, host, "Endpoint")
    result = steps(lab, net={"docker0": nets, "docker1": nets})  # peers
    new = net_key(kv(lab), "wiped")
    for host in (d0, d1):
        assert overlay_ns(host) == ["ovl-" + new["id"][:12]]
    assert ping_eventually(d1, "w1", "10.67.0.100")
    for host, ns in ((d0, "w0"), (d1, "w1")):
        host.del_netns(ns)


def test_orphans_are_reported_on_every_host_and_collected(lab):
    d0 = lab.hosts["docker0"]
    d0.add_netns("o0")
    d0.add_netns("o1")
    nets = [{"name": "orph", "subnet": "10.68.0.0/24"}]
    steps(lab, net={"docker0": nets, "docker1": nets},
          ep={"docker0": [{"network": "orph", "endpoints": [{"name": "O0", "namespace": "o0"},
                                                            {"name": "O1", "namespace": "o1"}]}]})
    network = net_key(kv(lab), "orph")
    c = lab.consul_client()
    d0.del_netns("o0")  # a container removed without a detach
    c.kv.put("overlay/v1/ipam/%s/10.68.0.77" % network["id"], '{"endpoint": "nobody"}')  # a claim without a record
    c.kv.put("overlay/v1/endpoints/%s/Z9" % ("f" * 64), '{"name": "Z9", "host": "docker1", "ip": "10.1.1.1", '
             '"mac": "02:42:0a:01:01:01", "network_id": "%s", "id": "%s"}' % ("f" * 64, "e" * 64))
    ovl = "ovl-" + network["id"][:12]
    d0.run(["ip", "-n", ovl, "link", "add", "ve-0123456789", "type", "veth", "peer", "name", "strayp"])
    result = steps(lab, verify=True)
    for host in ("docker0", "docker1"):
        diffs = only(result, host, "Verify")["differences"]
        text = "\n".join(d["difference"] for d in diffs)
        assert "10.68.0.77: no record holds it" in text, text
        assert "/Z9: its network is gone" in text, text
        if host == "docker0":
            assert "/O0: its interfaces are gone" in text, text
            assert "ve-0123456789 in %s: no record owns it" % ovl in text, text
        assert only(result, host, "Verify")["in_sync"] is False
    # A pass with no grace period releases all of it; O1 (alive) stays.
    steps(lab, net={"docker0": [dict(nets[0], gc_grace=0)], "docker1": [dict(nets[0], gc_grace=0)]})
    records = kv(lab)
    assert "overlay/v1/endpoints/%s/O0" % network["id"] not in records
    assert "overlay/v1/endpoints/%s/O1" % network["id"] in records
    assert not [k for k in records if k.endswith("/10.68.0.77") or "/Z9" in k]
    assert "ve-0123456789" not in d0.run(["ip", "-n", ovl, "-o", "link"]).stdout
    # docker1's run may have synced its peers before docker0 released O0: its next run catches up.
    steps(lab, net={"docker0": nets, "docker1": nets})
    result = steps(lab, verify=True)
    for host in ("docker0", "docker1"):
        assert only(result, host, "Verify")["in_sync"] is True, only(result, host, "Verify")["differences"]
    d0.del_netns("o1")


def test_input_that_would_destroy_is_refused_and_changes_nothing(lab):
    d0 = lab.hosts["docker0"]
    for ns in ("x0", "x1", "x2"):
        d0.add_netns(ns)
    nets = [{"name": "safe", "subnet": "10.69.0.0/24"}]
    x0 = {"network": "safe", "name": "X0", "namespace": "x0", "ip": "10.69.0.10"}
    steps(lab, net={"docker0": nets}, ep={"docker0": [x0]}, limit="docker0")
    # A container's own eth0 that overlay.vxlan did not make.
    d0.run(["ip", "-n", "x2", "link", "add", "eth0", "type", "veth", "peer", "name", "mine"])
    cases = [
        ("host-namespace", {"network": "safe", "name": "H", "namespace": str(d0.pid)},
         "is this host's own network namespace; an endpoint needs a namespace of its own"),
        ("foreign-eth0", {"network": "safe", "name": "F", "namespace": "x2"},
         "ifname: namespace x2 already has a veth device named eth0 that overlay.vxlan did not create"),
        ("live-takeover", {"network": "safe", "name": "X0", "namespace": "x1"},
         "namespace: endpoint X0 is attached to another namespace (x0) that still exists"),
        ("same-ifname", {"network": "safe", "endpoints": [{"name": "A", "namespace": "x1"},
                                                          {"name": "B", "namespace": "x1"}]},
         "endpoints[1].ifname: endpoints A and B both want interface eth0 in namespace x1"),
        ("mac-taken", {"network": "safe", "name": "M", "namespace": "x1", "mac": "02:42:0a:45:00:0a"},
         "mac: 02:42:0a:45:00:0a is already used by endpoint X0"),
        ("gateway-subnet", {"network": "safe", "name": "G", "namespace": "x1", "gateway_subnet": "172.19.0.0/16"},
         "gateway_subnet: the gateway bridge docker_gwbridge already has 172.18.0.1/16"),
    ]
    net_cases = [("overlapping", {"name": "over", "subnet": "10.69.0.128/25"},
                  "subnet: 10.69.0.128/25 overlaps 10.69.0.0/24 of network safe")]
    before_kv, before_kernel = kv(lab), kernel_snapshot(d0)
    result = steps(lab, net={"docker0": [c[1] for c in net_cases]}, ep={"docker0": [c[1] for c in cases]},
                   limit="docker0")
    got = results(result, "docker0", "Endpoint") + [None] * 0
    wrong = [(cid, r.get("msg")) for (cid, _a, want), r in zip(cases, got) if r["status"] != "failed"
             or want not in r.get("msg", "")]
    net_got = results(result, "docker0", "Network")
    wrong += [(cid, r.get("msg")) for (cid, _a, want), r in zip(net_cases, net_got) if r["status"] != "failed"
              or want not in r.get("msg", "")]
    assert wrong == []
    assert kv(lab) == before_kv
    assert kernel_snapshot(d0) == before_kernel
    # force replaces the foreign interface; a restarted container (old namespace gone) is taken over.
    result = steps(lab, ep={"docker0": [{"network": "safe", "name": "F", "namespace": "x2", "force": True}]},
                   limit="docker0")
    assert only(result, "docker0", "Endpoint")["status"] == "changed"
    d0.del_netns("x0")
    result = steps(lab, ep={"docker0": [{"network": "safe", "name": "X0", "namespace": "x1"}]}, limit="docker0")
    res = only(result, "docker0", "Endpoint")
    assert res["status"] == "changed" and res["endpoints"][0]["ip"] == "10.69.0.10"
    for ns in ("x1", "x2"):
        d0.del_netns(ns)


def test_attach_racing_detach_of_the_same_endpoint_never_orphans_interfaces(lab):
    d0 = lab.hosts["docker0"]
    d0.add_netns("rd")
    nets = [{"name": "churn", "subnet": "10.70.0.0/24"}]
    steps(lab, net={"docker0": nets}, limit="docker0")
    for _round in range(6):
        together(lambda: steps(lab, ep={"docker0": [{"network": "churn", "name": "R", "namespace": "rd"}]},
                               limit="docker0"),
                 lambda: steps(lab, ep={"docker0": [{"network": "churn", "name": "R", "state": "absent"}]},
                               limit="docker0"))
        records = kv(lab)
        network = net_key(records, "churn")
        has_record = "overlay/v1/endpoints/%s/R" % network["id"] in records
        links = ns_exec(d0, "rd", ["ip", "-o", "link"]).stdout
        assert has_record == ("eth0@" in links), (has_record, links)
        assert has_record == ("eth1@" in links), (has_record, links)
    d0.del_netns("rd")


HOLD_UDP = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', int(sys.argv[1])))\n"
            "print('ready', flush=True); time.sleep(120)\n")


def test_a_vxlan_port_in_use_is_refused_naming_port_and_leaves_nothing(lab):
    d0 = lab.hosts["docker0"]
    holder = subprocess.Popen(d0.nsenter_cmd() + ["python3", "-c", HOLD_UDP, "4800"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before_kv, before_kernel = kv(lab), kernel_snapshot(d0)
        result = steps(lab, net={"docker0": [{"name": "porty", "subnet": "10.72.0.0/24", "port": 4800}]},
                       limit="docker0")
        res = only(result, "docker0", "Network")
        assert res["status"] == "failed", res
        assert res["msg"].startswith("port: UDP port 4800 is already in use on this host"), res["msg"]
        assert "Traceback" not in res.get("module_stderr", "")
        # Nothing claimed survives (the host's own registration may be refreshed), nothing built stays.
        after = kv(lab)
        assert {k: v for k, v in after.items() if "/hosts/" not in k} == \
            {k: v for k, v in before_kv.items() if "/hosts/" not in k}
        assert kernel_snapshot(d0) == before_kernel
    finally:
        holder.kill()
        holder.wait()
    # With the port free the same task builds the network.
    result = steps(lab, net={"docker0": [{"name": "porty", "subnet": "10.72.0.0/24", "port": 4800}]},
                   limit="docker0")
    assert only(result, "docker0", "Network")["status"] == "changed"


def test_attach_racing_a_forced_removal_on_the_same_host_ends_in_a_clear_result(lab):
    # Issue 12 section 5 (the chaos run): an attach on the same host as a concurrent
    # `state: absent force=true` of its network died with a Python traceback. Each run ends with a
    # result (ok, changed, or failed with a message), never a traceback, and what is left agrees.
    d0 = lab.hosts["docker0"]
    for i in range(4):
        d0.add_netns("f%d" % i)
    net = {"name": "doomed", "subnet": "10.74.0.0/24"}
    eps = [{"name": "F%d" % i, "namespace": "f%d" % i} for i in range(4)]
    for _round in range(4):
        steps(lab, net={"docker0": [net]}, limit="docker0")
        attached, removed = together(
            lambda: steps(lab, ep={"docker0": [{"network": "doomed", "endpoints": eps}]}, limit="docker0"),
            lambda: steps(lab, net={"docker0": [{"name": "doomed", "state": "absent", "force": True}]},
                          limit="docker0"))
        outcome = (only(attached, "docker0", "Endpoint"), only(removed, "docker0", "Network"))
        print("round %d: attach %s, removal %s" % (_round, outcome[0]["status"], outcome[1]["status"]),
              outcome[0].get("msg", ""), outcome[1].get("msg", ""))
        for res in outcome:
            assert "module_stderr" not in res and "Traceback" not in str(res.get("msg", "")), res
            assert res["status"] != "failed" or res.get("msg"), res
        records = kv(lab)
        network = net_key(records, "doomed")
        for i in range(4):
            links = ns_exec(d0, "f%d" % i, ["ip", "-o", "link"]).stdout
            has_record = network is not None and "overlay/v1/endpoints/%s/F%d" % (network["id"], i) in records
            assert has_record == ("eth0@" in links), (i, has_record, links)
        # Whatever won, a forced removal afterwards leaves nothing.
        steps(lab, net={"docker0": [{"name": "doomed", "state": "absent", "force": True}]}, limit="docker0")
        assert net_key(kv(lab), "doomed") is None
    for i in range(4):
        d0.del_netns("f%d" % i)
