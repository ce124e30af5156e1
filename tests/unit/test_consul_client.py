"""The Consul client against a real Consul (dev agent on loopback, ACLs on) behind a fault proxy:
refusals at once, unknown outcomes reported as such, bounded retries, bounded blocking queries."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.overlay.vxlan.plugins.module_utils import _consul
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

REPO = Path(__file__).resolve().parents[2]
CONSUL_BIN = REPO / ".cache" / "bin" / "consul"
sys.path.insert(0, str(REPO / "tests" / "integration"))
from lab.faultproxy import FaultProxy  # noqa: E402

PORT = 18650
MASTER = "0b8e5a34-0000-4000-8000-0000000000ff"
WRITER = "0b8e5a34-0000-4000-8000-0000000000a2"
READER = "0b8e5a34-0000-4000-8000-0000000000a1"
pytestmark = pytest.mark.skipif(not CONSUL_BIN.exists(), reason="run scripts/setup.sh for .cache/bin/consul")


def _api(method, path, body=None, token=MASTER):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (PORT, path), method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-Consul-Token": token})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    hcl = ('ports { http = %d, dns = -1, grpc = -1, serf_lan = %d, serf_wan = %d, server = %d } '
           'acl { enabled = true, default_policy = "deny", tokens { master = "%s" } }'
           % (PORT, PORT + 1, PORT + 2, PORT + 3, MASTER))
    log = open(tmp_path_factory.mktemp("consul") / "consul.log", "w")
    proc = subprocess.Popen([str(CONSUL_BIN), "agent", "-dev", "-node", "unit", "-client", "127.0.0.1",
                             "-bind", "127.0.0.1", "-hcl", hcl], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _api("GET", "/v1/status/leader")
                _api("PUT", "/v1/acl/policy", {"Name": "ro", "Rules": 'key_prefix "overlay/" { policy = "read" }'})
                _api("PUT", "/v1/acl/policy", {"Name": "rw", "Rules": 'key_prefix "overlay/" { policy = "write" }'})
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        _api("PUT", "/v1/acl/token", {"SecretID": READER, "Description": "unit read-only", "Policies": [{"Name": "ro"}]})
        _api("PUT", "/v1/acl/token", {"SecretID": WRITER, "Description": "unit writer", "Policies": [{"Name": "rw"}]})
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def proxy(agent):
    p = FaultProxy(("127.0.0.1", PORT))
    yield p
    p.close()


def store(port, token=WRITER, timeout=3.0):
    return _consul.Consul(dict(host="127.0.0.1", port=port, scheme="http", token=token, ca_cert=None, verify=True,
                               timeout=timeout, prefix="overlay"))


def raw(key):
    """What Consul holds, read with the master token straight from the agent."""
    try:
        items = _api("GET", "/v1/kv/" + key)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    return _consul._decode(key, _consul._b64(items[0]["Value"]))


def test_every_op_verb_works_in_a_real_transaction(agent, request):
    s = store(PORT)
    k = "overlay/unit/%s/" % request.node.name
    created = s.commit([_consul.op_create(k + "a", {"v": 1}), _consul.op_create(k + "b", {"v": 2})])
    assert set(created) == {k + "a", k + "b"} and all(isinstance(i, int) and i > 0 for i in created.values())
    ia, ib = created[k + "a"], created[k + "b"]
    got = s.commit([_consul.op_get(k + "a"), _consul.op_check_index(k + "b", ib), _consul.op_check_not_exists(k + "c"),
                    _consul.op_cas(k + "a", {"v": 3}, ia)])
    assert got[k + "b"] == ib and got[k + "a"] > ia
    assert raw(k + "a") == {"v": 3}
    assert s.commit([_consul.op_delete_cas(k + "b", ib)]) == {}
    assert raw(k + "b") is None
    # Each check fails as it should, and the whole transaction is left unapplied.
    for ops in ([_consul.op_cas(k + "a", {"v": 9}, ia)], [_consul.op_check_index(k + "a", ia)],
                [_consul.op_check_not_exists(k + "a")], [_consul.op_delete_cas(k + "a", ia)], [_consul.op_get(k + "zz")],
                [_consul.op_create(k + "a", {"v": 9})]):
        with pytest.raises(_consul.TxnConflict) as e:
            s.commit([_consul.op_create(k + "new", 1)] + ops)
        assert e.value.errors and e.value.errors[0][0] == 1
        assert s.txn([_consul.op_create(k + "new", 1)] + ops) == e.value.errors  # the old interface
        assert raw(k + "a") == {"v": 3} and raw(k + "new") is None
    assert s.txn([_consul.op_delete_tree(k)]) is None and raw(k + "a") is None


def test_read_only_token_is_refused_at_once_and_named(proxy):
    s = store(proxy.address[1], token=READER, timeout=5)
    for call in (lambda: s.commit([_consul.op_create("overlay/unit/ro", 1)]), lambda: s.txn([_consul.op_delete("overlay/x")]),
                 lambda: s.put("overlay/unit/ro", 1)):
        proxy.log.clear()
        with pytest.raises(_consul.ConsulPermissionDenied) as e:
            call()
        msg = e.value.message
        assert msg.startswith("consul_token: Consul at http://127.0.0.1:%d: " % proxy.address[1])
        assert 'needs key_prefix "overlay/" write' in msg and "(unit read-only)" in msg
        accessor = _api("GET", "/v1/acl/token/self", token=READER)["AccessorID"]
        assert accessor in msg and READER not in msg
        assert [entry[1:] for entry in proxy.log if entry[2].startswith(("/v1/txn", "/v1/kv"))] == \
            [("PUT", proxy.log[0][2])], "retried: %s" % proxy.log
    assert raw("overlay/unit/ro") is None
    # Reading is allowed; outside the prefix it is refused, naming the read permission.
    assert s.get("overlay/unit/none") == (None, 0)
    with pytest.raises(_consul.ConsulPermissionDenied, match='needs key_prefix "overlay/" read'):
        s.get("other/key")
    with pytest.raises(_consul.ConsulPermissionDenied, match="which Consul does not know"):
        store(PORT, token="0b8e5a34-0000-4000-8000-00000000dead").get("overlay/x")


def test_answer_lost_after_commit_is_an_unknown_outcome(proxy):
    s = store(proxy.address[1], timeout=1.5)
    for mode, opts, key, text in (("cut", {}, "overlay/unit/cut", "the connection was cut before Consul answered"),
                                  ("delay", {"delay": 3}, "overlay/unit/delay", "no answer within 1.5s")):
        proxy.set(mode, times=1, **opts)
        ops = [_consul.op_create(key, {"k": key})]
        with pytest.raises(_consul.ConsulOutcomeUnknown) as e:
            s.commit(ops)
        assert text in e.value.message and "may or may not have been applied" in e.value.message
        assert e.value.field == "consul_host" and e.value.ops == ops
        assert "cannot connect" not in e.value.message
        assert raw(key) == {"k": key}, "the write did commit in Consul"
        assert len([m for m in proxy.log if m[2] == "/v1/txn"]) == 1  # not retried
        proxy.log.clear()


def test_http_500_mid_commit_is_an_unknown_outcome_but_503_and_429_are_retried(proxy):
    s = store(proxy.address[1])
    proxy.set("status", times=1, status=500, body="rpc error making call: leadership lost while committing log")
    with pytest.raises(_consul.ConsulOutcomeUnknown, match="HTTP 500"):
        s.commit([_consul.op_create("overlay/unit/500", 1)])
    for status in (503, 429):
        proxy.set("status", times=2, status=status, body="No cluster leader")
        key = "overlay/unit/%d" % status
        assert set(s.commit([_consul.op_create(key, status)])) == {key}  # a repeat after apply would be a 409
        assert raw(key) == status


def test_reads_retry_through_a_brief_outage(proxy):
    s = store(proxy.address[1])
    s.put("overlay/unit/read", {"r": 1})
    for mode, opts in (("status", {"status": 500}), ("status", {"status": 503}), ("status", {"status": 429}),
                       ("cut", {}), ("status", {"status": 502})):
        proxy.log.clear()
        proxy.set(mode, times=3, **opts)
        assert s.get("overlay/unit/read")[0] == {"r": 1}
        assert len(proxy.log) == 4
    # A longer outage ends in a clear error, within consul_timeout.
    proxy.set("status", status=500, body="No cluster leader")
    with pytest.raises(OverlayError, match="reading overlay/unit/read failed: HTTP 500: No cluster leader"):
        store(proxy.address[1], timeout=0.5).get("overlay/unit/read")


def test_connection_refused_is_retried_then_reported_as_cannot_connect():
    s = store(PORT + 40, timeout=0.5)  # nothing listens there
    with pytest.raises(OverlayError) as e:
        s.commit([_consul.op_create("overlay/unit/refused", 1)])
    assert not isinstance(e.value, _consul.ConsulOutcomeUnknown)
    assert e.value.field == "consul_host" and "cannot connect (is the agent running" in e.value.message


def test_blocking_query_on_a_silent_connection_is_bounded(proxy):
    s = store(proxy.address[1], timeout=1)
    index = s.wait("overlay/", 0, 1)
    assert index > 0
    proxy.set("freeze")
    with pytest.raises(OverlayError, match="watching overlay/ failed: the connection stayed silent"):
        s.wait("overlay/", index, 1)
    proxy.set("pass")
    assert s.wait("overlay/", 0, 1) >= index


def test_a_malformed_value_can_be_skipped(agent):
    s = store(PORT, token=MASTER)
    _api("PUT", "/v1/kv/overlay/unit/bad/x", None)
    req = urllib.request.Request("http://127.0.0.1:%d/v1/kv/overlay/unit/bad/y" % PORT, method="PUT",
                                 data=b"{not json", headers={"X-Consul-Token": MASTER})
    urllib.request.urlopen(req, timeout=5).close()
    s.put("overlay/unit/bad/z", {"ok": True})
    with pytest.raises(OverlayError, match="overlay/unit/bad/y holds"):
        s.get_tree("overlay/unit/bad/")
    bad = []
    tree = s.get_tree("overlay/unit/bad/", on_bad=lambda k, r: bad.append(k))
    assert bad == ["overlay/unit/bad/y"] and tree["overlay/unit/bad/z"][0] == {"ok": True}


def test_get_many_reads_exact_keys_in_one_transaction_per_64(agent, request, proxy):
    """get_many: only the keys asked for (a key's tree also holds longer keys: 10.0.0.1 and 10.0.0.10),
    none for a missing key, the same (value, index) pairs get() gives; 130 keys in 3 requests; a read-only
    token may read, a token without read is refused at once, naming what it needs."""
    s = store(PORT)
    k = "overlay/unit/%s/" % request.node.name
    s.commit([_consul.op_create(k + "ip/10.0.0.1", {"e": 1}), _consul.op_create(k + "ip/10.0.0.10", {"e": 10})])
    got = s.get_many([k + "ip/10.0.0.1", k + "ip/10.0.0.2", k + "ip/10.0.0.1"])
    assert got == {k + "ip/10.0.0.1": s.get(k + "ip/10.0.0.1")}, got
    assert s.get_many([]) == {}
    many = [k + "n/%03d" % i for i in range(130)]
    for start in range(0, len(many), 60):
        s.commit([_consul.op_create(key, i) for i, key in enumerate(many[start:start + 60], start)])
    before = len(proxy.log)
    values = store(proxy.address[1]).get_many(many)
    assert {key: v for key, (v, _i) in values.items()} == {key: i for i, key in enumerate(many)}
    assert [(m, p) for _mode, m, p in proxy.log[before:]] == [("PUT", "/v1/txn")] * 3, proxy.log[before:]
    assert store(PORT, token=READER).get_many(many[:2]) == {key: values[key] for key in many[:2]}
    with pytest.raises(_consul.ConsulPermissionDenied, match='key_prefix "overlay/" read'):
        store(PORT, token="0b8e5a34-0000-4000-8000-00000000dead").get_many(many[:2])
