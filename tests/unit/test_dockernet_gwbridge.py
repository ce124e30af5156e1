"""_dockernet.ensure_gwbridge: when overlay_gateway makes, keeps, replaces or leaves Docker's own
docker_gwbridge network, against a fake Docker that records what it was asked."""
from __future__ import annotations

import pytest

from ansible_collections.overlay.vxlan.plugins.module_utils import _dockernet
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

OURS = {"com.docker.network.bridge.name": "docker_gwbridge", "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "true"}


def network(subnet, gateway, options=None, containers=()):
    options = OURS if options is None else options
    return {"Id": "n" * 64, "Name": "docker_gwbridge", "Driver": "bridge",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet, "Gateway": gateway}]},
            "Options": dict(options), "Containers": {c: {"Name": "gateway_" + c[:12]} for c in containers}}


class FakeDocker(_dockernet.Docker):
    def __init__(self, net, refuse_delete=False):   # no socket
        self.net, self.calls, self.refuse_delete = net, [], refuse_delete

    def call(self, method, path, body=None, timeout=None):
        self.calls.append((method, path))
        if method == "GET" and path == "/networks/docker_gwbridge":
            return (200, self.net) if self.net else (404, {"message": "not found"})
        if method == "GET" and path.startswith("/containers/"):
            return 200, {"Name": "/web-" + path.split("/")[2][:4]}
        if method == "DELETE":
            if self.refuse_delete:
                return 403, {"message": "error while removing network: network has active endpoints"}
            self.net = None
            return 204, None
        if method == "POST" and path == "/networks/create":
            cfg = body["IPAM"]["Config"][0]
            self.net = network(cfg["Subnet"], cfg["Gateway"], body["Options"])
            return 201, {"Id": "n" * 64}
        raise AssertionError((method, path))


def writes(d):
    return [c for c in d.calls if c[0] != "GET"]


def ensure(d, apply=True, ports=()):
    return _dockernet.ensure_gwbridge(d, d.gwbridge(), "docker_gwbridge", "172.18.0.0/16", "172.18.0.1", apply,
                                      ports=lambda: list(ports))


def test_missing_is_made_with_the_bridges_subnet_and_dockers_options():
    d = FakeDocker(None)
    actions, warnings, before, after = ensure(d, apply=False)
    assert actions and before is None and after["subnet"] == "172.18.0.0/16" and not writes(d)
    actions, warnings, before, after = ensure(d)
    assert writes(d) == [("POST", "/networks/create")] and not warnings
    assert after["subnet"] == "172.18.0.0/16" and after["gateway"] == "172.18.0.1"
    assert d.net["Options"] == OURS
    assert ensure(d)[0] == [] and writes(d) == [("POST", "/networks/create")]   # and then nothing


def test_dockers_own_unused_one_is_replaced_and_in_use_left_alone_with_a_warning():
    for in_use in ({"containers": ["c" * 64]}, {"ports": ["ve-abc"]}):
        d = FakeDocker(network("172.19.0.0/16", "172.19.0.1", containers=in_use.get("containers", ())))
        actions, warnings, before, after = ensure(d, ports=in_use.get("ports", ()))
        assert actions == [] and not writes(d) and before == after and after["subnet"] == "172.19.0.0/16"
        [w] = warnings
        assert "left alone" in w and ("web-cccc" in w if "containers" in in_use else "ve-abc" in w), w
    d = FakeDocker(network("172.19.0.0/16", "172.19.0.1"))
    actions, warnings, before, after = ensure(d, apply=False)
    assert actions[0].startswith("docker: replace network docker_gwbridge") and not writes(d)
    actions, warnings, before, after = ensure(d)
    assert writes(d) == [("DELETE", "/networks/" + "n" * 64), ("POST", "/networks/create")]
    assert before["subnet"] == "172.19.0.0/16" and after["subnet"] == "172.18.0.0/16" and not warnings


def test_a_container_joining_meanwhile_turns_the_replacement_into_a_warning():
    d = FakeDocker(network("172.19.0.0/16", "172.19.0.1"), refuse_delete=True)
    actions, warnings, before, after = ensure(d)
    assert actions == [] and "active endpoints" in warnings[0] and after["subnet"] == "172.19.0.0/16"


def test_one_on_another_device_is_not_this_bridges_business():
    d = FakeDocker(network("10.99.0.0/16", "10.99.0.1", dict(OURS, **{"com.docker.network.bridge.name": "gw2"})))
    assert ensure(d) == ([], [], ensure(d)[2], ensure(d)[2]) and not writes(d)


def test_docker_refusing_the_create_names_the_option():
    d = FakeDocker(None)

    def call(method, path, body=None, timeout=None):
        return (404, {"message": "no"}) if method == "GET" else (400, {"message": "invalid pool request"})
    d.call = call
    with pytest.raises(OverlayError) as e:
        ensure(d)
    assert e.value.field == "docker" and "invalid pool request" in e.value.reason
