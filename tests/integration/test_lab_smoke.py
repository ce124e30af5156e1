"""Smoke tests of the namespace lab itself (tests/integration/lab)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from lab import INTERNET_IP, REPO, Lab, LabError, find_state, nsutil

PLAYBOOK = """\
- name: Smoke
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:

    - name: Read hostname
      ansible.builtin.command: hostname
      changed_when: false

    - name: Always changes
      ansible.builtin.command: "true"
"""

HOSTS = {"consul": "10.0.0.5", "docker0": "10.0.0.10", "docker1": "10.0.0.11"}


def _ns_refs() -> dict[str, set[int]]:
    """Every namespace inode still referenced by a process, an open fd or a mount."""
    refs: dict[str, set[int]] = {k: set() for k in nsutil.NS_KINDS}
    pat = re.compile(r"^(net|mnt|uts):\[(\d+)\]$")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        links = [f"/proc/{pid}/ns/{k}" for k in nsutil.NS_KINDS]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                m = pat.match(os.readlink(link))
            except OSError:
                continue
            if m:
                refs[m[1]].add(int(m[2]))
    with open("/proc/self/mountinfo") as f:   # ns bind-mounted in the root mount ns
        for m in re.finditer(r"\b(net|mnt|uts):\[(\d+)\]", f.read()):
            refs[m[1]].add(int(m[2]))
    return refs


def test_lab_smoke(tmp_path, collection_path):
    lab = Lab(tmp_path / "lab", HOSTS, collections_path=collection_path)
    try:
        lab.start()
        assert lab.timings["start"] < 10, lab.timings
        # Recorded PIDs are the long-lived processes themselves, not wrappers.
        comms = {p.role: open(f"/proc/{p.pid}/comm").read().strip() for p in lab._procs}
        assert comms == {"holder": "sleep", "sshd": "sshd", "consul": "consul"}
        assert (Path(collection_path) / "ansible_collections/overlay/vxlan/MANIFEST.json").exists()

        # Ansible over SSH, inside the controller netns.
        pb = tmp_path / "smoke.yml"
        pb.write_text(PLAYBOOK)
        res = lab.ansible_playbook(pb)
        res.assert_ok()
        for name in HOSTS:
            assert res.results(name, "Ping")["ping"] == "pong"
            assert res.results(name, "Read hostname")["stdout"] == name
            assert res.results(name, "Read hostname")["changed"] is False
            assert res.changed_count(name) == 1
        assert res.changed_count() == len(HOSTS)
        assert res.failed == []

        # Underlay connectivity and the simulated internet.
        d0 = lab.hosts["docker0"]
        d0.run(["ping", "-c1", "-W2", HOSTS["docker1"]])
        d0.run(["ping", "-c1", "-W2", INTERNET_IP])

        # Consul, from the root netns through the forwarder.
        c = lab.consul_client()
        assert c.kv.put("smoke/key", "value")
        assert c.kv.get("smoke/key")[1]["Value"] == b"value"

        # Per-host private named netns, reachable from the root ns with pyroute2.
        path = d0.add_netns("ctr1")
        assert lab.hosts["docker1"].list_netns() == []
        assert "ctr1" not in os.listdir("/run/netns")
        with IPRoute(netns=path, flags=0) as ipr:
            assert [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()] == ["lo"]
        with IPRoute(netns=d0.netns_path(), flags=0) as ipr:
            assert {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()} == {"lo", "eth0"}
        cpid = d0.spawn_container()
        assert nsutil.ns_inode(cpid, "net") != nsutil.ns_inode(d0.pid, "net")
        # A process the lab did not start itself: stop() must find and kill it too.
        stranger = subprocess.Popen(d0.nsenter_cmd() + ["ip", "netns", "exec", "ctr1", "sleep", "300"])

        pids = lab.processes()
        inodes = lab.namespace_inodes()
        assert sum(len(v) for v in inodes.values()) >= 3 * len(HOSTS) + 4
    finally:
        lab.stop()
    stranger.wait(timeout=5)

    # Nothing survives stop(): no process, no namespace.
    alive = [p for p in pids if nsutil.pid_alive(p)]
    assert alive == [], alive
    assert nsutil.pids_in_namespaces(inodes) == []
    refs = _ns_refs()
    for kind, wanted in inodes.items():
        assert not (wanted & refs[kind]), f"{kind} namespaces still referenced"
    lab.stop()  # idempotent


def test_fixture_lab_consul_restart(lab):
    """The module-scoped lab fixture; consul stop/start (dev mode: data is lost)."""
    c = lab.consul_client()
    c.kv.put("k", "v")
    lab.stop_consul()
    with pytest.raises(Exception):
        lab.consul_client(timeout=2).kv.get("k")
    lab.start_consul()
    assert lab.consul_client().kv.get("k")[1] is None


def test_fixture_lab_internet_needs_masquerade(lab):
    """The internet host has no route back to container ranges."""
    d1 = lab.hosts["docker1"]
    d1.add_netns("ctr")
    d1.run("ip link add v0 type veth peer name v1 netns ctr && ip addr add 172.18.0.1/24 dev v0 "
           "&& ip link set v0 up && ip -n ctr addr add 172.18.0.2/24 dev v1 "
           "&& ip -n ctr link set v1 up && ip -n ctr route add default via 172.18.0.1 "
           "&& sysctl -qw net.ipv4.ip_forward=1")
    ping = ["ip", "netns", "exec", "ctr", "ping", "-c1", "-W1", INTERNET_IP]
    assert d1.run(ping, check=False).returncode != 0
    d1.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "172.18.0.0/24",
            "-o", "eth0", "-j", "MASQUERADE"])
    d1.run(ping)
    d1.del_netns("ctr")


def test_netns_fixture(netns):
    a, b = netns(), netns()
    assert a != b and {a, b} <= set(os.listdir("/run/netns"))


def test_partial_start_cleans_up(tmp_path):
    # A private dir that cannot be created makes the host's setup script fail midway.
    lab = Lab(tmp_path, {"h1": "10.0.0.10"}, consul=None, private_dirs=["/proc/1/nonexistent"])
    with pytest.raises(LabError):
        lab.start()
    assert lab._procs == []


def test_fixture_lab_vxlan_between_hosts(lab):
    """A plain kernel VXLAN tunnel works over the lab underlay."""
    a, b = lab.hosts["docker0"], lab.hosts["docker1"]
    for h, peer, addr in ((a, b.ip, "192.168.77.1"), (b, a.ip, "192.168.77.2")):
        h.run(f"ip link add vxsmoke type vxlan id 77 local {h.ip} remote {peer} dstport 4789 dev eth0"
              f" && ip addr add {addr}/24 dev vxsmoke && ip link set vxsmoke up")
    try:
        a.run(["ping", "-c1", "-W2", "192.168.77.2"])
    finally:
        for h in (a, b):
            h.run(["ip", "link", "del", "vxsmoke"], check=False)


def test_cli_up_exec_down(tmp_path):
    """python -m lab (for scripts/lab.sh): a detached lab survives its creator."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "integration")}
    cli = [sys.executable, "-m", "lab"]
    wd = str(tmp_path / "cli")
    up = subprocess.run(cli + ["up", "--workdir", wd, "--hosts", "h1=10.0.0.10", "--consul", ""],
                        env=env, capture_output=True, text=True, check=True)
    state = json.loads(up.stdout)
    try:
        assert state["detached"] and find_state(wd)["tag"] == state["tag"]
        out = subprocess.run(cli + ["exec", "--workdir", wd, "h1", "--", "hostname"],
                             env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == "h1"
    finally:
        subprocess.run(cli + ["down", "--workdir", wd], env=env, check=True)
    assert find_state(wd) is None
    assert not any(nsutil.pid_alive(pid, st) for _role, _name, pid, st in state["procs"])


def test_lab_sh_down_stops_kept_namespace_lab(tmp_path):
    """scripts/lab.sh --down stops a namespace lab kept with --keep (a detached lab under lab/work),
    and nothing else: a detached lab elsewhere keeps running."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "integration"),
           "LAB_WORK": str(tmp_path / "work"), "LAB_NS": "ovl-notalab-%d" % os.getpid()}
    cli = [sys.executable, "-m", "lab"]
    kept_wd, other_wd = str(tmp_path / "work" / "namespaces" / "lab-1"), str(tmp_path / "other")
    states = {}
    for wd, ip in ((kept_wd, "10.0.0.10"), (other_wd, "10.0.0.20")):
        up = subprocess.run(cli + ["up", "--workdir", wd, "--hosts", "h1=" + ip, "--consul", "", "--no-internet"],
                            env=env, capture_output=True, text=True, check=True)
        states[wd] = json.loads(up.stdout)
    try:
        down = subprocess.run([str(REPO / "scripts" / "lab.sh"), "--down"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stderr
        assert "stopped namespace lab " + states[kept_wd]["tag"] in down.stdout
        assert find_state(kept_wd) is None
        assert not any(nsutil.pid_alive(pid, st) for _r, _n, pid, st in states[kept_wd]["procs"])
        # The other lab is untouched.
        assert find_state(other_wd)["tag"] == states[other_wd]["tag"]
        assert all(nsutil.pid_alive(pid, st) for _r, _n, pid, st in states[other_wd]["procs"])
        again = subprocess.run([str(REPO / "scripts" / "lab.sh"), "--down"], env=env,
                               capture_output=True, text=True, timeout=120, check=True)
        assert "no namespace lab running" in again.stdout
    finally:
        for wd in states:
            subprocess.run(cli + ["down", "--workdir", wd], env=env, check=False)
