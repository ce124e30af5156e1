"""The store protocol's interleavings, forced deterministically against a real Consul: the step of
another host lands exactly between this run's read and its write. Through Ansible the same races
are tried by timing (test_overlay_hardening.py); here every ordering is hit on purpose."""
from __future__ import annotations

import ipaddress
import multiprocessing

import pytest

from overlay_helpers import collection_import_path, kv

HOST = "h1"


@pytest.fixture(scope="module")
def lab(module_lab_factory, collection_path):
    collection_import_path(collection_path)
    return module_lab_factory({"consul": "10.0.0.5"}, internet=False)


@pytest.fixture
def mods(lab):
    from ansible_collections.overlay.vxlan.plugins.module_utils import (
        _consul, _endpoint, _keys, _network, _records)
    lab.consul_client().kv.delete("overlay/", recurse=True)
    return _consul, _endpoint, _keys, _network, _records


def _store(lab, mods):
    _consul = mods[0]
    port = lab._consul_forwarder().address[1]
    return _consul.Consul({"host": "127.0.0.1", "port": port, "scheme": "http", "token": None, "ca_cert": None,
                           "verify": True, "timeout": 10, "prefix": "overlay"})


class _Underlay:
    host, vtep = HOST, "10.1.0.1"


def _network(mods, store, name="n1", subnet="10.80.0.0/24"):
    _keys, _records = mods[2], mods[4]
    rec = _keys.network_record(name, ipaddress.ip_network(subnet), str(next(ipaddress.ip_network(subnet).hosts())),
                               None, 1450, 4789, False, HOST)
    record, index, created = _records.create_network(store, _keys.Layout("overlay"), rec)
    assert created
    return record, index


def _claim(mods, store, network, index, names, count=None):
    _endpoint, _keys, _records = mods[1], mods[2], mods[4]
    items = [_endpoint.Item({"name": n, "namespace": "ns-" + n}, "", {"ifname": "eth0", "gateway_ifname": "eth1"})
             for n in names]
    return _records.claim_endpoints(store, _keys.Layout("overlay"), network, index, HOST,
                                    _endpoint.new_records_builder(network, None, _Underlay(), items),
                                    len(items) if count is None else count, "addresses")


def _endpoint_keys(lab):
    return sorted(k for k in kv(lab) if any(p in k for p in ("/endpoints/", "/ipam/", "/macs/", "/gateway-ipam/")))


def test_an_attach_whose_write_comes_after_the_removal_mark_is_refused(lab, mods):
    _records = mods[4]
    store = _store(lab, mods)
    layout = mods[2].Layout("overlay")
    network, index = _network(mods, store)
    real = store.commit
    calls = []

    def commit(ops):
        if not calls:  # another host marks the network for removal between our read and our write
            calls.append(1)
            _records.mark_removing(_store(lab, mods), layout, network, index, "other")
        return real(ops)

    store.commit = commit
    with pytest.raises(Exception) as info:
        _claim(mods, store, network, index, ["A"])
    assert "network n1 is being removed (by host other)" in str(info.value)
    assert _endpoint_keys(lab) == []


def test_an_attach_committed_before_the_mark_keeps_the_network(lab, mods):
    _network_mod = mods[3]
    store = _store(lab, mods)
    layout = mods[2].Layout("overlay")
    network, index = _network(mods, store)
    # The removal read "no endpoints" earlier; meanwhile an attach committed. The mark and the
    # re-read after it see the endpoint: the network stays, un-marked, with its endpoint.
    _claim(mods, store, network, index, ["A"])
    remaining, deleted = _network_mod._remove_record(store, layout, network, index, "other")
    assert [e.value["name"] for e in remaining] == ["A"] and not deleted
    record = kv(lab)["overlay/v1/networks/n1"]
    assert "removing" not in record and record["id"] == network["id"]
    assert len(_endpoint_keys(lab)) == 3  # record, address claim, MAC claim


