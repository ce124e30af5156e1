"""The CNI door, run as a CNI runtime (Podman, containerd) runs it: environment variables, the
network configuration on stdin, the result on stdout. Real Consul, two simulated hosts, real
packets between a CNI-attached namespace and an endpoint attached through Ansible elsewhere."""
from __future__ import annotations

import json

from overlay_helpers import DEMONET, PLAYBOOKS, kv, ping, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")
CONFIG = {"cniVersion": "1.0.0", "name": "demonet", "type": "overlay-vxlan", "consul_host": "10.0.0.5",
          "vtep": "eth0"}


def cni(lab, host, collection_path, command, container="c" * 64, netns="", args="", config=None):
    env = ["env", "CNI_COMMAND=" + command, "CNI_CONTAINERID=" + container, "CNI_NETNS=" + netns,
           "CNI_IFNAME=eth0", "CNI_ARGS=" + args, "CNI_PATH=/opt/cni/bin", "PYTHONPATH=" + collection_path]
    proc = host.run(env + [str(lab.venv / "bin" / "python"), "-m", "ansible_collections.overlay.vxlan.cni"],
                    check=False, input=json.dumps(dict(CONFIG, host=host.name, **(config or {}))), timeout=60)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def records(lab, name):
    return [v for k, v in kv(lab).items() if k.startswith("overlay/v1/endpoints/") and v["name"] == name]


def test_cni_add_check_del_as_a_runtime_calls_them(lab_factory, collection_path):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d0.add_netns("c0")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
        {"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0", "ip": "192.168.0.100"}]}]})
    ).assert_ok()

    rc, out, err = cni(lab, d1, collection_path, "VERSION")
    assert rc == 0 and "1.0.0" in out["supportedVersions"], (out, err)

    path = d1.add_netns("p1")
    # As Podman calls it: the container's name in K8S_POD_NAME, its --network-alias values (and short id) in
    # runtimeConfig.aliases (the conflist declares the capability); the resolver from the conflist.
    resolver = {"dns_nameservers": ["172.18.0.1"], "dns_search": ["demonet"], "capabilities": {"aliases": True, "ips": True},
                "runtimeConfig": {"aliases": {"demonet": ["db", "0123456789ab", "not a name"], "other": ["x"]}}}
    rc, out, err = cni(lab, d1, collection_path, "ADD", netns=path,
                       args="IgnoreUnknown=1;K8S_POD_NAME=P1;IP=192.168.0.50", config=resolver)
    assert rc == 0, (out, err)
    assert out["cniVersion"] == "1.0.0"
    assert out["dns"] == {"nameservers": ["172.18.0.1"], "search": ["demonet"]}, out
    assert "'not a name' is not a DNS name" in err, err  # left out with a note on stderr, not a failure
    eth0, eth1 = out["interfaces"]
    assert eth0 == {"name": "eth0", "mac": "02:42:c0:a8:00:32", "mtu": eth0["mtu"], "sandbox": path}, out
    assert eth1["name"] == "eth1" and eth1["mac"], out  # Podman refuses an interface without a mac
    assert out["ips"][0] == {"address": "192.168.0.50/24", "interface": 0}, out
    assert out["ips"][1]["interface"] == 1 and out["routes"] == [{"dst": "0.0.0.0/0", "gw": out["ips"][1]["gateway"]}]
    record = next(v for k, v in kv(lab).items() if k.startswith("overlay/v1/endpoints/") and v["name"] == "c" * 64)
    assert record["ip"] == "192.168.0.50" and record["host"] == "docker1" and record["namespace"] == path
    assert record["aliases"] == ["0123456789ab", "P1", "db"], record  # written with the record, in its transaction

    # Both directions across hosts: CNI's namespace and C0, attached through Ansible on docker0.
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET]), limit="docker0").assert_ok()  # docker0's peers
    assert ping(d1, "p1", "192.168.0.100", count=2, wait=2)
    assert ping(d0, "c0", "192.168.0.50", count=1, wait=2)

    # ADD again for the same container: its record is found, nothing new claimed; CHECK passes.
    rc, out2, err = cni(lab, d1, collection_path, "ADD", netns=path, args="IP=192.168.0.50")
    assert rc == 0 and out2["ips"][0] == out["ips"][0], (out2, err)
    assert out2["dns"] == {}, out2  # no resolver in this call's configuration
    # ... and a call without names keeps the record's; one with another name gives it that one.
    assert records(lab, "c" * 64)[0]["aliases"] == ["0123456789ab", "P1", "db"]
    rc, out2, err = cni(lab, d1, collection_path, "ADD", netns=path, args="K8S_POD_NAME=P1-renamed")
    assert rc == 0 and out2["ips"][0] == out["ips"][0], (out2, err)
    assert records(lab, "c" * 64)[0]["aliases"] == ["P1-renamed"]
    rc, out3, err = cni(lab, d1, collection_path, "CHECK", netns=path)
    assert rc == 0 and out3 is None, (out3, err)
    # A loopback nameserver is refused (in the container it is the container's own), attaching nothing.
    other = d1.add_netns("p2")
    rc, bad, err = cni(lab, d1, collection_path, "ADD", container="e" * 64, netns=other,
                       config={"dns_nameservers": ["127.0.0.1"]})
    assert rc == 1 and bad["code"] == 7 and "loopback" in bad["msg"], (bad, err)
    assert records(lab, "e" * 64) == []
    # An address another endpoint holds is refused, with CNI's error shape, naming it.
    rc, bad, err = cni(lab, d1, collection_path, "ADD", container="d" * 64, netns=other, args="IP=192.168.0.100")
    assert rc == 1 and bad["code"] == 100 and "192.168.0.100" in bad["msg"] and "ip" in bad["msg"], (bad, err)
    assert not [v for v in kv(lab).values() if isinstance(v, dict) and v.get("name") == "d" * 64]

    # DEL, then DEL repeated, then DEL with the namespace gone: all succeed; nothing is left.
    rc, out, err = cni(lab, d1, collection_path, "DEL", netns=path)
    assert rc == 0 and out is None, (out, err)
    assert not [k for k in kv(lab) if "192.168.0.50" in k or ("c" * 64) in k]
    rc, out, err = cni(lab, d1, collection_path, "DEL", netns=path)
    assert rc == 0, (out, err)
    d1.del_netns("p2")
    rc, out, err = cni(lab, d1, collection_path, "DEL", container="d" * 64, netns="")
    assert rc == 0, (out, err)
    # Bad configuration: a clear error naming the field.
    rc, out, err = cni(lab, d1, collection_path, "ADD", netns=path, config={"network": "nosuchnet"})
    assert rc == 1 and "nosuchnet" in out["msg"], out
