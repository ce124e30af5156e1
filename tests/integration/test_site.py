"""playbooks/site.yml with the seed inventory converges the cluster in one run, and a second run
changes nothing: the roles overlay_host and overlay_networks on simulated hosts."""
from __future__ import annotations

from overlay_helpers import kv, ping_eventually
from lab import REPO

PLAYBOOKS = REPO / "playbooks"


def site_args():
    return ["-i", str(PLAYBOOKS / "inventory" / "seed.yml"),
            "-e", "@" + str(PLAYBOOKS / "inventory" / "namespace-lab.yml"),
            "-e", "overlay_python=" + str(REPO / ".venv" / "bin" / "python")]


def test_site_converges_in_one_run_and_is_idempotent(lab_factory):
    lab = lab_factory(private_dirs=["/etc/sysctl.d"])
    first = lab.ansible_playbook(str(PLAYBOOKS / "site.yml"), args=site_args()).assert_ok()
    assert first.changed_count() > 0
    # Converged after one run: C1 on docker1 reaches C0 on docker0 without another pass.
    assert ping_eventually(lab.hosts["docker1"], "c1", "192.168.0.100")
    assert not ping_eventually(lab.hosts["docker1"], None, "192.168.0.100", tries=1)
    records = kv(lab)
    assert records["overlay/v1/hosts/docker0"]["vtep"] == "10.0.0.10"
    assert records["overlay/v1/networks/demonet"]["vni"] == 256
    sysctl = lab.hosts["docker0"].run(["cat", "/etc/sysctl.d/60-overlay-vxlan.conf"]).stdout
    assert "net.ipv4.ip_forward = 1" in sysctl
    second = lab.ansible_playbook(str(PLAYBOOKS / "site.yml"), args=site_args()).assert_ok()
    assert second.changed_tasks() == []
    checks = lab.ansible_playbook(str(PLAYBOOKS / "seed_checks.yml"), args=site_args()).assert_ok()
    assert checks.results("docker1", "Inspect demonet")["in_sync"]


def wheels_args():
    # The modules' dependencies come from wheels pushed by the controller into a venv of the
    # host's own (system) Python, as on hosts without internet.
    return ["-i", str(PLAYBOOKS / "inventory" / "seed.yml"),
            "-e", "@" + str(PLAYBOOKS / "inventory" / "namespace-lab.yml"),
            "-e", "overlay_host_python_install=wheels", "-e", "overlay_host_wheels_src=" + str(REPO / ".cache" / "wheels")]


def test_wheels_from_the_controller_and_detaching_through_the_inventory(lab_factory):
    lab = lab_factory(private_dirs=["/etc/sysctl.d", "/opt/overlay-vxlan"])
    lab.ansible_playbook(str(PLAYBOOKS / "site.yml"), args=wheels_args()).assert_ok()
    venv_python = "/opt/overlay-vxlan/venv/bin/python"
    probe = lab.hosts["docker0"].run([venv_python, "-c", "import pyroute2; print(pyroute2.__version__)"])
    assert probe.stdout.startswith("0.9.")
    assert ping_eventually(lab.hosts["docker1"], "c1", "192.168.0.100")
    gone = ["-e", '{"overlay_endpoints": [{"network": "demonet", "name": "C1", "state": "absent"}]}',
            "--limit", "docker1"]
    lab.ansible_playbook(str(PLAYBOOKS / "site.yml"), args=wheels_args() + gone).assert_ok()
    demonet = kv(lab)["overlay/v1/networks/demonet"]
    assert "overlay/v1/endpoints/%s/C1" % demonet["id"] not in kv(lab)
    assert "eth0" not in lab.hosts["docker1"].run(["ip", "netns", "exec", "c1", "ip", "-o", "link"]).stdout
    # The roles pass the per-network anti_spoofing and the shared gateway_block_host on to the modules.
    more = ['-e', '{"overlay_gateway_block_host": true, "overlay_networks": [{"name": "demonet", "subnet": '
            '"192.168.0.0/24"}, {"name": "plain", "subnet": "10.76.0.0/24", "anti_spoofing": false}]}',
            "--limit", "docker0"]
    lab.ansible_playbook(str(PLAYBOOKS / "site.yml"), args=wheels_args() + more).assert_ok()
    assert kv(lab)["overlay/v1/networks/plain"]["anti_spoofing"] is False
    gateway = lab.hosts["docker0"].run(["nft", "list", "set", "inet", "overlay_gateway", "block_host"]).stdout
    assert "docker_gwbridge" in gateway.split("elements", 1)[-1], gateway
    assert not ping_eventually(lab.hosts["docker0"], "c0", "172.18.0.1", tries=1)  # the host is out of reach