def test_an_attach_after_the_network_is_gone_leaves_nothing(lab, mods):
    _network_mod = mods[3]
    store = _store(lab, mods)
    layout = mods[2].Layout("overlay")
    network, index = _network(mods, store)
    assert _network_mod._remove_record(store, layout, network, index, "other") == ([], True)
    assert list(kv(lab)) == []
    with pytest.raises(Exception) as info:
        _claim(mods, store, network, index, ["A"])
    assert "network n1 was removed while endpoints were being attached" in str(info.value)
    assert kv(lab) == {}


def test_a_batch_failing_in_its_second_transaction_releases_the_first(lab, mods):
    _consul = mods[0]
    store = _store(lab, mods)
    network, index = _network(mods, store)
    before = kv(lab)
    real = store.commit
    calls = []

    def commit(ops):
        calls.append(1)
        if len(calls) == 2:
            raise _consul.OverlayError("Consul at x: a transaction failed with HTTP 500: leader lost")
        return real(ops)

    store.commit = commit
    with pytest.raises(Exception, match="HTTP 500"):
        _claim(mods, store, network, index, ["E%d" % i for i in range(20)])
    store.commit = real
    assert kv(lab) == before


def test_a_lost_answer_that_did_commit_is_adopted_once(lab, mods):
    _consul, _records = mods[0], mods[4]
    store = _store(lab, mods)
    network, index = _network(mods, store)
    real = store.commit

    def commit(ops):
        real(ops)  # Consul applied it; the answer never came back
        raise _consul.ConsulOutcomeUnknown("no answer", ops)

    store.commit = commit
    claimed = _claim(mods, store, network, index, ["A", "B"])
    store.commit = real
    assert sorted(r["name"] for r in claimed.records) == ["A", "B"]
    assert len(_endpoint_keys(lab)) == 6  # adopted, not claimed a second time
    _records.release(store, mods[2].Layout("overlay"), claimed.records, claimed.indexes)
    assert _endpoint_keys(lab) == []


def test_a_lost_answer_that_did_not_commit_is_retried(lab, mods):
    _consul = mods[0]
    store = _store(lab, mods)
    network, index = _network(mods, store)
    real = store.commit
    calls = []

    def commit(ops):
        calls.append(1)
        if len(calls) == 1:
            raise _consul.ConsulOutcomeUnknown("no answer", ops)  # lost before Consul saw it
        return real(ops)

    store.commit = commit
    claimed = _claim(mods, store, network, index, ["A"])
    store.commit = real
    assert [r["name"] for r in claimed.records] == ["A"] and len(_endpoint_keys(lab)) == 3


def test_the_loser_of_a_same_name_create_gets_the_winners_record_and_refuses_a_difference(lab, mods):
    _keys, _network_mod, _records = mods[2], mods[3], mods[4]
    store = _store(lab, mods)
    layout = _keys.Layout("overlay")
    winner, _index = _network(mods, store, "twin", "10.81.0.0/24")
    real = _records.read_network
    calls = []

    def stale_read(store_, layout_, name):  # our read happened before the winner's write
        calls.append(1)
        return (None, 0) if len(calls) == 1 else real(store_, layout_, name)

    _records.read_network = stale_read
    try:
        mine = _keys.network_record("twin", ipaddress.ip_network("10.82.0.0/24"), "10.82.0.1", None, 1450, 4789,
                                    False, "h2")
        record, _index, created = _records.create_network(store, layout, mine)
    finally:
        _records.read_network = real
    assert not created and record["id"] == winner["id"] and len(calls) >= 2
    req = _network_mod.Request({"name": "twin", "state": "present", "subnet": "10.82.0.0/24"})
    with pytest.raises(Exception, match="subnet: network twin already exists with subnet 10.81.0.0/24"):
        _network_mod.refuse_differences(record, req)


