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
    """A store from a dict {key: (value, modify_index)}: get_tree, get_trees, keys and get_many as
    the Consul client answers them, counting the values it decodes; ``write`` as a transaction of
    the collection writes (the record and its change mark at one new index), ``write_unmarked`` as
    another tool would."""

    def __init__(self, tree, layout):
        self.tree, self.layout = tree, layout
        self.decoded = self.served = 0
        self.index = max((i for _v, i in tree.values()), default=0)

    def _entry(self, key, known):
        value, index = self.tree[key]
        mark = key.startswith(self.layout.root + "changes/")
        self.served += not mark  # a record (or another value) in Consul's answer, decoded or not
        old = (known or {}).get(key)
        if old is not None and old[1] == index:
            return old
        self.decoded += not mark
        return (value, index)

    def get_tree(self, prefix, on_bad=None, known=None):
        return {key: self._entry(key, known) for key in self.tree if key.startswith(prefix)}

    def get_trees(self, prefixes, on_bad=None, known=None):
        return {p: self.get_tree(p, on_bad, (known or {}).get(p)) for p in prefixes}

    def keys(self, prefix):
        return sorted(key for key in self.tree if key.startswith(prefix))

    def get_many(self, keys, on_bad=None, known=None):
        return {key: self._entry(key, known) for key in keys if key in self.tree}

    def write_unmarked(self, key, value):
        self.index += 1
        if value is None:
            self.tree.pop(key, None)
        else:
            self.tree[key] = (value, self.index)

    def write(self, key, value):
        self.write_unmarked(key, value)
        for op in self.layout.change_marks([{"KV": {"Verb": "set", "Key": key}}]):
            self.tree[op["KV"]["Key"]] = ({}, self.index)


