"""overlay_endpoint's ``container`` option with a real dockerd (docker0) and a real Podman with its API
service (docker1) in the simulated hosts: containers started with no network of the runtime's own are
attached by name through Ansible, reach each other across hosts, are re-attached after a restart (a
new namespace, the same address and MAC), and an unknown, stopped or unreachable container is refused
with the field named and nothing changed (Consul and kernel)."""
from __future__ import annotations

import json

import pytest

from lab.containers import Dockerd, Podman
from overlay_helpers import PLAYBOOKS, kernel_snapshot, kv

STEPS = str(PLAYBOOKS / "steps.yml")
NET = {"name": "demonet", "subnet": "192.168.0.0/24"}


@pytest.fixture(scope="module")
def container_lab(module_lab_factory):
    lab = module_lab_factory()
    h0, h1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d0 = Dockerd(lab, h0).start()
    pm = Podman(lab, h1).start()
    pm.serve()  # /run/podman/podman.sock: the module's default socket for Podman
    yield lab, (h0, d0), (h1, pm)


def steps(lab, net=None, ep=None, check=False, diff=False):
    return lab.ansible_playbook(STEPS, extra_vars={"net_args": net or {}, "ep_args": ep or {}}, check=check,
                                diff=diff)


def endpoint(result, host):
    """The one Endpoint call of ``host`` in a steps run."""
    items = result.results(host, "Endpoint")["results"]
    assert len(items) == 1, items
    return items[0]


def endpoint_records(lab):
    return {v["name"]: v for k, v in kv(lab).items() if "/endpoints/" in k and isinstance(v, dict) and "ip" in v}


def docker_pid(d, name):
    return json.loads(d.docker("inspect", name).stdout)[0]["State"]["Pid"]


def podman_pid(pm, name):
    return int(pm.podman("inspect", "-f", "{{.State.Pid}}", name).stdout)


def pings(host, pid, ip, tries=5):
    cmd = ["nsenter", "-t", str(pid), "-n", "ping", "-c1", "-W1", ip]
    return any(host.run(cmd, check=False).returncode == 0 for _try in range(tries))