def _remove_as(args):
    port, network, index, host = args
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys, _network
    store = _consul.Consul({"host": "127.0.0.1", "port": port, "scheme": "http", "token": None, "ca_cert": None,
                            "verify": True, "timeout": 10, "prefix": "overlay"})
    try:
        remaining, deleted = _network._remove_record(store, _keys.Layout("overlay"), network, index, host)
    except Exception as e:  # pylint: disable=broad-except  # the failure is the finding: report it
        return "error: %s" % e
    return "deleted" if deleted else "gone" if not remaining else "kept"


def test_hosts_removing_one_network_at_once_all_succeed(lab, mods):
    # A play's state: absent runs on every host at the same moment: every host read the record at
    # the same index. One removal wins the mark; the others see it marked, wait, and find it gone.
    store = _store(lab, mods)
    network, index = _network(mods, store)
    port = lab._consul_forwarder().address[1]
    with multiprocessing.get_context("fork").Pool(8) as pool:
        outcomes = pool.map(_remove_as, [(port, network, index, "h%d" % n) for n in range(8)])
    assert sorted(outcomes) == ["deleted"] + ["gone"] * 7, outcomes
    assert kv(lab) == {}


def test_a_removal_left_half_done_by_a_dead_host_is_taken_over(lab, mods):
    _keys, _network_mod, _records = mods[2], mods[3], mods[4]
    store = _store(lab, mods)
    layout = _keys.Layout("overlay")
    network, index = _network(mods, store)
    marked, marked_index = _records.mark_removing(store, layout, network, index, "dead")
    stale = dict(marked, removing={"host": "dead", "at": "2020-01-01T00:00:00Z"})
    store.commit([mods[0].op_cas(layout.network("n1"), stale, marked_index)])
    # This run read the record before the dead host marked it: its check-and-set loses, it reads
    # again, sees a mark nobody will finish, and finishes the removal itself.
    assert _network_mod._remove_record(store, layout, network, index, "h2") == ([], True)
    assert kv(lab) == {}


def test_a_removal_racing_an_attach_keeps_the_network_for_its_endpoint(lab, mods):
    _keys, _network_mod, _records = mods[2], mods[3], mods[4]
    store = _store(lab, mods)
    layout = _keys.Layout("overlay")
    network, index = _network(mods, store)
    port = lab._consul_forwarder().address[1]
    _claim(mods, store, network, index, ["A"])
    # Two hosts remove with the stale read (no endpoints seen); the endpoint that committed keeps it.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        outcomes = pool.map(_remove_as, [(port, network, index, "h%d" % n) for n in range(2)])
    assert outcomes == ["kept", "kept"], outcomes
    record = kv(lab)["overlay/v1/networks/n1"]
    assert "removing" not in record
    assert len(_endpoint_keys(lab)) == 3


def test_a_runtime_user_registering_before_the_last_users_mark_keeps_the_network(lab, mods):
    _keys, _network_mod, _records = mods[2], mods[3], mods[4]
    store = _store(lab, mods)
    layout = _keys.Layout("overlay")
    network, index = _network(mods, store)
    # The last user (h1) read "no other user"; meanwhile h2's docker network create registered.
    _records.add_user(store, layout, network, index, "h2", "b" * 64, "docker")
    remaining, deleted = _network_mod._remove_record(store, layout, network, index, "h1", users_keep=True)
    assert not deleted and [e.key for e in remaining] == [layout.user(network["id"], "h2", "b" * 64)]
    assert "removing" not in kv(lab)["overlay/v1/networks/n1"]


def test_a_runtime_user_registering_after_the_mark_is_refused_and_the_inventory_removal_takes_users(lab, mods):
    _keys, _network_mod, _records = mods[2], mods[3], mods[4]
    store = _store(lab, mods)
    layout = _keys.Layout("overlay")
    network, index = _network(mods, store)
    _records.mark_removing(store, layout, network, index, "h1")
    with pytest.raises(_records.RemovalConflict):  # the agent waits for the removal and creates anew
        _records.add_user(store, layout, network, index, "h2", "b" * 64, "docker")
    assert not [k for k in kv(lab) if k.startswith("overlay/v1/users/")]

    # overlay_network state=absent (no users_keep) removes a network that runtime users still list.
    other, other_index = _network(mods, store, name="n2", subnet="10.81.0.0/24")
    _records.add_user(store, layout, other, other_index, "h2", "c" * 64, "docker")
    assert _network_mod._remove_record(store, layout, other, other_index, "h1") == ([], True)
    assert not [k for k in kv(lab) if "/n2" in k or other["id"] in k]