def test_state_reads_only_what_changed():
    from ansible_collections.overlay.vxlan.agent import peers
    from ansible_collections.overlay.vxlan.plugins.module_utils import _keys
    layout = _keys.Layout("overlay")
    net = "n" * 12

    def ep(name):
        return layout.endpoint(net, name)

    tree = {layout.network("n"): ({"id": net, "name": "n"}, 5),
            layout.ip_claim(net, "192.168.0.1"): ({"endpoint": "a"}, 6)}
    store = FakeStore(tree, layout)
    store.write(ep("a"), _ep(1, "10.0.0.10"))
    store.write(ep("b"), _ep(2, "10.0.0.12"))
    for i in range(200):  # many records on this host: a change pass must not read them all
        store.write(ep("x%d" % i), _ep(100 + i, "10.0.0.11"))
    state = peers.State()
    changes = state.read(store, layout, peers.Once(lambda t: None), full=True)
    assert len(changes[net]) == 202
    assert state.vteps == {"10.0.0.10": 1, "10.0.0.12": 1, "10.0.0.11": 200}
    store.decoded = store.served = 0
    assert state.read(store, layout, peers.Once(lambda t: None), full=False) == {}
    assert store.decoded == 0 and store.served == 1  # nothing changed: the network record only
    b2 = _ep(2, "10.0.0.13")
    store.write(ep("b"), b2)
    store.write(ep("a"), None)
    store.write(ep("c"), {"not": "an endpoint"})
    seen = []
    changes = state.read(store, layout, peers.Once(seen.append), full=False)
    # The records of three shards of 64 (b's, a's, c's) and nothing else: about 3 * 202 / 64.
    assert store.decoded == 2 and 2 <= store.served - 1 <= 30, store.served
    assert changes == {net: {ep("a"): (_ep(1, "10.0.0.10"), None), ep("b"): (_ep(2, "10.0.0.12"), b2)}}
    assert state.vteps == {"10.0.0.13": 1, "10.0.0.11": 200} and len(seen) == 1 and "not an endpoint record" in seen[0]
    assert set(state.endpoints[net]) == {ep("b")} | {ep("x%d" % i) for i in range(200)}

    # Deleted and created again under the same name with another VTEP (an endpoint that moved host)
    # between two passes: its mark moved, so the pass sees it, whatever else changed.
    store.write(ep("b"), None)
    b3 = _ep(2, "10.0.0.14")
    store.write(ep("b"), b3)
    changes = state.read(store, layout, peers.Once(lambda t: None), full=False)
    assert changes == {net: {ep("b"): (b2, b3)}}

    # A writer that sets no mark is not seen by a change pass; the next full pass finds it.
    store.write_unmarked(ep("x7"), _ep(107, "10.0.0.15"))
    assert state.read(store, layout, peers.Once(lambda t: None), full=False) == {}
    changes = state.read(store, layout, peers.Once(lambda t: None), full=True)
    assert changes[net][ep("x7")][1]["vtep"] == "10.0.0.15"
    assert state.vteps["10.0.0.15"] == 1

    # A network's first records (nothing known of it yet), and many shards moved at once: read whole.
    other = "m" * 12
    for i in range(40):
        store.write(layout.endpoint(other, "y%d" % i), _ep(300 + i, "10.0.0.12"))
    changes = state.read(store, layout, peers.Once(lambda t: None), full=False)
    assert len(changes[other]) == 40 and set(changes) == {other}
    for i in range(40):
        store.write(layout.endpoint(other, "y%d" % i), None)
    changes = state.read(store, layout, peers.Once(lambda t: None), full=False)
    assert len(changes[other]) == 40 and all(after is None for _b, after in changes[other].values())
    assert other not in state.endpoints

    # A network removed between two passes, its marks deleted last: the pass never saw them (its
    # records came from a writer without marks, read by a full pass), but the network's record went,
    # so its records are read again (none left).
    gone = "p" * 12
    store.write_unmarked(layout.network("p"), {"id": gone, "name": "p"})
    for i in range(5):
        store.write_unmarked(layout.endpoint(gone, "z%d" % i), _ep(400 + i, "10.0.0.16"))
    state.read(store, layout, peers.Once(lambda t: None), full=True)
    assert len(state.endpoints[gone]) == 5 and state.vteps["10.0.0.16"] == 5
    store.write_unmarked(layout.network("p"), None)
    for i in range(5):
        store.write(layout.endpoint(gone, "z%d" % i), None)
    for key in [k for k in store.tree if k.startswith(layout.changes(gone))]:
        store.write_unmarked(key, None)
    changes = state.read(store, layout, peers.Once(lambda t: None), full=False)
    assert set(changes) == {gone} and len(changes[gone]) == 5 and gone not in state.endpoints
    assert "10.0.0.16" not in state.vteps


def test_a_change_read_that_fails_part_way_is_read_again():
    # Consul stops answering after the marks were read: the view keeps its old marks, so the next
    # change read (not only a full one) still sees the change.
    from ansible_collections.overlay.vxlan.plugins.module_utils import _changes, _keys
    layout = _keys.Layout("overlay")
    net = "n" * 12
    store = FakeStore({layout.network("n"): ({"id": net, "name": "n"}, 1)}, layout)
    for i in range(20):
        store.write(layout.endpoint(net, "x%d" % i), _ep(i, "10.0.0.11"))
    view = _changes.View()
    view.read(store, layout, None, full=True)
    store.write(layout.endpoint(net, "x3"), _ep(3, "10.0.0.12"))
    real = store.get_many

    def down(*args, **kwargs):
        raise OSError("Consul went away")

    store.get_many = down
    with pytest.raises(OSError):
        view.read(store, layout, None, full=False)
    store.get_many = real
    assert view.read(store, layout, None, full=False) == {
        net: {layout.endpoint(net, "x3"): (_ep(3, "10.0.0.11"), _ep(3, "10.0.0.12"))}}


