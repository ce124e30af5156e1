"""Consul that refuses, loses answers or partitions, through Ansible and the peers service.

- ACLs: the policy of docs/acl.md is enough for create, attach, detach and remove; a read-only
  token fails at once (one request, no retries), with Consul and the kernel unchanged.
- A sick Consul behind a fault proxy (lab/faultproxy.py): reads retry through a brief outage.
- The peers service: a host cut off from Consul for ~20 s catches up soon after the cut heals,
  clears the peers of a network removed meanwhile, and keeps syncing past malformed values.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import yaml

from lab.faultproxy import FaultProxy
from lab.nsutil import wait_tcp
from overlay_helpers import DEMONET, PLAYBOOKS, kernel_snapshot, kv, ns_exec, seed_vars, write_records

SEED = str(PLAYBOOKS / "overlay_seed.yml")
ACL_PORT = 8510
MASTER = "0b8e5a34-0000-4000-8000-00000000c0de"
WRITER = "0b8e5a34-0000-4000-8000-0000000000a2"
READER = "0b8e5a34-0000-4000-8000-0000000000a1"
PROXY_PORT = 18510
DOCS_POLICY = 'key_prefix "overlay/" {\n  policy = "write"\n}'
READ_POLICY = 'key_prefix "overlay/" {\n  policy = "read"\n}'


def wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class AclConsul:
    """The second Consul (ACLs on, default deny) seen from the pytest process."""

    def __init__(self, lab):
        self.fwd = lab.forward(lab.hosts["consul"].ip, ACL_PORT)

    def api(self, method, path, body=None, token=MASTER, data=None):
        url = "http://%s:%d%s" % (self.fwd.address[0], self.fwd.address[1], path)
        payload = data if data is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(url, method=method, data=payload, headers={"X-Consul-Token": token})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def kv(self):
        try:
            items = self.api("GET", "/v1/kv/overlay/?recurse")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return {}
            raise
        import base64
        return {i["Key"]: json.loads(base64.b64decode(i["Value"])) if i["Value"] else None for i in items}


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    host = lab.hosts["consul"]
    hcl = ('ports { http = %d, dns = -1, grpc = -1, serf_lan = 8311, serf_wan = 8312, server = 8310 } '
           'acl { enabled = true, default_policy = "deny", tokens { master = "%s" } }' % (ACL_PORT, MASTER))
    from lab import CONSUL_BIN
    lab._spawn("consul-acl", host.name, host.nsenter_cmd() + [
        str(CONSUL_BIN), "agent", "-dev", "-node", "acl", "-client", host.ip, "-bind", host.ip, "-hcl", hcl])
    wait_tcp(lab.controller.netns_path(), (host.ip, ACL_PORT), timeout=20)
    acl = AclConsul(lab)
    deadline = time.monotonic() + 20
    while True:
        try:
            acl.api("PUT", "/v1/acl/policy", {"Name": "overlay-vxlan", "Rules": DOCS_POLICY})
            break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    acl.api("PUT", "/v1/acl/policy", {"Name": "overlay-read", "Rules": READ_POLICY})
    acl.api("PUT", "/v1/acl/token", {"SecretID": WRITER, "Description": "test writer (docs/acl.md policy)",
                                     "Policies": [{"Name": "overlay-vxlan"}]})
    acl.api("PUT", "/v1/acl/token", {"SecretID": READER, "Description": "test read-only",
                                     "Policies": [{"Name": "overlay-read"}]})
    lab.acl = acl
    d0 = lab.hosts["docker0"]
    # The modules on docker0 reach the ACL Consul through a fault proxy that counts the requests.
    lab.acl_proxy = FaultProxy((host.ip, ACL_PORT), listen=("127.0.0.1", PROXY_PORT), listen_ns=d0.netns_path(),
                               target_ns=d0.netns_path())
    yield lab
    lab.acl_proxy.close()


def acl_play(lab, tmp_path, token, tasks, port=PROXY_PORT, host="docker0"):
    """Run tasks (name -> (module, args)) on host against the ACL Consul with token."""
    play = [{"name": "acl", "hosts": host, "gather_facts": False,
             "module_defaults": {"group/overlay.vxlan.consul": {
                 "consul_host": "127.0.0.1", "consul_port": port, "consul_token": token,
                 "consul_timeout": 5, "host": host, "vtep": "eth0"}},
             "tasks": [dict({"name": name, "overlay.vxlan." + module: args, "ignore_errors": True})
                       for name, (module, args) in tasks]}]
    path = tmp_path / ("play-%d.yml" % time.monotonic_ns())
    path.write_text(yaml.safe_dump(play))
    return lab.ansible_playbook(path)


ACLNET = {"name": "aclnet", "subnet": "10.61.0.0/24"}


def test_the_documented_policy_is_enough(lab, tmp_path):
    d0 = lab.hosts["docker0"]
    d0.add_netns("a1")
    result = acl_play(lab, tmp_path, WRITER, [
        ("Create", ("overlay_network", ACLNET)),
        ("Attach", ("overlay_endpoint", {"network": "aclnet", "name": "A1", "namespace": "a1"})),
    ])
    for task in ("Create", "Attach"):
        res = result.results("docker0", task)
        assert not res.get("failed"), (task, res.get("msg"))
    records = lab.acl.kv()
    net = records["overlay/v1/networks/aclnet"]
    assert "overlay/v1/endpoints/%s/A1" % net["id"] in records
    assert "eth0" in ns_exec(d0, "a1", ["ip", "-o", "link"]).stdout
    result = acl_play(lab, tmp_path, WRITER, [
        ("Detach", ("overlay_endpoint", {"network": "aclnet", "name": "A1", "state": "absent"})),
        ("Remove", ("overlay_network", {"name": "aclnet", "state": "absent"})),
    ])
    for task in ("Detach", "Remove"):
        res = result.results("docker0", task)
        assert not res.get("failed"), (task, res.get("msg"))
    assert [k for k in lab.acl.kv() if not k.startswith("overlay/v1/hosts/")] == []  # the host record stays
    assert "eth0" not in ns_exec(d0, "a1", ["ip", "-o", "link"]).stdout
    assert not any(n.startswith("ovl-" + net["id"][:12]) for n in d0.run(["ip", "netns", "list"]).stdout.split())


def _writes(proxy):
    return [entry for entry in proxy.log if entry[1] == "PUT"]


def test_a_read_only_token_fails_at_once_and_changes_nothing(lab, tmp_path):
    d0 = lab.hosts["docker0"]
    d0.add_netns("r1")
    d0.add_netns("r2")
    setup = acl_play(lab, tmp_path, WRITER, [
        ("Create", ("overlay_network", {"name": "ronet", "subnet": "10.62.0.0/24"})),
        ("Attach", ("overlay_endpoint", {"network": "ronet", "name": "R1", "namespace": "r1"}))])
    assert not setup.failed, setup.summary()
    before_kv, before_kernel = lab.acl.kv(), kernel_snapshot(d0)
    cases = [
        ("Create", ("overlay_network", {"name": "ronew", "subnet": "10.63.0.0/24"}), "overlay/v1/"),
        ("Attach", ("overlay_endpoint", {"network": "ronet", "name": "R2", "namespace": "r2"}), "overlay/v1/"),
    ]
    for name, task, refused in cases:
        lab.acl_proxy.log.clear()
        result = acl_play(lab, tmp_path, READER, [(name, task)])
        res = result.results("docker0", name)
        msg = res.get("msg", "")
        assert res.get("failed"), (name, res)
        assert msg.startswith("consul_token: Consul at http://127.0.0.1:%d: " % PROXY_PORT), msg
        assert "permission denied" in msg and 'needs key_prefix "overlay/" write' in msg and refused in msg, msg
        assert "(test read-only)" in msg and READER not in msg, msg
        assert "concurrent writers" not in msg and "gave up" not in msg, msg
        assert len(_writes(lab.acl_proxy)) == 1, "the refused write was retried: %s" % lab.acl_proxy.log
        assert lab.acl.kv() == before_kv
        assert kernel_snapshot(d0) == before_kernel


def test_a_read_only_detach_fails_before_the_kernel_is_touched(lab, tmp_path):
    # The store protocol marks the records first: the refusal comes before any interface is touched.
    d0 = lab.hosts["docker0"]
    d0.add_netns("r3")
    setup = acl_play(lab, tmp_path, WRITER, [
        ("Create", ("overlay_network", {"name": "ronet", "subnet": "10.62.0.0/24"})),
        ("Attach", ("overlay_endpoint", {"network": "ronet", "name": "R3", "namespace": "r3"}))])
    assert not setup.failed, setup.summary()
    before_kv, before_kernel = lab.acl.kv(), kernel_snapshot(d0)
    result = acl_play(lab, tmp_path, READER, [
        ("Detach", ("overlay_endpoint", {"network": "ronet", "name": "R3", "state": "absent"}))])
    res = result.results("docker0", "Detach")
    assert res.get("failed") and "permission denied" in res.get("msg", ""), res
    assert lab.acl.kv() == before_kv
    assert kernel_snapshot(d0) == before_kernel, "the refused detach changed the kernel"


def test_reads_retry_through_a_brief_outage(lab, tmp_path):
    proxy = lab.acl_proxy
    before = lab.acl.kv()
    for status in (500, 503, 429):
        proxy.log.clear()
        proxy.set("status", times=3, status=status, body="No cluster leader")
        result = acl_play(lab, tmp_path, WRITER, [("Info", ("overlay_network_info", {}))])
        res = result.results("docker0", "Info")
        assert not res.get("failed"), (status, res.get("msg"))
        assert [e[0] for e in proxy.log[:3]] == ["status"] * 3
    proxy.log.clear()
    proxy.set("cut", times=1)
    result = acl_play(lab, tmp_path, WRITER, [("Info", ("overlay_network_info", {}))])
    assert not result.results("docker0", "Info").get("failed")
    # A write whose answer is cut: reported as such, never as "cannot connect".
    proxy.set("cut", times=1)
    result = acl_play(lab, tmp_path, WRITER, [("Create", ("overlay_network", {"name": "cutnet",
                                                                              "subnet": "10.64.0.0/24"}))])
    res = result.results("docker0", "Create")
    if res.get("failed"):
        assert "the connection was cut before Consul answered" in res["msg"], res["msg"]
        assert "cannot connect" not in res["msg"]
    proxy.set("pass")
    assert {k: v for k, v in lab.acl.kv().items() if k in before} == before


# -- the peers service ---------------------------------------------------------------------------
def _fdb(host, ns):
    return ns_exec(host, ns, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout


def _static_peers(host, ns):
    fdb = [line for line in _fdb(host, ns).splitlines() if " dst " in line and "00:00:00:00:00:00" not in line]
    neigh = ns_exec(host, ns, ["ip", "neigh", "show", "dev", "vxlan0", "nud", "permanent"]).stdout.split("\n")
    return fdb + [n for n in neigh if n.strip()]


def test_peers_service_heals_after_a_partition(lab_factory, collection_path):
    lab = lab_factory()
    d0, d1 = lab.hosts["docker0"], lab.hosts["docker1"]
    d1.add_netns("c1")
    for ns in ("c0", "c2", "g0"):
        d0.add_netns(ns)
    gone = {"name": "gonenet", "subnet": "10.70.0.0/24"}
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET, gone], {
        "docker1": [{"network": "demonet", "endpoints": [{"name": "C1", "namespace": "c1"}]}],
        "docker0": [{"network": "gonenet", "endpoints": [{"name": "G0", "namespace": "g0"}]}]})).assert_ok()
    records = kv(lab)
    demo_ns = "ovl-" + records["overlay/v1/networks/demonet"]["id"][:12]
    gone_id = records["overlay/v1/networks/gonenet"]["id"]
    gone_ns = "ovl-" + gone_id[:12]
    assert _static_peers(d1, gone_ns), "docker1 should hold G0 as a peer before the cut"

    proxy = FaultProxy((lab.hosts["consul"].ip, 8500), listen=("127.0.0.1", 18500), listen_ns=d1.netns_path(),
                       target_ns=d1.netns_path())
    try:
        watcher = lab._spawn("peers", d1.name, d1.nsenter_cmd() + [
            "env", "PYTHONPATH=" + collection_path, str(lab.venv / "bin" / "python"), "-m",
            "ansible_collections.overlay.vxlan.agent",
            "--host", "docker1", "--vtep", "eth0", "--consul-host", "127.0.0.1", "--consul-port", "18500"])
        log_path = lab._log_path("peers", "docker1")
        # Let it settle into its blocking query, then cut docker1 off from Consul.
        time.sleep(2)
        cut_at = time.monotonic()
        proxy.set("freeze")
        # Meanwhile, C0 attaches on docker0 and gonenet goes away entirely.
        lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET, dict(gone, state="absent", force=True)], {
            "docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0",
                                                              "ip": "192.168.0.100"}]}]}),
            limit="docker0").assert_ok()
        assert "overlay/v1/networks/gonenet" not in kv(lab)
        time.sleep(max(0.0, 20 - (time.monotonic() - cut_at)))
        assert "02:42:c0:a8:00:64 dst 10.0.0.10" not in _fdb(d1, demo_ns), "the cut let the change through"
        healed_at = time.monotonic()
        proxy.set("pass")
        assert wait_until(lambda: "02:42:c0:a8:00:64 dst 10.0.0.10" in _fdb(d1, demo_ns), timeout=10), \
            "C0's FDB entry did not arrive within 10 s of the heal:\n" + log_path.read_text()
        print("partition heal time: %.2fs" % (time.monotonic() - healed_at))
        assert wait_until(lambda: not _static_peers(d1, gone_ns), timeout=5), \
            "the peers of the removed network stayed: %s" % _static_peers(d1, gone_ns)

        # Malformed values under the prefix (where the modules do not read): the rest still syncs.
        client = lab.consul_client()
        garbage = "overlay/v1/endpoints/ffffffffffffffffffffffff/garbage"
        write_records(lab, collection_path, {garbage: b"{not json"})  # with its change mark: read by a change pass
        client.kv.put("overlay/v1/junk", "\x00\x01 not json")
        lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET], {"docker0": [
            {"network": "demonet", "endpoints": [{"name": "C2", "namespace": "c2", "ip": "192.168.0.102"}]}]}),
            limit="docker0").assert_ok()  # the modules read past them too
        assert wait_until(lambda: "02:42:c0:a8:00:66 dst 10.0.0.10" in _fdb(d1, demo_ns), timeout=10), \
            "one bad key stopped the syncing:\n" + log_path.read_text()
        assert watcher.popen.poll() is None, "the watcher died:\n" + log_path.read_text()
        log = log_path.read_text()
        print(log)
        assert log.count("lost contact with Consul") == 1 and log.count("reconnected to Consul") == 1, log
        assert log.count("skipping %s" % garbage) == 1, log
        assert "Traceback" not in log
    finally:
        proxy.close()


def test_the_peers_service_reads_with_a_read_only_token(lab, collection_path):
    # A change pass of the peers service: the blocking query (the keys up to the first "/" only) and
    # one read-only transaction of three parts. key_prefix read is enough, and a change deep in
    # the tree moves the index the blocking query answers with. (Under a prefix of its own: the
    # module's other tests keep their records in overlay/v1/.)
    from overlay_helpers import collection_import_path
    collection_import_path(collection_path)
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul
    store = _consul.Consul({"host": lab.acl.fwd.address[0], "port": lab.acl.fwd.address[1], "scheme": "http",
                            "token": READER, "ca_cert": None, "verify": True, "timeout": 5, "prefix": "overlay"})
    parts = ["overlay/ro/v1/networks/", "overlay/ro/v1/hosts/", "overlay/ro/v1/endpoints/"]
    try:
        lab.acl.api("PUT", "/v1/kv/overlay/ro/v1/networks/ro", data=b'{"id": "x"}')
        lab.acl.api("PUT", "/v1/kv/overlay/ro/v1/endpoints/x/e1", data=b'{"mac": "m1"}')
        lab.acl.api("PUT", "/v1/kv/overlay/ro/v1/ipam/x/10.0.0.1", data=b'{"endpoint": "e1"}')
        index = store.wait("overlay/ro/v1/", 0, 1, separator="/")
        trees = store.get_trees(parts)
        assert {p: {k: v for k, (v, _i) in t.items()} for p, t in trees.items()} == {
            "overlay/ro/v1/networks/": {"overlay/ro/v1/networks/ro": {"id": "x"}}, "overlay/ro/v1/hosts/": {},
            "overlay/ro/v1/endpoints/": {"overlay/ro/v1/endpoints/x/e1": {"mac": "m1"}}}
        known = trees
        lab.acl.api("PUT", "/v1/kv/overlay/ro/v1/endpoints/x/e2", data=b'{"mac": "m2"}')
        assert store.wait("overlay/ro/v1/", index, 5, separator="/") > index
        trees = store.get_trees(parts, known=known)
        ends = trees["overlay/ro/v1/endpoints/"]
        assert ends["overlay/ro/v1/endpoints/x/e1"] is known["overlay/ro/v1/endpoints/"]["overlay/ro/v1/endpoints/x/e1"]
        assert ends["overlay/ro/v1/endpoints/x/e2"][0] == {"mac": "m2"}
        # The rest of a change pass: the names of a network's records, and some of them in one transaction.
        assert store.keys("overlay/ro/v1/endpoints/x/") == ["overlay/ro/v1/endpoints/x/e1", "overlay/ro/v1/endpoints/x/e2"]
        got = store.get_many(["overlay/ro/v1/endpoints/x/e2", "overlay/ro/v1/endpoints/x/e3"])
        assert {k: v for k, (v, _i) in got.items()} == {"overlay/ro/v1/endpoints/x/e2": {"mac": "m2"}}
        index = store.wait("overlay/ro/v1/", 0, 1, separator="/")
        lab.acl.api("DELETE", "/v1/kv/overlay/ro/v1/endpoints/x/e1")  # a deletion moves it too
        assert store.wait("overlay/ro/v1/", index, 5, separator="/") > index
    finally:
        lab.acl.api("DELETE", "/v1/kv/overlay/ro/?recurse")
