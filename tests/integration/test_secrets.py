"""Secrets stay secret (issue 7 section 4): the roles run with ACLs on, a gossip key, an initial
management token, a token for the modules and one for the peers service, under -vvv --diff; none
of the values (nor their base64, as slurp would show them) appears in the output, and every file
on the hosts holding one is root-owned and 0600/0640. The peers service's unit stays 0644 and
reads its token from an EnvironmentFile."""
from __future__ import annotations

import base64
import json
import os
import re
import stat
import urllib.request
import uuid
from pathlib import Path

import pytest

from lab import REPO
from lab.core import CONSUL_BIN
from overlay_helpers import PLAYBOOKS

PLAYBOOK = str(PLAYBOOKS / "secrets.yml")
# Where the roles write (private per simulated host, so nothing lands on the real machine).
PRIVATE = ["/etc/sysctl.d", "/etc/consul.d", "/etc/consul", "/var/lib/consul", "/etc/systemd/system",
           "/etc/overlay-vxlan", "/opt/overlay-vxlan", "/usr/local/sbin", "/etc/cni/net.d", "/opt/cni"]
SCANNED = [d for d in PRIVATE if d != "/usr/local/sbin"]
UNIT = "/etc/systemd/system/overlay-vxlan-agent.service"

# systemctl stand-in (simulated hosts have no systemd): every unit is loaded, enabled and running.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> /usr/local/sbin/systemctl.log
case "$1" in
  show) printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nUnitFileState=enabled\\n' "$2" ;;
  is-enabled) echo enabled ;;
  is-active) echo active ;;
