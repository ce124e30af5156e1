from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.overlay.vxlan.plugins.module_utils import _allocate, _consul, _keys
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError


def test_free_vni_starts_at_256_and_skips_taken():
    assert _allocate.free_vni(set()) == 256
    assert _allocate.free_vni({256, 257, 259}) == 258


def test_free_vni_exhausted():
    with pytest.raises(OverlayError, match="no free VNI"):
        _allocate.free_vni({5, 6}, first=5, last=6)


def test_free_addresses_lowest_first_and_reserved_skipped():
    got = _allocate.free_addresses("192.168.0.0/29", {"192.168.0.1", "192.168.0.3"}, 3)
    assert [str(i) for i in got] == ["192.168.0.2", "192.168.0.4", "192.168.0.5"]


def test_free_addresses_random_choice_stays_free_and_distinct():
    reserved = {"10.0.0.%d" % i for i in range(1, 200)}
    got = _allocate.free_addresses("10.0.0.0/24", reserved, 20, randomize=True)
    assert len(set(got)) == 20
    assert not {str(i) for i in got} & reserved
    assert all(ipaddress.ip_address("10.0.0.200") <= i <= ipaddress.ip_address("10.0.0.254") for i in got)


def test_free_addresses_exhausted_names_the_field():
    with pytest.raises(OverlayError) as e:
        _allocate.free_addresses("10.0.0.0/30", {"10.0.0.1"}, 2)
    assert e.value.field == "ip"
    assert "1 free addresses; 2 are needed" in e.value.reason


def test_zero_addresses_needs_nothing():
    assert _allocate.free_addresses("10.0.0.0/30", {"10.0.0.1", "10.0.0.2"}, 0) == []


class FakeStore:
    """Only the transaction outcome matters here: a real Consul is used by the integration tests."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def commit(self, ops):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise _consul.TxnConflict("conflict", [(0, "failed index check")])
        return {"k": 7}


def test_claim_retries_lost_races_with_fresh_state():
    store = FakeStore(failures=2)
    reads = []

    def read():
        reads.append(len(reads))
        return len(reads)

    def build(state, attempt):
        return [{"KV": {}}], (state, attempt)

    assert _allocate.claim(store, read, build, "x") == ((3, 2), {"k": 7})
    assert store.calls == 3


def test_claim_gives_up_with_clear_error(monkeypatch):
    monkeypatch.setattr(_allocate, "ATTEMPTS", 3)
    monkeypatch.setattr(_allocate.time, "sleep", lambda s: None)
    with pytest.raises(OverlayError, match="gave up claiming addresses after 3 attempts"):
        _allocate.claim(FakeStore(failures=10), lambda: None, lambda s, a: ([{"KV": {}}], None), "addresses")


def test_mac_follows_docker_rule():
    assert _keys.mac_for("192.168.0.100") == "02:42:c0:a8:00:64"
    assert _keys.mac_for("172.18.0.2") == "02:42:ac:12:00:02"


def test_layout_keys():
    layout = _keys.Layout("/overlay/")
    assert layout.network("demonet") == "overlay/v1/networks/demonet"
    assert layout.vni(256) == "overlay/v1/vnis/256"
    assert layout.ip_claim("ab", "192.168.0.2") == "overlay/v1/ipam/ab/192.168.0.2"
    assert layout.endpoint("ab", "C0") == "overlay/v1/endpoints/ab/C0"
    assert layout.mac_claim("ab", "02:42:0a:00:00:02") == "overlay/v1/macs/ab/02:42:0a:00:00:02"
    assert layout.gateway_claim("docker0", "172.18.0.2") == "overlay/v1/gateway-ipam/docker0/172.18.0.2"
    assert _keys.Layout.last("overlay/v1/vnis/257") == "257"


def test_ids_are_64_hex_and_namespace_derives_from_id():
    rec = _keys.network_record("n", ipaddress.ip_network("10.0.0.0/24"), "10.0.0.1", 256, 1450, 4789, False, "h")
    assert len(rec["id"]) == 64 and int(rec["id"], 16) >= 0
    assert _keys.overlay_namespace(rec) == "ovl-" + rec["id"][:12]


def test_a_writer_that_lost_a_race_takes_the_next_lowest_before_spreading_out():
    assert [_allocate.spread(a) for a in range(5)] == [False, False, False, True, True]


def test_free_addresses_walk_lazily_on_a_huge_subnet():
    # A /8 has 16 million addresses: picking a few, randomly or not, must not list them all.
    import tracemalloc
    tracemalloc.start()
    picked = _allocate.free_addresses("10.0.0.0/8", {"10.0.0.1"}, 20, randomize=True)
    _size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(set(picked)) == 20 and all(str(ip) != "10.0.0.1" for ip in picked)
    assert peak < 5_000_000
    assert [str(ip) for ip in _allocate.free_addresses("10.0.0.0/8", {"10.0.0.1"}, 2)] == ["10.0.0.2", "10.0.0.3"]


def test_exhausted_pool_names_the_field():
    with pytest.raises(OverlayError, match="gateway_subnet: subnet 10.0.0.0/30 has 0 free addresses"):
        _allocate.free_addresses("10.0.0.0/30", {"10.0.0.1", "10.0.0.2"}, 1, field="gateway_subnet")
