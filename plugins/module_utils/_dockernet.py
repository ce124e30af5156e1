# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""This host's Docker view of an overlay network (overlay_network's ``docker: true``): Docker's
network of the same name whose network and IPAM driver is the host agent's plugin
``overlay.vxlan`` (docs/docker.md), so ``docker run --net NAME`` attaches containers on every host
that declares it. Through Docker's Engine API on its unix socket (_runtime), never the CLI.

Docker calls the plugin while it creates or removes a network, and the plugin takes the host lock
(_hostlock): nothing here may run while the caller holds it."""
from __future__ import annotations

import os
from urllib.parse import quote

from ansible_collections.overlay.vxlan.plugins.module_utils import _runtime
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

DRIVER = "overlay.vxlan"
SOCKET_FIELD = "docker_socket"
# Where dockerd looks for a legacy plugin named overlay.vxlan (pkg/plugins/discovery.go): the
# agent's socket, or a spec file pointing elsewhere.
PLUGIN_PATHS = ("/run/docker/plugins/overlay.vxlan.sock",) + tuple(
    "%s/overlay.vxlan.%s" % (d, ext) for d in ("/etc/docker/plugins", "/usr/lib/docker/plugins") for ext in ("spec", "json"))
# dockerd calls the plugin (RequestPool, RequestAddress, CreateNetwork) before it answers a create;
# a missing plugin costs it 1+2+4+8 s of retries.
CREATE_TIMEOUT = 60


def view(info):
    """The fields of Docker's network that matter here (and are returned and diffed)."""
    ipam = info.get("IPAM") if isinstance(info.get("IPAM"), dict) else {}
    configs = ipam.get("Config") if isinstance(ipam.get("Config"), list) else []
    first = configs[0] if configs and isinstance(configs[0], dict) else {}
    containers = info.get("Containers") if isinstance(info.get("Containers"), dict) else {}
    return {"id": info.get("Id"), "name": info.get("Name"), "driver": info.get("Driver"),
            "ipam_driver": ipam.get("Driver"), "subnet": first.get("Subnet"), "gateway": first.get("Gateway") or None,
            "internal": bool(info.get("Internal")),
            "overlay_network": (info.get("Options") or {}).get("name") if isinstance(info.get("Options"), dict) else None,
            "containers": {cid: (c or {}).get("Name") or cid[:12] for cid, c in containers.items()}}


def shown(have):
    """``have`` as returned and diffed: the containers by name."""
    if have is None:
        return None
    return dict(have, containers=sorted(have["containers"].values()))


def wanted(name, subnet, gateway, internal):
    """The Docker network this module creates for an overlay network."""
    return {"id": None, "name": name, "driver": DRIVER, "ipam_driver": DRIVER, "subnet": str(subnet),
            "gateway": str(gateway) if gateway else None, "internal": bool(internal), "overlay_network": name,
            "containers": {}}


def conflict(have, name, subnet, gateway):
    """Why Docker's network ``have`` cannot be the Docker view of overlay network ``name`` (None when it
    can). Never repaired by removing it: it may be somebody else's network, with containers."""
    if have["driver"] != DRIVER:
        return ("Docker on this host already has a network %s with driver %s, not %s: it is another network; "
                "rename one of them" % (name, have["driver"], DRIVER))
    if have["ipam_driver"] != DRIVER:
        return ("Docker's network %s on this host has IPAM driver %s, not %s: addresses must come from Consul; "
                "remove it (docker network rm %s) and run again" % (name, have["ipam_driver"], DRIVER, name))
    if subnet is not None and have["subnet"] != str(subnet):
        return ("Docker's network %s on this host has subnet %s, not %s: it maps to another overlay network; "
                "remove it (docker network rm %s) and run again" % (name, have["subnet"], subnet, name))
    if have["overlay_network"] not in (None, name):
        return "Docker's network %s on this host maps to overlay network %s" % (name, have["overlay_network"])
    if gateway is not None and have["gateway"] not in (None, str(gateway)):
        return "Docker's network %s on this host has gateway %s, not %s" % (name, have["gateway"], gateway)
    return None