def test_change_marks_of_a_transaction():
    """Every op that writes an endpoint record sets its shard's mark, once per mark; reads and
    checks set none, nor do writes of other keys. commit() adds them after the ops and batches()
    keeps a transaction within 64 operations marks included."""
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys
    layout = _keys.Layout("rt/x")
    net = "a" * 64
    ops = [_consul.op_check_index(layout.network("n"), 3), _consul.op_create(layout.ip_claim(net, "10.0.0.2"), {}),
           _consul.op_create(layout.endpoint(net, "c1"), {}), _consul.op_cas(layout.endpoint(net, "c1"), {}, 4),
           _consul.op_delete_cas(layout.endpoint(net, "c2"), 5), _consul.op_get(layout.endpoint(net, "c3")),
           _consul.op_check_not_exists(layout.endpoint(net, "c4"))]
    marks = [op["KV"]["Key"] for op in layout.change_marks(ops)]
    assert marks == [layout.change_mark(net, "c1"), layout.change_mark(net, "c2")] or \
        (marks == [layout.change_mark(net, "c1")] and _keys.shard("c1") == _keys.shard("c2"))
    assert all(m.startswith("rt/x/v1/changes/%s/" % net) and len(m.rsplit("/", 1)[1]) == 2 for m in marks)
    assert len({_keys.shard("c%d" % i) for i in range(1000)}) == _keys.SHARDS
    assert layout.shard_of(layout.endpoint(net, "c1")) == _keys.shard("c1")
    assert layout.shard_of(layout.ip_claim(net, "10.0.0.2")) is None

    store = _consul.Consul({"host": "127.0.0.1", "port": 1, "scheme": "http", "token": None, "timeout": 1,
                            "prefix": "rt/x"})
    deletes = [_consul.op_delete_cas(layout.endpoint(net, "e%d" % i), 7) for i in range(200)]
    parts = list(store.batches(deletes))
    assert [op for part in parts for op in part] == deletes
    assert all(len(part) + len(layout.change_marks(part)) <= _consul.TXN_MAX_OPS for part in parts)
    assert all(len(part) + len(layout.change_marks(part)) > _consul.TXN_MAX_OPS - 2 for part in parts[:-1])
    claims = [_consul.op_create(layout.ip_claim(net, "10.0.%d.1" % i), {}) for i in range(100)]
    assert [len(part) for part in store.batches(claims)] == [64, 36]
    from ansible_collections.overlay.vxlan.plugins.module_utils import _records
    assert 1 + _records.CHUNK * _records.CLAIMS_PER_ENDPOINT <= _consul.TXN_MAX_OPS


def test_names_follow_the_change_marks():
    # The names service's loop (agent/names.py follow): a full read first, then reads of what the
    # marks name after each wake, a full read again when the wait passes without a change.
    import threading
    from ansible_collections.overlay.vxlan.agent import names
    from ansible_collections.overlay.vxlan.plugins.module_utils import _keys
    layout = _keys.Layout("overlay")
    net = "n" * 12
    store = FakeStore({layout.network("n"): ({"id": net, "name": "n"}, 1)}, layout)
    for i in range(100):
        store.write(layout.endpoint(net, "x%d" % i), dict(_ep(i, "10.0.0.11"), name="x%d" % i, network_id=net))
    table, stop, tables, served = names.Table(), threading.Event(), [], []
    web = dict(_ep(200, "10.0.0.12", ip="10.9.0.7"), name="web", network_id=net)
    steps = [lambda: store.write(layout.endpoint(net, "web"), web),
             lambda: store.write(layout.endpoint(net, "web"), None),
             lambda: None]  # no change: the wait passes, and the next read is full

    def wait(prefix, index, seconds, separator=None):
        assert separator == "/"
        tables.append(dict(table.names))
        served.append(store.served)
        store.served = 0
        if not steps:
            stop.set()
            return store.index
        steps.pop(0)()
        return store.index

    store.wait = wait
    names.follow(store, layout, table, lambda text: None, stop)
    assert tables[0]["x7.n"] == "192.168.0.7" and "web" not in tables[0]
    assert tables[1]["web"] == tables[1]["web.n"] == "10.9.0.7"
    assert "web" not in tables[2] and tables[3] == tables[2]
    assert served[0] >= 101 and served[1] <= 10 and served[2] <= 10 and served[3] >= 101, served