def test_containers_by_name_across_hosts_restarts_and_refusals(container_lab):
    lab, (h0, d0), (h1, pm) = container_lab
    net = {"docker0": [NET], "docker1": [NET]}
    steps(lab, net=net).assert_ok()
    d0.docker("run", "-d", "--network", "none", "--stop-timeout", "1", "--name", "C0", "debian", "sleep", "3600")
    pm.podman("run", "-d", "--network", "none", "--name", "P1", "local/busybox", "sleep", "3600")
    c0 = {"network": "demonet", "name": "C0", "container": "C0", "container_socket": d0.sock, "ip": "192.168.0.100"}
    p1 = {"network": "demonet", "endpoints": [{"name": "P1", "container": "P1", "container_runtime": "podman"}]}
    ep = {"docker0": [c0], "docker1": [p1]}
    try:
        # Check mode: resolved, reported, nothing registered.
        check = steps(lab, ep=ep, check=True, diff=True).assert_ok()
        planned = endpoint(check, "docker0")
        assert planned["changed"] and "store: register endpoint C0" in planned["actions"], planned
        assert planned["endpoints"][0]["container"]["pid"] == docker_pid(d0, "C0")
        assert planned["endpoints"][0]["namespace"] == "/proc/%d/ns/net" % docker_pid(d0, "C0")
        assert endpoint_records(lab) == {}

        # Attached by name: the record's namespace is the container process's; the result says what was resolved.
        run = steps(lab, ep=ep).assert_ok()
        c0_result, p1_result = endpoint(run, "docker0"), endpoint(run, "docker1")
        assert c0_result["changed"] and p1_result["changed"]
        got = c0_result["endpoints"][0]
        pid0 = docker_pid(d0, "C0")
        cid = json.loads(d0.docker("inspect", "C0").stdout)[0]["Id"]
        assert got["container"] == {"runtime": "docker", "name": "C0", "id": cid, "pid": pid0,
                                    "sandbox_key": got["container"]["sandbox_key"]}
        assert got["container"]["sandbox_key"].startswith("/var/run/docker/netns/")
        assert got["interfaces"]["eth0"]["addresses"] == ["192.168.0.100/24"]
        p1_got = p1_result["endpoints"][0]
        pid1 = podman_pid(pm, "P1")
        assert (p1_got["container"]["runtime"], p1_got["container"]["pid"]) == ("podman", pid1)
        records = endpoint_records(lab)
        assert records["C0"]["namespace"] == "/proc/%d/ns/net" % pid0 and records["C0"]["host"] == "docker0"
        assert records["P1"]["namespace"] == "/proc/%d/ns/net" % pid1 and records["P1"]["host"] == "docker1"
        link = d0.docker("exec", "C0", "ip", "link", "show", "eth0").stdout
        assert "02:42:c0:a8:00:64" in link, link
        # Each host picks up the other's endpoint, and the containers reach each other.
        steps(lab, net=net).assert_ok()
        assert pings(h1, pid1, "192.168.0.100") and pings(h0, pid0, p1_got["ip"])

        # A re-run changes nothing.
        again = steps(lab, ep=ep).assert_ok()
        assert not endpoint(again, "docker0")["changed"] and not endpoint(again, "docker1")["changed"]
        assert endpoint_records(lab) == records

        # docker restart: a new process and namespace. Check mode shows the move and writes nothing; the
        # re-run moves the endpoint there with the same address and MAC, reachable again.
        d0.docker("restart", "-t", "1", "C0")
        pid0b = docker_pid(d0, "C0")
        assert pid0b != pid0
        check = steps(lab, ep={"docker0": [c0]}, check=True, diff=True).assert_ok()
        planned = endpoint(check, "docker0")
        assert planned["changed"] and planned["diff"]["before"]["endpoints"]["C0"]["namespace"] == \
            "/proc/%d/ns/net" % pid0
        assert planned["diff"]["after"]["endpoints"]["C0"]["namespace"] == "/proc/%d/ns/net" % pid0b
        assert endpoint_records(lab) == records
        moved = endpoint(steps(lab, ep={"docker0": [c0]}).assert_ok(), "docker0")
        assert moved["changed"] and "store: endpoint C0 now in namespace /proc/%d/ns/net" % pid0b in moved["actions"]
        assert moved["endpoints"][0]["container"]["pid"] == pid0b
        after = endpoint_records(lab)
        assert after["C0"]["namespace"] == "/proc/%d/ns/net" % pid0b
        assert {k: v for k, v in after["C0"].items() if k != "namespace"} == \
            {k: v for k, v in records["C0"].items() if k != "namespace"}
        assert "02:42:c0:a8:00:64" in d0.docker("exec", "C0", "ip", "link", "show", "eth0").stdout
        assert pings(h1, pid1, "192.168.0.100") and pings(h0, pid0b, p1_got["ip"])
        assert not endpoint(steps(lab, ep={"docker0": [c0]}).assert_ok(), "docker0")["changed"]

        # podman restart likewise.
        pm.podman("restart", "-t", "0", "P1")
        pid1b = podman_pid(pm, "P1")
        moved = endpoint(steps(lab, ep={"docker1": [p1]}).assert_ok(), "docker1")
        assert moved["changed"] and moved["endpoints"][0]["ip"] == p1_got["ip"]
        assert endpoint_records(lab)["P1"]["namespace"] == "/proc/%d/ns/net" % pid1b
        assert pings(h0, pid0b, p1_got["ip"]) and pings(h1, pid1b, "192.168.0.100")

        # Refusals: the field named, nothing changed in Consul or in either host's kernel.
        d0.docker("run", "-d", "--network", "none", "--stop-timeout", "1", "--name", "S0", "debian", "sleep", "3600")
        d0.docker("stop", "-t", "1", "S0")
        store, kernels = kv(lab), (kernel_snapshot(h0), kernel_snapshot(h1))
        bad = steps(lab, ep={"docker0": [
            dict(c0, name="N0", container="nope", ip=None),
            {"network": "demonet", "container_socket": d0.sock, "endpoints": [{"name": "S0", "container": "S0"}]},
            {"network": "demonet", "name": "Q0", "container": "P1", "container_runtime": "podman"},
        ], "docker1": [
            {"network": "demonet", "endpoints": [{"name": "Q1", "container": "Q1", "container_runtime": "podman",
                                                  "container_socket": "/run/podman/none.sock"}]},
        ]})
        unknown, stopped, no_podman = bad.results("docker0", "Endpoint")["results"]
        assert unknown["failed"] and unknown["field"] == "container", unknown
        assert unknown["msg"].startswith("container: docker has no container named nope"), unknown["msg"]
        assert stopped["failed"] and stopped["field"] == "endpoints[0].container", stopped
        assert "container S0 is not running (docker exited)" in stopped["msg"], stopped["msg"]
        assert no_podman["failed"] and no_podman["field"] == "container_socket", no_podman
        assert "podman's default socket /run/podman/podman.sock does not exist" in no_podman["msg"]
        missing = endpoint(bad, "docker1")
        assert missing["failed"] and missing["field"] == "endpoints[0].container_socket", missing
        assert kv(lab) == store and (kernel_snapshot(h0), kernel_snapshot(h1)) == kernels

        # Detach by name, with the container still given (the runtime is not asked).
        gone = steps(lab, ep={"docker0": [dict(c0, state="absent")], "docker1": [dict(p1, state="absent")]})
        assert endpoint(gone.assert_ok(), "docker0")["changed"] and endpoint(gone, "docker1")["changed"]
        assert endpoint_records(lab) == {}
        assert "eth0" not in d0.docker("exec", "C0", "ip", "link").stdout
    finally:
        d0.docker("rm", "-f", "C0", "S0", check=False)
        pm.podman("rm", "-f", "-t", "0", "P1", check=False)