class Docker:
    """Docker's networks on this host, through its API socket (checked when made)."""

    def __init__(self, sock):
        self.path = _runtime.socket_for("docker", sock, SOCKET_FIELD)

    def call(self, method, path, body=None, timeout=_runtime.TIMEOUT):
        return _runtime.api(self.path, method, path, "docker", SOCKET_FIELD, body=body, timeout=timeout)

    def inspect(self, name):
        """Docker's network ``name`` on this host as its API shows it, or None."""
        status, body = self.call("GET", "/networks/%s" % quote(name, safe=""))
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise OverlayError("docker on %s answered %s to the inspection of network %s%s"
                               % (self.path, status, name, _said(body)), "docker")
        # /networks/<x> also matches an id or an id's prefix: only a network of that name counts.
        return body if body.get("Name") == name else None

    def get(self, name):
        """Docker's network ``name`` on this host (view()), or None."""
        body = self.inspect(name)
        return None if body is None else view(body)

    def gwbridge(self):
        """Docker's docker_gwbridge network (gwbridge_view), its containers by name: Docker lists them
        by their gateway endpoint's name (gateway_<sandbox>)."""
        raw = self.inspect(GWBRIDGE)
        have = gwbridge_view(raw)
        if have is not None:
            names = []
            for cid in sorted(raw.get("Containers") or {}):
                status, body = self.call("GET", "/containers/%s/json" % quote(cid, safe=""))
                names.append(str(body.get("Name", "")).lstrip("/") if status == 200 and isinstance(body, dict)
                             else cid[:12])
            have["containers"] = sorted(names)
        return have

    def create(self, name, subnet, gateway, internal):
        """``docker network create -d overlay.vxlan --ipam-driver overlay.vxlan --subnet .. --gateway ..
        -o name=NAME NAME``; returns the network as Docker shows it then."""
        if not any(os.path.exists(p) for p in PLUGIN_PATHS):
            raise OverlayError("Docker cannot reach the plugin %s: %s does not exist. Run the host agent with "
                               "--docker-plugin (overlay_host_docker_plugin: true)" % (DRIVER, PLUGIN_PATHS[0]),
                               "docker")
        body = {"Name": name, "CheckDuplicate": True, "Driver": DRIVER, "Internal": bool(internal),
                "IPAM": {"Driver": DRIVER, "Config": [{"Subnet": str(subnet), "Gateway": str(gateway)}]},
                "Options": {"name": name}}
        status, reply = self.call("POST", "/networks/create", body=body, timeout=CREATE_TIMEOUT)
        if status not in (200, 201, 409):  # 409: created meanwhile (checked below like any existing one)
            raise OverlayError("Docker refused to create network %s: %s" % (name, _said(body=reply) or status),
                               "docker")
        return self.get(name)

    def remove(self, have, force):
        """Remove Docker's network ``have``; its containers are disconnected first with ``force``,
        refused otherwise (naming them). Returns the actions."""
        actions = []
        if have["containers"]:
            if not force:
                raise OverlayError("Docker's network %s on this host still has containers (%s); stop or disconnect "
                                   "them, or set force: true" % (have["name"], ", ".join(sorted(have["containers"].values()))),
                                   "state")
            for cid, cname in sorted(have["containers"].items()):
                status, reply = self.call("POST", "/networks/%s/disconnect" % have["id"],
                                          body={"Container": cid, "Force": True}, timeout=CREATE_TIMEOUT)
                if status not in (200, 404):
                    raise OverlayError("Docker refused to disconnect %s from network %s: %s"
                                       % (cname, have["name"], _said(body=reply) or status), "state")
                actions.append("docker: disconnect %s from network %s" % (cname, have["name"]))
        status, reply = self.call("DELETE", "/networks/%s" % have["id"], timeout=CREATE_TIMEOUT)
        if status not in (200, 204, 404):
            raise OverlayError("Docker refused to remove network %s: %s" % (have["name"], _said(body=reply) or status),
                               "state")
        return actions + ["docker: remove network %s" % have["name"]]


def _said(body):
    text = _runtime.message(body)
    return text if text else ""


def ensure(docker, name, subnet, gateway, internal, apply):
    """Docker's view of overlay network ``name`` on this host: (actions, before, after). A Docker network
    of that name that is not this one's view is refused (conflict()), never replaced."""
    have = docker.get(name)
    if have is not None:
        problem = conflict(have, name, subnet, gateway)
        if problem:
            raise OverlayError(problem, "docker")
        return [], have, have
    actions = ["docker: create network %s (driver and IPAM %s, subnet %s)" % (name, DRIVER, subnet)]
    if not apply:
        return actions, None, wanted(name, subnet, gateway, internal)
    made = docker.create(name, subnet, gateway, internal)
    if made is None:
        raise OverlayError("Docker created network %s but does not show it" % name, "docker")
    problem = conflict(made, name, subnet, gateway)
    if problem:  # another run created a different one meanwhile
        raise OverlayError(problem, "docker")
    return actions, None, made


def leave(docker, name, force, apply):
    """Remove this host's Docker view of overlay network ``name`` (one with another driver is left
    alone: it is not ours). Returns (actions, before)."""
    have = docker.get(name)
    if have is None or have["driver"] != DRIVER:
        return [], None
    if not apply:
        if have["containers"] and not force:
            docker.remove(have, force=False)  # raises, naming the containers
        return (["docker: disconnect %s from network %s" % (c, name) for c in sorted(have["containers"].values())]
                + ["docker: remove network %s" % name]), have
    return docker.remove(have, force), have


