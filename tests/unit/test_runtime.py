"""The container runtimes' API client (plugins/module_utils/_runtime.py) against a fake Docker API on
a unix socket: overlay_endpoint's ``container`` option, its errors naming the field, and the agent's
use of the same client."""
from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import threading

import pytest

from ansible_collections.overlay.vxlan.agent import docker
from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint, _runtime
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError


def running(name, pid=None, sandbox_key=None):
    return {"Id": "c0ffee" * 10 + "abcd", "Name": "/" + name,
            "State": {"Status": "running", "Running": True, "Pid": pid or os.getpid()},
            "NetworkSettings": {"SandboxKey": sandbox_key or ""}}


class FakeAPI:
    """GET path -> (status, JSON body) on a unix socket; records the paths asked for."""

    def __init__(self, path, routes):
        self.path, self.routes, self.asked = path, routes, []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                api.asked.append(self.path)
                status, body = api.routes.get(self.path, (404, {"message": "No such container: x"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def address_string(self):
                return "test"

            def log_message(self, fmt, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(tmp_path):
    made = []

    def make(routes, name="docker.sock"):
        fake = FakeAPI(str(tmp_path / name), routes)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


def error(call):
    with pytest.raises(OverlayError) as e:
        call()
    return e.value


def test_a_running_container_is_its_pid_and_sandbox(api):
    fake = api({"/containers/C0/json": (200, running("C0", pid=4242, sandbox_key="/var/run/docker/netns/0c1d"))})
    info = _runtime.inspect("C0", "docker", "unix://" + fake.path)
    assert info == {"runtime": "docker", "name": "C0", "id": "c0ffee" * 10 + "abcd", "pid": 4242,
                    "sandbox_key": "/var/run/docker/netns/0c1d", "socket": fake.path}
    assert _runtime.inspect("/C0", "podman", fake.path)["runtime"] == "podman"  # Docker's own "/C0" spelling
    assert fake.asked == ["/containers/C0/json"] * 2


def test_unknown_and_stopped_containers_name_the_field(api):
    stopped = running("S0")
    stopped["State"] = {"Status": "exited", "Running": False, "Pid": 0}
    fake = api({"/containers/S0/json": (200, stopped),
                "/containers/B0/json": (500, {"message": "boom"})})
    e = error(lambda: _runtime.inspect("nope", "docker", fake.path))
    assert e.field == "container" and "docker has no container named nope" in e.message
    e = error(lambda: _runtime.inspect("S0", "podman", fake.path, field="endpoints[2].container"))
    assert e.field == "endpoints[2].container" and "container S0 is not running (podman exited)" in e.message
    e = error(lambda: _runtime.inspect("B0", "docker", fake.path))
    assert e.field == "container" and "answered 500" in e.message and "boom" in e.message
    for bad in ("", "a/b", "../x", "C0?all=1", "-x", "x" * 300, 12):
        e = error(lambda bad=bad: _runtime.inspect(bad, "docker", fake.path))
        assert e.field == "container" and "is not a container name or id" in e.message, bad
    assert fake.asked == ["/containers/nope/json", "/containers/S0/json", "/containers/B0/json"]
    e = error(lambda: _runtime.inspect("C0", "lxc", fake.path))
    assert e.field == "container_runtime" and "'lxc' is not one of docker, podman" in e.message


def test_socket_problems_name_the_socket_field(tmp_path, monkeypatch):
    missing = str(tmp_path / "none.sock")
    e = error(lambda: _runtime.inspect("C0", "docker", missing, socket_field="endpoints[0].container_socket"))
    assert e.field == "endpoints[0].container_socket" and "%s does not exist: is dockerd" % missing in e.message
    monkeypatch.setitem(_runtime.DEFAULT_SOCKETS, "podman", missing)
    e = error(lambda: _runtime.inspect("C0", "podman", None))
    assert e.field == "container_socket" and "podman's default socket %s does not exist" % missing in e.message
    assert "podman.socket" in e.message and "set container_socket" in e.message
    plain = tmp_path / "plain"
    plain.write_text("")
    e = error(lambda: _runtime.inspect("C0", "docker", str(plain)))
    assert e.field == "container_socket" and "is not a unix socket" in e.message
    e = error(lambda: _runtime.inspect("C0", "docker", "run/docker.sock"))
    assert e.field == "container_socket" and "not an absolute path" in e.message
    # A socket nobody listens on (a daemon that died and left it): refused.
    dead = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(dead)
    s.close()
    e = error(lambda: _runtime.inspect("C0", "docker", dead))
    assert e.field == "container_socket" and "nothing listens on %s" % dead in e.message


def test_permission_and_silence_name_the_socket_field(api, tmp_path, monkeypatch):
    # A listener that never answers: the timeout, not a hang.
    quiet = str(tmp_path / "quiet.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(quiet)
    s.listen(1)
    try:
        e = error(lambda: _runtime.inspect("C0", "docker", quiet, timeout=0.2))
        assert e.field == "container_socket" and "did not answer" in e.message
    finally:
        s.close()
    fake = api({})

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_runtime.UnixHTTPConnection, "connect", denied)  # root passes any mode: pretend
    e = error(lambda: _runtime.inspect("C0", "docker", fake.path))
    assert e.field == "container_socket" and "permission denied on %s" % fake.path in e.message


def test_get_json_is_best_effort_and_the_agent_uses_it(api, tmp_path):
    fake = api({"/networks/n1": (200, {"Name": "demonet"}), "/ping": (200, None)})
    assert _runtime.get_json("unix://" + fake.path, "/networks/n1") == {"Name": "demonet"}
    assert _runtime.get_json(fake.path, "/networks/n2") is None
    assert _runtime.get_json(fake.path, "/ping") is None
    assert _runtime.get_json(str(tmp_path / "missing.sock"), "/networks/n1") is None
    assert docker.docker_network_name("unix://" + fake.path, "n1", timeout=1) == "demonet"
    assert not hasattr(docker, "_docker_get") and not hasattr(docker, "_UnixHTTPConnection")


def params(**kw):
    return dict({"network": "demonet", "state": "present", "ifname": "eth0", "gateway_ifname": "eth1"}, **kw)


def test_items_take_their_namespace_from_the_runtime(api, tmp_path):
    # This process plays the container: its PID's namespace exists, and is its "sandbox" too.
    docker_api = api({"/containers/C0/json": (200, running("C0", sandbox_key="/proc/self/ns/net"))})
    podman_api = api({"/containers/P0/json": (200, running("P0"))}, name="podman.sock")
    items = _endpoint.items_from(params(container_socket=docker_api.path, endpoints=[
        {"name": "a", "container": "C0"},
        {"name": "b", "container": "P0", "container_runtime": "podman", "container_socket": podman_api.path},
        {"name": "c", "namespace": "c0"}]))
    a, b, c = items
    assert a.ns.spec == a.ns.path == "/proc/%d/ns/net" % os.getpid() and a.ns_field == "endpoints[0].container"
    assert a.ns.describe() == "the namespace of docker container C0 (/proc/%d/ns/net)" % os.getpid()
    assert (a.container["runtime"], a.container["name"]) == ("docker", "C0")
    assert (b.container["runtime"], b.container["socket"]) == ("podman", podman_api.path)
    assert c.container is None and c.ns_field == "endpoints[2].namespace"
    result = _endpoint.with_container({"name": "a"}, a)
    assert result["container"] == {"runtime": "docker", "name": "C0", "id": "c0ffee" * 10 + "abcd",
                                   "pid": os.getpid(), "sandbox_key": "/proc/self/ns/net"}
    single = _endpoint.items_from(params(name="a", container="C0", container_socket=docker_api.path))[0]
    assert single.ns_field == "container" and single.container["name"] == "C0"


def test_item_errors_name_the_option_that_was_given(api, tmp_path):
    fake = api({"/containers/C0/json": (200, running("C0", pid=2 ** 22 + 7))})
    e = error(lambda: _endpoint.items_from(params(container_socket=fake.path, endpoints=[
        {"name": "a", "container": "C0"}, {"name": "b", "container": "X9"}])))
    # PID 4194311 is above Linux's pid_max: no such process here.
    assert e.field == "endpoints[0].container" and "docker container C0 runs as PID 4194311" in e.message
    e = error(lambda: _endpoint.items_from(params(container_socket=fake.path, endpoints=[
        {"name": "b", "container": "X9"}])))
    assert e.field == "endpoints[0].container" and "no container named X9" in e.message
    e = error(lambda: _endpoint.items_from(params(endpoints=[
        {"name": "b", "container": "X9", "container_socket": str(tmp_path / "gone.sock")}])))
    assert e.field == "endpoints[0].container_socket"
    e = error(lambda: _endpoint.items_from(params(container_socket=str(tmp_path / "gone.sock"),
                                                  endpoints=[{"name": "b", "container": "X9"}])))
    assert e.field == "container_socket"  # the task's socket, not the item's
    item = {"name": "b", "container": "X9", "container_runtime": "rkt"}
    e = error(lambda: _endpoint.items_from(params(endpoints=[item])))
    assert e.field == "endpoints[0].container_runtime"
    e = error(lambda: _endpoint.items_from(params(name="a", container="C0", namespace="c0")))
    assert e.field == "container" and "either namespace or container" in e.message
    e = error(lambda: _endpoint.items_from(params(container="C0", endpoints=[{"name": "a", "namespace": "a"}])))
    assert e.field == "container" and "give each item of endpoints its own container" in e.message
    e = error(lambda: _endpoint.items_from(params(endpoints=[{"name": "a", "container": "C0 "}])))
    assert e.field == "endpoints[0].container" and "whitespace" in e.message


def test_a_detach_never_asks_the_runtime(tmp_path):
    # state absent: the container may be gone, and so may its runtime; the endpoint goes by name.
    items = _endpoint.items_from(params(state="absent", container_socket=str(tmp_path / "gone.sock"),
                                        endpoints=[{"name": "a", "container": "C0"}]))
    assert items[0].container is None and items[0].ns is None
