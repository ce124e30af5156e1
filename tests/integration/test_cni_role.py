"""The roles install the CNI plugin: overlay_host puts the cni package next to the engine and the
wrapper overlay-vxlan in the CNI plugin directory, overlay_networks writes one conflist per network
with the Consul token in a root-only file of its own. Then the INSTALLED wrapper is run as a CNI
runtime runs it (libcni: the conflist's plugin with the list's name and cniVersion on stdin, the
CNI_* variables in an otherwise empty environment) on two simulated hosts, and the namespaces it
attached ping each other and an endpoint attached through Ansible.

Simulated hosts share the machine's filesystem: each conflist names its own host, so the CNI
directories (and the lib dir and token file) are private to each host here."""
from __future__ import annotations

import json
import uuid

from lab import REPO
from overlay_helpers import kv, ns_exec, ping_eventually

PLAYBOOKS = REPO / "playbooks"
PRIVATE = ["/etc/sysctl.d", "/etc/cni/net.d", "/opt/cni", "/opt/overlay-vxlan", "/etc/overlay-vxlan"]
WRAPPER = "/opt/cni/bin/overlay-vxlan"
TOKEN_FILE = "/etc/overlay-vxlan/cni.token"
PYTHON = str(REPO / ".venv" / "bin" / "python")
# The lab's Consul runs without ACLs and ignores the token; it must still never be shown or inlined.
TOKEN = str(uuid.uuid4())
NETWORKS = [{"name": "demonet", "subnet": "192.168.0.0/24"}, {"name": "spare", "subnet": "10.77.0.0/24"}]


def site(lab, overrides=None, limit=None, **kwargs):
    # The agent's names on loopback (Docker 20.10) and on the gateway bridge (CNI containers): only the
    # latter becomes the conflists' nameserver, and 10.0.0.10:5353 (not port 53) neither.
    extra = {"overlay_cni": True, "overlay_consul_token": TOKEN, "overlay_networks": NETWORKS,
             "overlay_dns_listen": ["127.0.0.1:53", "172.18.0.1:53", "10.0.0.10:5353"]}
    extra.update(overrides or {})
    # In a file, not on the command line (the lab logs that): the token must appear nowhere.
    extra_file = lab.workdir / "cni-extra-vars.json"
    extra_file.write_text(json.dumps(extra))
    args = ["-i", str(PLAYBOOKS / "inventory" / "seed.yml"),
            "-e", "@" + str(PLAYBOOKS / "inventory" / "namespace-lab.yml"),
            "-e", "overlay_python=" + PYTHON, "-e", "@" + str(extra_file)]
    if limit:
        args += ["--limit", limit]
    return lab.ansible_playbook(str(PLAYBOOKS / "site.yml"), args=args, **kwargs).assert_ok()


def stat(host, path):
    return host.run(["stat", "-c", "%a %u %g", path]).stdout.split()