# Docker's gateway network. libnetwork gives every container on a network whose driver asks for a
# gateway (ours does, unless internal) a port on the network NAMED docker_gwbridge, and makes it with
# defaults (a free /16 of its own pools, on a bridge device of that name) when it is missing
# (default_gateway_linux.go, createGWNetwork). On the collection's gateway bridge that replaced the
# bridge's address the first time, so the run after it changed something. Made ahead, with the
# gateway bridge's own subnet and Docker's own options, it is what Docker uses, untouched.
GWBRIDGE = "docker_gwbridge"
BRIDGE_NAME = "com.docker.network.bridge.name"
GWBRIDGE_OPTIONS = {"com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "true"}


def gwbridge_view(info):
    """The fields of Docker's docker_gwbridge network that matter here (returned and diffed)."""
    if info is None:
        return None
    have = view(info)
    opts = info.get("Options") if isinstance(info.get("Options"), dict) else {}
    return {"id": have["id"], "name": have["name"], "driver": have["driver"], "subnet": have["subnet"],
            "gateway": have["gateway"], "bridge": opts.get(BRIDGE_NAME),
            "options": {k: opts.get(k) for k in sorted(GWBRIDGE_OPTIONS)},
            "containers": sorted(have["containers"].values())}


def gwbridge_wanted(bridge, subnet, gateway):
    return {"id": None, "name": GWBRIDGE, "driver": "bridge", "subnet": str(subnet), "gateway": str(gateway),
            "bridge": bridge, "options": dict(sorted(GWBRIDGE_OPTIONS.items())), "containers": []}


def ensure_gwbridge(docker, have, bridge, subnet, gateway, apply, ports=lambda: []):
    """Docker's docker_gwbridge network on the gateway bridge ``bridge`` with its ``subnet`` and
    ``gateway``, from ``have`` (docker.gwbridge(), read by the caller): (actions, warnings, before,
    after).

    One Docker made by itself (another subnet) is replaced when nothing uses it: it holds nothing but
    Docker's defaults, and Docker makes it again on demand. Docker deletes a bridge network's device
    with the network when it made the device itself (bridge.go, deleteNetwork), and its API does not
    tell who did, so "nothing" means no container on Docker's side and no port on the bridge
    (``ports()``: this host's other endpoints); otherwise it is left alone with a warning, both
    addresses stay on the bridge and every container keeps its way out. One on another bridge device
    is not this bridge's business. The caller reads the bridge afresh after a replacement."""
    want = gwbridge_wanted(bridge, subnet, gateway)
    if have is not None:
        if have["driver"] == "bridge" and have["bridge"] != bridge:
            return [], [], have, have   # Docker's containers leave through another bridge
        if all(have[k] == want[k] for k in ("driver", "subnet", "gateway", "bridge", "options")):
            return [], [], have, have
        users = ["container %s" % c for c in have["containers"]] or ["port %s" % p for p in ports()]
        if users:
            return [], ["Docker's %s network (subnet %s) differs from the gateway bridge's subnet %s but is in use "
                        "(%s): it is left alone (Docker would delete the bridge with it). Run again when nothing "
                        "uses the bridge, or set the gateway subnet to %s"
                        % (GWBRIDGE, have["subnet"], subnet, ", ".join(users[:5]) + (", ..." if users[5:] else ""),
                           have["subnet"])], have, have
    actions = (["docker: create network %s on bridge %s (subnet %s)" % (GWBRIDGE, bridge, subnet)] if have is None else
               ["docker: replace network %s (subnet %s, bridge %s) with subnet %s on bridge %s"
                % (GWBRIDGE, have["subnet"], have["bridge"] or GWBRIDGE, subnet, bridge)])
    if not apply:
        return actions, [], have, want
    if have is not None:
        status, reply = docker.call("DELETE", "/networks/%s" % have["id"], timeout=CREATE_TIMEOUT)
        if status not in (200, 204, 404):  # a container joined meanwhile: as above
            return [], ["Docker refused to replace its %s network: %s" % (GWBRIDGE, _said(reply) or status)], have, have
    body = {"Name": GWBRIDGE, "CheckDuplicate": True, "Driver": "bridge", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": str(subnet), "Gateway": str(gateway)}]},
            "Options": dict(GWBRIDGE_OPTIONS, **{BRIDGE_NAME: bridge})}
    status, reply = docker.call("POST", "/networks/create", body=body, timeout=CREATE_TIMEOUT)
    if status not in (200, 201, 409):  # 409: Docker made its own meanwhile (shown as it is)
        raise OverlayError("Docker refused to create its %s network with subnet %s on %s: %s"
                           % (GWBRIDGE, subnet, bridge, _said(reply) or status), "docker")
    return actions, [], have, docker.gwbridge()
