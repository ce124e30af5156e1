"""The agent's names: ``<endpoint>`` and ``<endpoint>.<network>`` answer from Consul on every
host, within a second of an attach; other names are relayed upstream. Real Consul, a real DNS
exchange over UDP from a container namespace of another simulated host."""
from __future__ import annotations

import json
import time

from overlay_helpers import DEMONET, PLAYBOOKS, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")

# A DNS query for NAME (type A) sent to SERVER from inside the simulated host; prints the answers.
QUERY = r'''
import socket, struct, sys, json
name, server, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, (server, port))
r, _ = s.recvfrom(4096)
flags, qd, an = struct.unpack("!HHH", r[2:8])
ips = [socket.inet_ntoa(r[i + 12:i + 16]) for i in range(len(q), len(r) - 15) if r[i:i + 4] == b"\xc0\x0c\x00\x01"]
print(json.dumps({"rcode": flags & 15, "ips": ips}))
'''

# The simulated internet's resolver: answers every A question with 198.51.100.7.
UPSTREAM = r'''
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.2", 53))
while True:
    q, a = s.recvfrom(4096)
    end = q.index(b"\0", 12) + 5
    s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:end]
             + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("198.51.100.7"), a)
'''


def resolve(lab, host, name, server="127.0.0.1", port=5353):
    out = host.run([str(lab.venv / "bin" / "python"), "-c", QUERY, name, server, str(port)], check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr}


def wait_for(predicate, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def test_names_from_consul_on_another_host_and_others_relayed(lab_factory, collection_path):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d0.add_netns("c0")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
        {"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0", "ip": "192.168.0.100"}]}]})
    ).assert_ok()
    lab._spawn("upstream", d1.name, d1.nsenter_cmd() + [str(lab.venv / "bin" / "python"), "-c", UPSTREAM])
    lab._spawn("agent", d1.name, d1.nsenter_cmd() + [
        "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
        "ansible_collections.overlay.vxlan.agent", "--host", "docker1", "--vtep", "eth0", "--consul-host",
        "10.0.0.5", "--no-peers", "--dns-listen", "127.0.0.1:5353", "--dns-upstream", "127.0.0.2:53"])
    got = wait_for(lambda: resolve(lab, d1, "C0").get("ips"), timeout=15)
    assert got == ["192.168.0.100"], resolve(lab, d1, "C0")
    assert resolve(lab, d1, "c0.demonet")["ips"] == ["192.168.0.100"]
    # Unknown names go to the upstream resolver, answered as it answered.
    assert resolve(lab, d1, "example.org")["ips"] == ["198.51.100.7"]
    assert resolve(lab, d1, "c0.othernet")["ips"] == ["198.51.100.7"]

    # A new endpoint on docker0 becomes a name on docker1 (a blocking query: no polling period to wait).
    d0.add_netns("c2")
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
        {"network": "demonet", "endpoints": [{"name": "C2", "namespace": "c2", "ip": "192.168.0.102"}]}]}),
        limit="docker0").assert_ok()
    assert wait_for(lambda: resolve(lab, d1, "c2.demonet").get("ips") == ["192.168.0.102"], timeout=5)
    # ... and gone after its detach.
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
        {"network": "demonet", "state": "absent", "endpoints": [{"name": "C2"}]}]}), limit="docker0").assert_ok()
    assert wait_for(lambda: resolve(lab, d1, "c2.demonet").get("ips") == ["198.51.100.7"], timeout=5)
