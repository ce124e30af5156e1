from __future__ import annotations

import pytest

from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _peers
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

EMPTY = dict(consul_host=None, consul_port=None, consul_scheme=None, consul_token=None, consul_ca_cert=None,
             consul_validate_certs=None, consul_timeout=10, consul_prefix="overlay")


def test_defaults_are_the_local_agent():
    s = _consul.connection_settings(EMPTY, environ={})
    assert (s["host"], s["port"], s["scheme"], s["token"], s["verify"]) == ("127.0.0.1", 8500, "http", None, True)


def test_environment_is_the_fallback():
    env = {"CONSUL_HTTP_ADDR": "https://consul.example:8501", "CONSUL_HTTP_TOKEN": "t0k",
           "CONSUL_CACERT": "/ca.pem", "CONSUL_HTTP_SSL_VERIFY": "false"}
    s = _consul.connection_settings(EMPTY, environ=env)
    assert (s["host"], s["port"], s["scheme"], s["token"], s["ca_cert"], s["verify"]) == \
        ("consul.example", 8501, "https", "t0k", "/ca.pem", False)


def test_options_win_over_environment():
    env = {"CONSUL_HTTP_ADDR": "10.9.9.9:8500", "CONSUL_HTTP_TOKEN": "env"}
    s = _consul.connection_settings(dict(EMPTY, consul_host="10.0.0.5", consul_token="opt"), environ=env)
    assert (s["host"], s["port"], s["token"]) == ("10.0.0.5", 8500, "opt")


def test_bad_addr_names_the_field():
    with pytest.raises(OverlayError) as e:
        _consul.connection_settings(EMPTY, environ={"CONSUL_HTTP_ADDR": "host:notaport"})
    assert e.value.field == "consul_host"


def test_port_range():
    with pytest.raises(OverlayError, match="^consul_port: port 70000 is outside"):
        _consul.connection_settings(dict(EMPTY, consul_port=70000), environ={})


def test_txn_ops_encode_json_values():
    op = _consul.op_create("k", {"a": 1})
    assert op["KV"]["Verb"] == "cas" and op["KV"]["Index"] == 0
    import base64
    import json
    assert json.loads(base64.b64decode(op["KV"]["Value"])) == {"a": 1}
    assert _consul.op_delete_tree("p/")["KV"] == {"Verb": "delete-tree", "Key": "p/"}


def test_peers_are_only_remote_endpoints():
    eps = [{"mac": "02:42:c0:a8:00:64", "ip": "192.168.0.100", "vtep": "10.0.0.10"},
           {"mac": "02:42:c0:a8:00:02", "ip": "192.168.0.2", "vtep": "10.0.0.11"}]
    assert _peers.desired(eps, "10.0.0.11") == {"02:42:c0:a8:00:64": ("192.168.0.100", "10.0.0.10")}


class RecordingIPR:
    """Records writes; any read (a dump) fails the test: a sync given ``have`` must not read."""

    def __init__(self):
        self.writes = []

    def fdb(self, cmd, **kw):
        assert cmd != "dump", "a sync from a known state dumped the FDB"
        self.writes.append(("fdb", cmd, kw.get("lladdr"), kw.get("dst")))

    def neigh(self, cmd, **kw):
        self.writes.append(("neigh", cmd, kw.get("dst"), kw.get("lladdr")))

    def get_neighbours(self, **kw):
        raise AssertionError("a sync from a known state dumped the neighbours")


def test_sync_from_a_known_state_writes_only_the_difference():
    a, b, c = "02:42:c0:a8:00:0a", "02:42:c0:a8:00:0b", "02:42:c0:a8:00:0c"
    have = {a: ("192.168.0.10", "10.0.0.10"), b: ("192.168.0.11", "10.0.0.10")}
    # b moved to another host, c is new, a stays: nothing at all is written for a.
    want = {a: ("192.168.0.10", "10.0.0.10"), b: ("192.168.0.11", "10.0.0.12"), c: ("192.168.0.12", "10.0.0.11")}
    ipr = RecordingIPR()
    actions = _peers.sync(ipr, 7, want, True, have=have)
    assert ipr.writes == [("fdb", "del", b, "10.0.0.10"), ("fdb", "append", b, "10.0.0.12"),
                          ("fdb", "append", c, "10.0.0.11"), ("neigh", "replace", "192.168.0.12", c)], ipr.writes
    assert actions == ["fdb: remove %s dst 10.0.0.10" % b, "fdb: add %s dst 10.0.0.12" % b,
                       "fdb: add %s dst 10.0.0.11" % c, "neigh: add 192.168.0.12 lladdr %s" % c]
    assert _peers.sync(RecordingIPR(), 7, want, True, have=want) == []


def _ep(n, vtep, mac=None, ip=None):
    return {"id": "%064x" % n, "mac": mac or "02:42:c0:a8:00:%02x" % n, "ip": ip or "192.168.0.%d" % n, "vtep": vtep}


