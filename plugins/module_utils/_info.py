# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Networks and endpoints as `docker network ls/inspect` show them, and a verify that compares the
store with this host's kernel by asking each reconciler what it *would* change (apply=False)."""
from __future__ import annotations

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _antispoof, _consul, _endpoint, _gateway, _gc, _keys, _netns, _overlay_ns, _peers, _records, _topology,
    _underlay)


def inspect(network, endpoints):
    return {
        "id": network["id"], "short_id": network["id"][:12], "name": network["name"], "driver": "overlay",
        "scope": "global", "subnet": network["subnet"], "gateway": network["gateway"], "vni": network["vni"],
        "mtu": network["mtu"], "port": network["port"], "internal": network["internal"],
        "created_at": network.get("created_at"),
        "endpoints": sorted((_summary(e) for e in endpoints), key=lambda e: e["name"]),
    }


def _summary(endpoint):
    return {k: endpoint.get(k) for k in ("id", "name", "ip", "mac", "host", "vtep", "namespace", "ifname", "gateway_ip")}


def verify(nl, network, endpoints, underlay, params, run_command):
    """Every difference between the store and this host's kernel, one dict each."""
    found = []

    def note(kind, actions):
        found.extend({"network": network["name"], "kind": kind, "difference": a} for a in actions)

    host_actions, vx_index = _overlay_ns.ensure(nl, network, False, params.get("consul_prefix") or "overlay")
    note("network", host_actions)
    if vx_index is not None:
        ipr = nl.get(_overlay_ns.namespace(network))
        note("peer", _peers.sync(ipr, vx_index, _peers.desired(endpoints, underlay.vtep), apply=False))
    note("anti-spoofing", _antispoof.reconcile(nl, network, endpoints, underlay.vtep, apply=False))
    gw = None if network["internal"] else _gateway.from_params(params)
    local = [e for e in endpoints if e["host"] == underlay.host]
    if gw is not None and local:
        note("gateway", _gateway.ensure(nl, gw, run_command, apply=False))
    for record in local:
        if record.get("handoff"):  # the runtime owns the container end: only our port can be checked
            if not _gc.alive(nl, network, record):
                port = _endpoint.OVERLAY_END % record["id"][:10]
                note("endpoint", ["%s: its port %s is gone" % (record["name"], port)])
            continue
        ns = _netns.resolve(record["namespace"], "namespace")
        if not ns.exists():
            note("endpoint", ["%s: namespace %s is gone" % (record["name"], record["namespace"])])
        elif _overlay_ns.namespace(network).exists():
            note("endpoint", _endpoint.build_kernel(nl, network, gw, record, ns, False,
                                                    params.get("default_route", True))[0])
    return found


def run(params, run_command):
    settings = _consul.connection_settings(params)
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    if params.get("name"):
        networks = [_records.lookup(store, layout, params["name"], "name")[0]]
    else:
        networks = sorted(store.values(layout.networks()), key=lambda n: n["name"])
    out = {"changed": False, "networks": []}
    per_network = {n["id"]: store.values(layout.endpoints(n["id"])) for n in networks}
    out["networks"] = [inspect(n, per_network[n["id"]]) for n in networks]
    if params.get("verify"):
        _netns.require_pyroute2()
        _netns.require_root()
        with _netns.Netlink() as nl:
            underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, settings["host"])
            differences = []
            for n in networks:
                differences += verify(nl, n, per_network[n["id"]], underlay, params, run_command)
            # What no single network's view shows: stale namespaces and garbage, on every host.
            for action in _overlay_ns.reconcile(nl, _records.all_networks(store, layout), settings["prefix"], False):
                differences.append({"network": None, "kind": "namespace", "difference": action})
            for finding in _gc.collect(nl, store, layout, underlay, settings["prefix"], apply=False):
                where = finding.get("key") or finding.get("device")
                differences.append({"network": None, "kind": "garbage",
                                    "difference": "%s %s: %s (%s)" % (finding["kind"], where, finding["reason"],
                                                                      finding["action"])})
        out["differences"] = differences
        out["in_sync"] = not differences
    if params.get("topology") in ("data", "dot"):
        out.update(topology(params, settings, networks, per_network, run_command))
    return out


def topology(params, settings, networks, per_network, run_command):
    """{"topology": this host's kernel state}, plus {"dot": ...} when asked for DOT."""
    _netns.require_pyroute2()
    _netns.require_root()
    with _netns.Netlink() as nl:
        underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, settings["host"])
        topo = _topology.gather(nl, networks, per_network, underlay, _gateway.from_params(params), settings,
                                run_command)
    out = {"topology": topo}
    if params["topology"] == "dot":
        out["dot"] = _topology.to_dot([topo], title="overlay.vxlan on %s" % topo["host"])
    return out
