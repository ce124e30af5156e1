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