def _marks(lab, network):
    """{shard: ModifyIndex} of a network's change marks."""
    _index, items = lab.consul_client().kv.get("overlay/v1/changes/%s/" % network["id"], recurse=True)
    return {i["Key"].rsplit("/", 1)[1]: i["ModifyIndex"] for i in items or ()}


def _record_indexes(lab, network):
    _index, items = lab.consul_client().kv.get("overlay/v1/endpoints/%s/" % network["id"], recurse=True)
    return {i["Key"].rsplit("/", 1)[1]: i["ModifyIndex"] for i in items or ()}


def test_every_record_write_moves_its_change_mark_and_the_removal_takes_the_marks(lab, mods, monkeypatch):
    # What the agents' change passes count on: a write of an endpoint record (create, change, even
    # to the same value, delete) commits its shard's mark at the same index; the marks of a removed
    # network go with it, and the garbage collection takes those a late write left.
    _consul, _keys, _network_mod, _records = mods[0], mods[2], mods[3], mods[4]
    store = _store(lab, mods)
    layout = _keys.Layout("overlay")
    network, index = _network(mods, store)
    names = ["E%d" % i for i in range(30)]
    claimed = _claim(mods, store, network, index, names)  # three transactions of at most 12 endpoints
    records, marks = _record_indexes(lab, network), _marks(lab, network)
    assert sorted(records) == sorted(names)
    by_shard = {}
    for name, modify_index in records.items():
        by_shard.setdefault(_keys.shard(name), []).append(modify_index)
    assert marks == {shard: max(indexes) for shard, indexes in by_shard.items()}

    # The same value written again (a checked write that changes nothing): Consul leaves the record's
    # index where it was, and the mark (a new value each time) moves all the same.
    entry = _records.Entry(layout.endpoint(network["id"], "E3"), kv(lab)[layout.endpoint(network["id"], "E3")],
                           records["E3"])
    assert _records.update_endpoint(store, layout, entry, entry.value) == records["E3"]
    assert _marks(lab, network)[_keys.shard("E3")] > max(records.values())

    # A delete moves it too; the records of other shards keep their marks.
    gone = [r for r in claimed.records if r["name"] in ("E5", "E6")]
    before = _marks(lab, network)
    _records.release(store, layout, gone)
    after = _marks(lab, network)
    moved = {s for s in after if after[s] != before[s]}
    assert moved == {_keys.shard("E5"), _keys.shard("E6")}

    # The removal deletes the marks last, after the records' chunks set them.
    _records.release(store, layout, [r for r in claimed.records if r["name"] not in ("E5", "E6")])
    assert _network_mod._remove_record(store, layout, network, index, "h1") == ([], True)
    assert _marks(lab, network) == {} and list(kv(lab, marks=True)) == []

    # A late writer's mark under a network that is gone: the garbage collection releases it (delete-cas),
    # and leaves a live network's marks alone.
    from ansible_collections.overlay.vxlan.plugins.module_utils import _gc
    live, live_index = _network(mods, store, name="n2", subnet="10.81.0.0/24")
    _claim(mods, store, live, live_index, ["L1"])
    store.commit([_consul.op_set(layout.change_mark(network["id"], "E1"), {})])

    class Elsewhere:  # the collection runs as another host: L1 is not its to judge, no kernel is read
        host, vtep = "h9", "10.1.0.9"

    monkeypatch.setattr(_gc, "_stray_ports", lambda *args: [])  # not in this test's namespace
    found = _gc.collect(None, store, layout, Elsewhere(), layout.prefix, grace=0)
    assert [(f["kind"], f["key"], f["action"]) for f in found] == [
        ("mark", layout.change_mark(network["id"], "E1"), "release")]
    assert list(_marks(lab, network)) == [] and list(_marks(lab, live)) == [_keys.shard("L1")]