def runtime_call(host, command, container, netns=""):
    """The installed wrapper, as libcni calls a plugin of a conflist: its plugin configuration with
    the list's name and cniVersion on stdin, nothing from our environment but PATH."""
    conflist = json.loads(host.run(["cat", "/etc/cni/net.d/demonet.conflist"]).stdout)
    config = dict(conflist["plugins"][0], name=conflist["name"], cniVersion=conflist["cniVersion"])
    env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "CNI_COMMAND=" + command, "CNI_CONTAINERID=" + container, "CNI_NETNS=" + netns,
           "CNI_IFNAME=eth0", "CNI_ARGS=IgnoreUnknown=1", "CNI_PATH=/opt/cni/bin"]
    proc = host.run(env + [WRAPPER], check=False, input=json.dumps(config), timeout=60)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def test_roles_install_the_cni_plugin_and_the_installed_plugin_attaches(lab_factory):
    lab = lab_factory(private_dirs=PRIVATE)
    hosts = [lab.hosts["docker0"], lab.hosts["docker1"]]
    # The cluster without CNI first (the roles' other tasks need the networks in Consul for check
    # mode), then check mode with CNI on hosts that have none of it: it runs through, writes nothing.
    site(lab, {"overlay_cni": False})
    site(lab, check=True, diff=True)
    for host in hosts:
        assert host.run(["ls", "-A", "/opt/cni", "/etc/cni/net.d", "/etc/overlay-vxlan"]).stdout.split() == [
            "/etc/cni/net.d:", "/etc/overlay-vxlan:", "/opt/cni:"]

    first = site(lab, diff=True, verbosity=1)
    assert first.changed_count() > 0
    outputs = [first.stdout, first.stderr] + [f.read_text() for f in (lab.workdir / "runs").iterdir()]
    assert not [o for o in outputs if TOKEN in o], "the Consul token was shown"

    for host in hosts:
        # The wrapper: executable, root's, the documented two lines with the role's real paths.
        assert stat(host, WRAPPER) == ["755", "0", "0"]
        assert host.run(["test", "-x", WRAPPER], check=False).returncode == 0
        lines = [line for line in host.run(["cat", WRAPPER]).stdout.splitlines() if not line.startswith("# ")]
        assert lines == ["#!/bin/sh", "cd / && PYTHONPATH=/opt/overlay-vxlan/lib exec %s -m "
                         "ansible_collections.overlay.vxlan.cni" % PYTHON], lines
        assert host.run(["test", "-f", "/opt/overlay-vxlan/lib/ansible_collections/overlay/vxlan/cni/__main__.py"],
                        check=False).returncode == 0
        # One conflist per network, valid JSON, the plugin's settings; the token only by reference.
        for name in ("demonet", "spare"):
            path = "/etc/cni/net.d/%s.conflist" % name
            text = host.run(["cat", path]).stdout
            assert TOKEN not in text
            assert stat(host, path)[0] == "644"
            conflist = json.loads(text)
            assert conflist == {"cniVersion": "1.0.0", "name": name, "plugins": [{
                "type": "overlay-vxlan", "network": name, "host": host.name,
                "capabilities": {"aliases": True, "ips": True},
                "dns_nameservers": ["172.18.0.1"], "dns_search": [name],
                "consul_host": "10.0.0.5", "consul_port": 8500, "consul_scheme": "http", "consul_prefix": "overlay",
                "consul_token_file": TOKEN_FILE, "vtep": "eth0",
                "gateway_bridge": "docker_gwbridge", "gateway_subnet": "172.18.0.0/16", "gateway_block_host": False,
            }]}, conflist
        # The token file: the token alone, 0600 and root's, in a root-only directory.
        assert stat(host, TOKEN_FILE) == ["600", "0", "0"]
        assert stat(host, "/etc/overlay-vxlan")[0] == "700"
        assert host.run(["cat", TOKEN_FILE]).stdout == TOKEN

    # Idempotence: a second run changes nothing.
    again = site(lab)
    assert again.changed_tasks() == [], again.changed_tasks()

    # The installed wrapper as a runtime calls it: VERSION, then ADD on both hosts.
    d0, d1 = hosts
    rc, out, err = runtime_call(d1, "VERSION", "x")
    assert rc == 0 and "1.0.0" in out["supportedVersions"], (out, err)
    ids = {"docker0": uuid.uuid4().hex * 2, "docker1": uuid.uuid4().hex * 2}
    addresses = {}
    for host in hosts:
        host.add_netns("p")
        rc, out, err = runtime_call(host, "ADD", ids[host.name], netns="/run/netns/p")
        assert rc == 0, (out, err)
        assert out["cniVersion"] == "1.0.0", out
        assert out["interfaces"][0]["name"] == "eth0" and out["interfaces"][0]["sandbox"] == "/run/netns/p", out
        assert out["interfaces"][0]["mac"].startswith("02:42:"), out
        assert out["dns"] == {"nameservers": ["172.18.0.1"], "search": ["demonet"]}, out
        address = out["ips"][0]["address"]
        assert address.startswith("192.168.0.") and address.endswith("/24"), out
        addresses[host.name] = address.split("/")[0]
        assert addresses[host.name] in ns_exec(host, "p", ["ip", "-o", "addr", "show", "eth0"]).stdout
    # Recorded in Consul under the host each conflist names (the one the VTEP is recorded under).
    records = {v["name"]: v for k, v in kv(lab).items() if k.startswith("overlay/v1/endpoints/")}
    for name, container in ids.items():
        assert records[container]["host"] == name and records[container]["ip"] == addresses[name], records

    # docker0 learns docker1's new endpoint (the host agent does this between runs; the lab has none).
    site(lab, limit="docker0")
    assert ping_eventually(d1, "p", addresses["docker0"]), "CNI namespace on docker1 -> CNI namespace on docker0"
    assert ping_eventually(d0, "p", addresses["docker1"]), "CNI namespace on docker0 -> CNI namespace on docker1"
    assert ping_eventually(d1, "p", "192.168.0.100"), "CNI namespace on docker1 -> C0 (attached by the role)"

    # DEL through the installed wrapper: detached, released in Consul; a repeated DEL succeeds.
    for host in hosts:
        for call in ("DEL", "DEL repeated"):
            rc, out, err = runtime_call(host, "DEL", ids[host.name], netns="/run/netns/p")
            assert rc == 0 and out is None, (call, out, err)
        assert "eth0" not in ns_exec(host, "p", ["ip", "-o", "link"]).stdout
    left = [k for k, v in kv(lab).items() if isinstance(v, dict) and v.get("name") in ids.values()]
    assert left == [], left

    # A network marked absent and one with cni false lose their conflists; demonet stays in Consul.
    # Every host leaves spare at the same moment (one play): the removals must not collide.
    site(lab, {"overlay_networks": [dict(NETWORKS[0], cni=False), dict(NETWORKS[1], state="absent")]})
    for host in hosts:
        assert host.run(["ls", "-A", "/etc/cni/net.d"]).stdout == ""
    assert "overlay/v1/networks/demonet" in kv(lab)
