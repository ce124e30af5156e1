"""Endpoint ids and port names: the ports of an endpoint are named after the first 10 characters
of its id (ve-/gw- on the bridges, vh- for a runtime's handoff), so two endpoints of a network
must never share them. Attaching the second would otherwise delete the first one's port as
"not its peer"."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint, _keys
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

NETWORK = {"id": "n" * 64, "name": "demonet", "subnet": "192.168.0.0/24", "gateway": "192.168.0.1"}
UNDERLAY = SimpleNamespace(host="docker1", vtep="10.0.0.11")
DEFAULTS = {"ifname": "eth0", "gateway_ifname": "eth1", "container_runtime": "docker", "container_socket": None}


def item(name, endpoint_id=None, field=""):
    raw = {"name": name}
    if endpoint_id:
        raw["id"] = endpoint_id
    made = _endpoint.Item(raw, field, DEFAULTS)
    made.ns = SimpleNamespace(spec="/run/netns/" + name)
    return made


def existing(name, endpoint_id):
    return {name: SimpleNamespace(value={"name": name, "id": endpoint_id})}


def test_a_runtime_id_sharing_another_endpoints_port_names_is_refused_naming_the_endpoint():
    other = "abcdef0123" + "1" * 54
    build = _endpoint.new_records_builder(NETWORK, None, UNDERLAY, [item("c2", "abcdef0123" + "2" * 54,
                                                                         "endpoints[3].")])
    with pytest.raises(OverlayError) as e:
        build((existing("c1", other), {}, {}, set()), 0, 1, 0)
    assert e.value.field == "endpoints[3].name" and "c1" in e.value.reason and "demonet" in e.value.reason
    # Two of one batch are refused the same way; distinct ones pass.
    build = _endpoint.new_records_builder(NETWORK, None, UNDERLAY, [item("c2", "abcdef0123" + "2" * 54),
                                                                    item("c3", "abcdef0123" + "3" * 54)])
    with pytest.raises(OverlayError):
        build(({}, {}, {}, set()), 0, 2, 0)
    build = _endpoint.new_records_builder(NETWORK, None, UNDERLAY, [item("c2", "abcdef0124" + "2" * 54)])
    assert build((existing("c1", other), {}, {}, set()), 0, 1, 0)[0]["id"].startswith("abcdef0124")


def test_a_generated_id_that_collides_is_drawn_again(monkeypatch):
    taken = "feedbeef00" + "1" * 54
    drawn = iter([taken, taken, "0123456789" + "a" * 54])
    monkeypatch.setattr(_keys, "new_id", lambda: next(drawn))
    build = _endpoint.new_records_builder(NETWORK, None, UNDERLAY, [item("c2")])
    record = build((existing("c1", taken), {}, {}, set()), 0, 1, 0)[0]
    assert record["id"] == "0123456789" + "a" * 54