def test_index_follows_desired_one_change_at_a_time():
    import random
    rnd = random.Random(9)
    records = {}
    index = _peers.Index({}, "10.0.0.11")
    for _step in range(400):
        key = "k%02d" % rnd.randrange(30)
        before = records.get(key)
        after = None if rnd.random() < 0.3 else _ep(rnd.randrange(1, 40), rnd.choice(["10.0.0.10", "10.0.0.11", "10.0.0.12"]))
        old_want = _peers.desired([r for _k, r in sorted(records.items())], "10.0.0.11")
        if after is None:
            records.pop(key, None)
        else:
            records[key] = after
        new_want = _peers.desired([r for _k, r in sorted(records.items())], "10.0.0.11")
        have, want = index.apply({key: (before, after)})
        assert index.desired() == new_want
        # Only the touched MACs, each as desired() says before and after.
        assert have == {m: v for m, v in old_want.items() if m in have}
        assert want == {m: v for m, v in new_want.items() if m in want}
        for mac in set(old_want) ^ set(new_want) | {m for m in old_want if old_want[m] != new_want.get(m)}:
            assert mac in have or mac in want
    assert _peers.Index(records, "10.0.0.11").desired() == index.desired()


def test_index_moves_a_changed_endpoint():
    a = _ep(10, "10.0.0.10")
    index = _peers.Index({"k": a}, "10.0.0.11")
    moved = dict(a, vtep="10.0.0.12")
    have, want = index.apply({"k": (a, moved)})
    ipr = RecordingIPR()
    _peers.sync(ipr, 7, want, True, have=have)
    assert ipr.writes == [("fdb", "del", a["mac"], "10.0.0.10"), ("fdb", "append", a["mac"], "10.0.0.12")]
    # Now on this host: no remote entry any more.
    have, want = index.apply({"k": (moved, dict(a, vtep="10.0.0.11"))})
    ipr = RecordingIPR()
    _peers.sync(ipr, 7, want, True, have=have)
    assert ipr.writes == [("fdb", "del", a["mac"], "10.0.0.12"), ("neigh", "del", a["ip"], a["mac"])]


class FakeStore:
    """get_tree from a dict {key: (value, modify_index)}, counting the values it decodes."""

    def __init__(self, tree):
        self.tree = tree
        self.decoded = 0

    def get_tree(self, prefix, on_bad=None, known=None):
        out = {}
        for key, (value, index) in self.tree.items():
            if key.startswith(prefix):
                old = (known or {}).get(key)
                if old is not None and old[1] == index:
                    out[key] = old
                else:
                    self.decoded += 1
                    out[key] = (value, index)
        return out

    def get_trees(self, prefixes, on_bad=None, known=None):
        return {p: self.get_tree(p, on_bad, (known or {}).get(p)) for p in prefixes}


def test_state_reads_only_what_changed():
    from ansible_collections.overlay.vxlan.agent import peers
    from ansible_collections.overlay.vxlan.plugins.module_utils import _keys
    layout = _keys.Layout("overlay")
    ep = layout.endpoint
    tree = {layout.network("n"): ({"id": "n" * 12, "name": "n"}, 5),
            layout.ip_claim("n" * 12, "192.168.0.1"): ({"endpoint": "a"}, 6),
            ep("n" * 12, "a"): (_ep(1, "10.0.0.10"), 6), ep("n" * 12, "b"): (_ep(2, "10.0.0.12"), 7)}
    store = FakeStore(tree)
    state = peers.State()
    changes = state.read(store, layout, peers.Once(lambda t: None), full=True)
    assert set(changes["n" * 12]) == {ep("n" * 12, "a"), ep("n" * 12, "b")}
    assert state.vteps == {"10.0.0.10": 1, "10.0.0.12": 1}
    store.decoded = 0
    assert state.read(store, layout, peers.Once(lambda t: None), full=False) == {}
    assert store.decoded == 0  # nothing changed: nothing decoded
    b2 = _ep(2, "10.0.0.13")
    tree[ep("n" * 12, "b")] = (b2, 9)
    del tree[ep("n" * 12, "a")]
    tree[ep("n" * 12, "c")] = ({"not": "an endpoint"}, 10)
    seen = []
    changes = state.read(store, layout, peers.Once(seen.append), full=False)
    assert store.decoded == 2
    assert changes == {"n" * 12: {ep("n" * 12, "a"): (_ep(1, "10.0.0.10"), None),
                                  ep("n" * 12, "b"): (_ep(2, "10.0.0.12"), b2)}}
    assert state.vteps == {"10.0.0.13": 1} and len(seen) == 1 and "not an endpoint record" in seen[0]
    assert state.endpoints == {"n" * 12: {ep("n" * 12, "b"): b2}}
