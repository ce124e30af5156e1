"""Real Docker 20.10 (Debian 12's docker.io) on two simulated hosts, with the host agent as its
network and IPAM plugin, a real Consul and real packets: the seed's own commands, `docker network
ls/inspect`, `docker rm -f`, `-p`, internal networks, connect/disconnect, names across hosts, and
restarts of dockerd (with and without live-restore) and of the agent.

The image is busybox tagged ``debian`` (no registry here): ``sleep``, ``ping``, ``nslookup`` and
``ip`` are its applets, so the seed's commands run as written."""
from __future__ import annotations

import json
import time

import pytest

from lab.containers import Dockerd
from overlay_helpers import kv

SUBNET = "192.168.0.0/24"
CREATE = ["network", "create", "-d", "overlay.vxlan", "--ipam-driver", "overlay.vxlan", "--subnet", SUBNET,
          "demonet"]


def wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class Agent:
    """The host agent as the role runs it, from its documented command line, started before dockerd
    (the plugin socket must be there when dockerd looks)."""

    def __init__(self, lab, host, collection_path, dockerd, extra=()):
        self.lab, self.host, self.collection_path, self.dockerd = lab, host, collection_path, dockerd
        self.extra = list(extra)
        self.proc = None

    def start(self):
        self.proc = self.lab._spawn("agent", self.host.name, self.host.nsenter_cmd() + [
            "env", "PYTHONPATH=" + self.collection_path, str(self.lab.venv / "bin" / "python"), "-m",
            "ansible_collections.overlay.vxlan.agent", "--host", self.host.name, "--vtep", "eth0",
            "--consul-host", "10.0.0.5", "--docker-plugin", "--docker-host", self.dockerd.url,
            "--state-dir", str(self.dockerd.dir / "agent-state"), "--gc-grace", "5"] + self.extra)
        sock = "/run/docker/plugins/overlay.vxlan.sock"
        assert wait_until(lambda: self.host.run(["test", "-S", sock], check=False).returncode == 0, 20), \
            "the agent's plugin socket did not appear"
        return self

    def stop(self):
        self.lab._stop_procs([self.proc], timeout=10)


@pytest.fixture(scope="module")
def docker_lab(module_lab_factory, collection_path):
    lab = module_lab_factory()
    out = {}
    for name in ("docker0", "docker1"):
        host = lab.hosts[name]
        d = Dockerd(lab, host, dns=("127.0.0.1",))
        agent = Agent(lab, host, collection_path, d, extra=["--dns-listen", "127.0.0.1:53"]).start()
        d.start()
        out[name] = (host, d, agent)
    yield lab, out


def records(lab, kind):
    return {k: v for k, v in kv(lab).items() if k.startswith("overlay/v1/%s/" % kind)}


def endpoint_records(lab):
    return [v for k, v in kv(lab).items() if "/endpoints/" in k and isinstance(v, dict) and "ip" in v]


def fdb_macs(host):
    """MACs with a static FDB entry on vxlan0 in any overlay namespace of ``host``."""
    out = host.run("for n in $(ip netns list | cut -d' ' -f1); do ip netns exec $n bridge fdb show dev vxlan0 "
                   "2>/dev/null; done", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line and "dst" in line}


def test_seed_commands_on_real_docker(docker_lab):
    lab, hosts = docker_lab
    (h0, d0, _a0), (h1, d1, _a1) = hosts["docker0"], hosts["docker1"]

    # The seed, as written: the network on each host, C0 with --ip on docker0, a ping from docker1.
    for d in (d0, d1):
        d.docker(*CREATE)
    nets = [v for v in records(lab, "networks").values()]
    assert [(n["name"], n["subnet"]) for n in nets] == [("demonet", SUBNET)], nets
    d0.docker("run", "-d", "--ip", "192.168.0.100", "--net", "demonet", "--name", "C0", "debian", "sleep", "3600")
    r = d1.docker("run", "--rm", "--net", "demonet", "debian", "ping", "-c", "3", "192.168.0.100", check=False)
    assert r.returncode == 0 and "3 packets received" in r.stdout, r.stdout + r.stderr

    # docker network ls / inspect on both hosts: the same subnet and gateway, one Consul network.
    seen = []
    for d in (d0, d1):
        listed = d.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.splitlines()
        assert "demonet overlay.vxlan local" in listed, listed
        info = json.loads(d.docker("network", "inspect", "demonet").stdout)[0]
        assert info["Driver"] == "overlay.vxlan" and info["IPAM"]["Driver"] == "overlay.vxlan", info
        seen.append(info["IPAM"]["Config"])
    # (20.10 shows the gateway only when --gateway was given; Consul's is the one both hosts got.)
    assert seen[0] == seen[1] == [{"Subnet": SUBNET}], seen
    assert len(records(lab, "networks")) == 1 and nets[0]["gateway"] == "192.168.0.1"

    # C0's eth0: the network's MTU and MAC 02:42 + IP; eth1 on docker_gwbridge with the default route.
    mtu = nets[0]["mtu"]
    link = d0.docker("exec", "C0", "ip", "link", "show", "eth0").stdout
    assert "mtu %d" % mtu in link and "02:42:c0:a8:00:64" in link, link
    routes = d0.docker("exec", "C0", "ip", "route").stdout
    assert any(line.startswith("default") and "eth1" in line for line in routes.splitlines()), routes
    # Egress through Docker's gwbridge to the lab's "internet".
    assert d0.docker("exec", "C0", "ping", "-c", "1", "-W", "2", "198.51.100.1", check=False).returncode == 0

    # One endpoint record in Consul, owned by docker0; the --rm container left nothing.
    eps = endpoint_records(lab)
    assert [(e["ip"], e["host"]) for e in eps] == [("192.168.0.100", "docker0")], eps

    # docker rm -f: everything released in Consul, the other host drops the peer within a second or so.
    assert "02:42:c0:a8:00:64" in fdb_macs(h1)
    d0.docker("rm", "-f", "C0")
    assert endpoint_records(lab) == []
    assert not [k for k in kv(lab) if "/ips/" in k and not k.endswith("192.168.0.1")], kv(lab)
    assert wait_until(lambda: "02:42:c0:a8:00:64" not in fdb_macs(h1), timeout=5), fdb_macs(h1)
