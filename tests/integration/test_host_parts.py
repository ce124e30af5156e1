"""overlay_gateway and overlay_vtep: check mode changes nothing, --diff shows each field before and
after, a re-run changes nothing, and the gateway bridge's drift is repaired."""
from __future__ import annotations

from overlay_helpers import PLAYBOOKS, kernel_snapshot, kv, ping_eventually

PLAY = str(PLAYBOOKS / "host_parts.yml")


def test_gateway_and_vtep_diff_field_by_field_and_repair(lab_factory):
    lab = lab_factory()
    d0 = lab.hosts["docker0"]
    args = {"gateway_args": {"name": "gwparts", "subnet": "172.30.0.0/16", "block_host": True}}
    before_kernel, before_kv = kernel_snapshot(d0), kv(lab)
    check = lab.ansible_playbook(PLAY, extra_vars=args, check=True, diff=True, limit="docker0").assert_ok()
    gw, vtep = check.results("docker0", "Gateway"), check.results("docker0", "Vtep")
    assert gw["changed"] and vtep["changed"]
    assert gw["diff"]["before"]["bridge"] == {"exists": False, "addresses": [], "up": False, "ip_forward": False,
                                              "nat": False, "block_host": False}, gw["diff"]
    assert gw["diff"]["after"]["bridge"] == {"exists": True, "addresses": ["172.30.0.1/16"], "up": True,
                                             "ip_forward": True, "nat": True, "block_host": True}, gw["diff"]
    assert vtep["diff"]["before"]["host"] is None
    assert vtep["diff"]["after"]["host"] == {"host": "docker0", "vtep": "10.0.0.10", "interface": "eth0"}
    assert kernel_snapshot(d0) == before_kernel and kv(lab) == before_kv
    real = lab.ansible_playbook(PLAY, extra_vars=args, diff=True, limit="docker0").assert_ok()
    done = real.results("docker0", "Gateway")["diff"]
    assert (done["before"]["bridge"], done["after"]["bridge"]) == (gw["diff"]["before"]["bridge"],
                                                                   gw["diff"]["after"]["bridge"])
    assert kv(lab)["overlay/v1/hosts/docker0"]["vtep"] == "10.0.0.10"
    again = lab.ansible_playbook(PLAY, extra_vars=args, diff=True, limit="docker0").assert_ok()
    assert again.changed_tasks() == []
    same = again.results("docker0", "Gateway")["diff"]
    assert same["before"]["bridge"] == same["after"]["bridge"] == gw["diff"]["after"]["bridge"]
    # Drift: the bridge loses its address and goes down; the next run says so and repairs it.
    d0.run(["ip", "addr", "flush", "dev", "gwparts"])
    d0.run(["ip", "link", "set", "gwparts", "down"])
    fixed = lab.ansible_playbook(PLAY, extra_vars=args, diff=True, limit="docker0").assert_ok()
    diff = fixed.results("docker0", "Gateway")["diff"]
    assert diff["before"]["bridge"]["addresses"] == [] and diff["before"]["bridge"]["up"] is False, diff
    assert "172.30.0.1/16" in d0.run(["ip", "-o", "addr", "show", "dev", "gwparts"]).stdout
    assert ping_eventually(d0, None, "172.30.0.1", tries=2)