def test_change_passes_racing_writers_end_where_a_full_read_does(lab, mods):
    # The peers service's change passes (agent/peers.py State.read, full=False) back to back while
    # three writers race on one network through the store protocol: batch attaches, detaches, moves
    # to another VTEP (a record changed in place), and detach-then-attach under the same name on
    # another host (deleted and created again). Once the writers stop, one more change pass must hold
    # exactly what a full read of the store finds.
    import random
    import threading
    from ansible_collections.overlay.vxlan.agent import peers
    _consul, _endpoint, _keys, _records = mods[0], mods[1], mods[2], mods[4]
    layout = _keys.Layout("overlay")
    network, index = _network(mods, _store(lab, mods), subnet="10.82.0.0/22")
    once = peers.Once(lambda text: None)
    reader = peers.State()
    reader.read(_store(lab, mods), layout, once, full=True)
    stop, passes, failures = threading.Event(), [0], []

    def read_loop():
        store = _store(lab, mods)
        while not stop.is_set():
            reader.read(store, layout, once, full=False)
            passes[0] += 1

    def on(host):
        class Underlay:
            pass
        Underlay.host, Underlay.vtep = host, "10.1.0.%d" % (10 + int(host[1:]))
        return Underlay()

    def writer(w):
        rnd, store, mine = random.Random(w), _store(lab, mods), {}
        for step in range(40):
            try:
                if len(mine) < 4 or rnd.random() < 0.35:
                    names = ["w%d-%d-%d" % (w, step, i) for i in range(rnd.randint(1, 3))]
                    items = [_endpoint.Item({"name": n, "namespace": "ns"}, "", {"ifname": "eth0", "gateway_ifname": "eth1"})
                             for n in names]
                    claimed = _records.claim_endpoints(store, layout, network, index, "h%d" % w,
                                                       _endpoint.new_records_builder(network, None, on("h%d" % w), items),
                                                       len(items), "addresses")
                    mine.update({r["name"]: r for r in claimed.records})
                    continue
                name = rnd.choice(sorted(mine))
                key = layout.endpoint(network["id"], name)
                value, modify_index = store.get(key)
                choice = rnd.random()
                if choice < 0.4:  # moved to another VTEP in place
                    _records.update_endpoint(store, layout, _records.Entry(key, value, modify_index),
                                             dict(value, vtep="10.1.1.%d" % rnd.randint(1, 200)))
                elif choice < 0.7:  # detached
                    _records.release(store, layout, [value])
                    del mine[name]
                else:  # detached, and attached again under the same name by another host
                    _records.release(store, layout, [value])
                    host = "h%d" % rnd.randint(4, 9)
                    items = [_endpoint.Item({"name": name, "namespace": "ns"}, "", {"ifname": "eth0", "gateway_ifname": "eth1"})]
                    claimed = _records.claim_endpoints(store, layout, network, index, host,
                                                       _endpoint.new_records_builder(network, None, on(host), items),
                                                       1, "addresses")
                    mine[name] = claimed.records[0]
            except Exception as e:  # a writer's own failure is not the subject: it is reported below
                failures.append("writer %d step %d: %s" % (w, step, e))

    reading = threading.Thread(target=read_loop)
    reading.start()
    writers = [threading.Thread(target=writer, args=(w,)) for w in (1, 2, 3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reading.join()
    assert not failures, failures
    reader.read(_store(lab, mods), layout, once, full=False)
    full = peers.State()
    full.read(_store(lab, mods), layout, once, full=True)
    assert passes[0] >= 20, "the reader hardly ran: %d passes" % passes[0]
    assert full.endpoints.get(network["id"]), "the writers left nothing to compare"
    assert reader.endpoints == full.endpoints
    assert reader.vteps == full.vteps
    for mark in full.parts["changes/"]:
        assert mark.startswith(layout.changes(network["id"]))