esac
exit 0
"""


def secrets():
    return {
        "gossip key": base64.b64encode(os.urandom(32)).decode(),
        "management token": str(uuid.uuid4()),
        "modules token": str(uuid.uuid4()),
        "peers token": str(uuid.uuid4()),
    }


def forms(value):
    """The value and the base64 forms slurp (or a registered file) would print."""
    out = {value}
    for v in (value, value + "\n"):
        out.add(base64.b64encode(v.encode()).decode())
    return out


def create_token(lab, management, secret_id):
    """A token with a known SecretID and global-management rights (the modules' and the service's)."""
    host, port = lab._consul_forwarder().address
    body = json.dumps({"SecretID": secret_id, "Description": "test_secrets",
                       "Policies": [{"ID": "00000000-0000-0000-0000-000000000001"}]}).encode()
    req = urllib.request.Request("http://%s:%d/v1/acl/token" % (host, port), data=body, method="PUT",
                                 headers={"X-Consul-Token": management})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    assert opener.open(req, timeout=10).status == 200


def files_with_secrets(host, values):
    """{path: (mode, uid, gid, [secret names])} for every file under SCANNED holding a secret."""
    root = "/proc/%d/root" % host.pid
    found = {}
    for top in SCANNED:
        for dirpath, _dirs, files in os.walk(root + top):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
                        continue
                    data = Path(path).read_bytes().decode(errors="replace")
                except OSError:
                    continue
                hits = sorted(k for k, v in values.items() if any(f in data for f in forms(v)))
                if hits:
                    found[path[len(root):]] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, hits)
    return found


# -vvv over SSH is slow on a busy machine (the module_utils copy alone is many round trips).
@pytest.mark.timeout(1800)
def test_no_secret_in_output_or_in_a_readable_file(lab_factory):
    values = secrets()
    gossip, management = values["gossip key"], values["management token"]
    lab = lab_factory(
        hosts={"consul": "10.0.0.5", "docker0": "10.0.0.10"},
        private_dirs=PRIVATE,
        consul_hcl=['encrypt = "%s"' % gossip,
                    'acl { enabled = true, default_policy = "deny", tokens { master = "%s" } }' % management],
        inventory_vars={
            "overlay_consul_host": "10.0.0.5", "overlay_vtep": "eth0",
            "overlay_python": str(REPO / ".venv" / "bin" / "python"),
            "overlay_host_python_install": "none",
            "overlay_networks": [{"name": "demonet", "subnet": "192.168.0.0/24"}],
            "secrets_endpoints": {
                "docker0": [{"network": "demonet", "name": "C0", "namespace": "c0", "ip": "192.168.0.100"}]},
            "lab_consul_bin": str(CONSUL_BIN),
            "consul_encrypt": gossip,
            "consul_acl_enabled": True,
            "consul_acl_initial_management_token": management,
            "overlay_consul_token": values["modules token"],
            "overlay_host_peers_consul_token": values["peers token"],
        })
    for token in (values["modules token"], values["peers token"]):
        create_token(lab, management, token)
    for name, host in lab.hosts.items():
        fake = Path("/proc/%d/root/usr/local/sbin/systemctl" % host.pid)
        fake.write_text(FAKE_SYSTEMCTL)
        fake.chmod(0o755)
    lab.hosts["docker0"].add_netns("c0")

    # The consul play twice: the second run reads back what the first stored (slurped token
    # files, unchanged templates). One overlay host keeps the run short on a busy machine.
    runs = [lab.ansible_playbook(PLAYBOOK, diff=True, verbosity=3, timeout=1500),
            lab.ansible_playbook(PLAYBOOK, diff=True, verbosity=3, timeout=1500, limit="consul")]
    for run in runs:
        run.assert_ok()
    assert "--- before" in runs[0].stdout or "+++ after" in runs[0].stdout, "--diff printed no diff at all"
    # The roles did their work: C0 attached (its interface is up in c0), the ACL tokens stored.
    assert "192.168.0.100" in lab.hosts["docker0"].run(["ip", "-n", "c0", "-o", "addr"]).stdout

    # Nothing of any secret in anything Ansible printed or recorded.
    outputs = {"stdout %d" % i: r.stdout for i, r in enumerate(runs)}
    outputs.update({"stderr %d" % i: r.stderr for i, r in enumerate(runs)})
    for f in sorted((lab.workdir / "runs").iterdir()):
        outputs[f.name] = f.read_text(errors="replace")
    leaks = sorted("%s in %s: ...%s..." % (name, where, text[max(0, text.find(form) - 120):text.find(form)])
                   for name, value in values.items() for form in forms(value)
                   for where, text in outputs.items() if form in text)
    assert leaks == [], "\n".join(leaks)

    # Every file holding a secret: root-owned, 0600 or 0640.
    found = {}
    for name, host in lab.hosts.items():
        for path, meta in files_with_secrets(host, values).items():
            found["%s:%s" % (name, path)] = meta
    loose = {p: (oct(m), uid, gid, hits) for p, (m, uid, gid, hits) in found.items()
             if uid != 0 or m not in (0o600, 0o640)}
    assert loose == {}, loose
    # ... and the secrets are where they must be (so the check above looked at something).
    assert set(found["consul:/etc/consul.d/consul.json"][3]) == {"gossip key", "management token"}
    assert "management token" in found["consul:/etc/consul/acl-bootstrap.token"][3]
    # The CNI plugin's token: alone in its own root-only file, named by the conflist, not in it.
    assert found["docker0:/etc/overlay-vxlan/cni.token"][3] == ["modules token"]
    assert not [p for p in found if p.endswith(".conflist")]
    conflist = Path("/proc/%d/root/etc/cni/net.d/demonet.conflist" % lab.hosts["docker0"].pid).read_text()
    assert json.loads(conflist)["plugins"][0]["consul_token_file"] == "/etc/overlay-vxlan/cni.token"

    # The peers service: its unit is world-readable and holds no token; the token is in the
    # EnvironmentFile it names, 0600 and root's; no token on its command line.
    for name in ("docker0",):
        root = "/proc/%d/root" % lab.hosts[name].pid
        unit_path = Path(root + UNIT)
        unit = unit_path.read_text()
        assert stat.S_IMODE(unit_path.stat().st_mode) == 0o644
        assert not any(f in unit for v in values.values() for f in forms(v)), unit
        env_files = re.findall(r"^EnvironmentFile=-?(\S+)$", unit, re.M)
        assert len(env_files) == 1, unit
        env = Path(root + env_files[0])
        st = env.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
        assert "CONSUL_HTTP_TOKEN=" in env.read_text() and values["peers token"] in env.read_text()
        assert values["peers token"] not in re.search(r"^ExecStart=.*$", unit, re.M).group(0)
        # The Docker plugin's socket: served by the agent, and removed after any exit of it (a crash
        # included), so dockerd never waits on a socket nothing listens on.
        assert "--docker-plugin" in re.search(r"^ExecStart=.*$", unit, re.M).group(0), unit
        assert "ExecStopPost=-/bin/rm -f /run/docker/plugins/overlay.vxlan.sock" in unit.splitlines(), unit
