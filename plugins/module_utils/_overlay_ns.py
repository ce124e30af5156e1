# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A network's part on one host: its namespace holding br0 (with the gateway address) and vxlan0.

vxlan0 is created in the host namespace and then moved in, so its UDP socket stays on the
underlay while the device itself is only reachable from inside the overlay namespace."""
from __future__ import annotations

import errno
import ipaddress
import os

from ansible_collections.overlay.vxlan.plugins.module_utils import _firewall, _links, _netns, _keys
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

BRIDGE = "br0"
VXLAN = "vxlan0"


def namespace(network):
    return _netns.resolve(_keys.overlay_namespace(network), "network")


def alias(network, prefix="overlay"):
    """br0's alias: lets a host find its part of a network whose record is already gone, and tell
    the namespaces of its own store (prefix) from those of another deployment on the same host."""
    return "overlay.vxlan network %s %s %s" % (network["name"], network["id"], prefix)


def parse_alias(text):
    """(name, id, prefix) from br0's alias, or None for a namespace that is not ours."""
    words = (text or "").split()
    if len(words) < 4 or words[:2] != ["overlay.vxlan", "network"]:
        return None
    return words[2], words[3], words[4] if len(words) > 4 else "overlay"


def owned(nl):
    """{namespace name: (network name, id, prefix)} of every overlay namespace on this host."""
    found = {}
    for ns_name in _netns.list_named():
        if not ns_name.startswith("ovl-"):
            continue
        ns = _netns.resolve(ns_name, "name")
        if not _netns.is_netns(ns.path):
            continue
        br = _links.find(nl.get(ns), BRIDGE)
        parsed = parse_alias(br.get("IFLA_IFALIAS")) if br is not None else None
        if parsed is not None:
            found[ns_name] = parsed
    return found


def stale(nl, networks, prefix):
    """Overlay namespaces of this store whose network record is gone (or was re-created under
    another id): {namespace name: (network name, id)}. ``networks``: {id: record} from Consul."""
    return {ns: (name, net_id) for ns, (name, net_id, pfx) in owned(nl).items()
            if pfx == prefix and net_id not in networks}


def tear_down(nl, ns_name, apply):
    """Remove a stale overlay namespace: vxlan0 first (it frees the VNI and UDP port for a new
    network), then the gateway ports of its endpoints on the host, then the namespace with the
    endpoints' br0 ends (their peers in the containers go with them)."""
    ns = _netns.resolve(ns_name, "name")
    actions = ["delete stale namespace %s (its network is no longer in Consul)" % ns_name]
    if not apply:
        return actions
    ipr = nl.get(ns)
    vx = _links.find(ipr, VXLAN)
    if vx is not None:
        _links.delete(ipr, vx)
    shorts = [m.get("IFLA_IFNAME")[3:] for m in ipr.get_links() if (m.get("IFLA_IFNAME") or "").startswith("ve-")]
    host = nl.get(_netns.resolve(None, None))
    for short in shorts:
        gw_end = _links.find(host, "gw-" + short)
        if gw_end is not None:
            _links.delete(host, gw_end)
    nl.forget(ns)
    _netns.delete_named(ns_name)
    return actions


def reconcile(nl, networks, prefix, apply):
    """Tear down every stale overlay namespace of this store on this host. Returns the actions."""
    actions = []
    for ns_name in sorted(stale(nl, networks, prefix)):
        actions += tear_down(nl, ns_name, apply)
    return actions


def find_by_name(nl, name):
    """Overlay namespaces on this host whose br0 says they belong to network ``name``."""
    found = []
    for ns_name in _netns.list_named():
        if not ns_name.startswith("ovl-"):
            continue
        ns = _netns.resolve(ns_name, "name")
        if not _netns.is_netns(ns.path):
            continue
        br = _links.find(nl.get(ns), BRIDGE)
        text = (br.get("IFLA_IFALIAS") or "") if br is not None else ""
        if text.startswith("overlay.vxlan network %s " % name):
            found.append(ns)
    return found


def _holders_of_vni(nl, vni, port):
    """Overlay namespaces on this host whose vxlan0 already uses ``vni`` on ``port``."""
    holders = []
    for ns_name in _netns.list_named():
        ns = _netns.resolve(ns_name, "name")
        if not _netns.is_netns(ns.path):
            continue
        vx = _links.find(nl.get(ns), VXLAN)
        data = _links.info_data(vx) if vx is not None else {}
        if data.get("IFLA_VXLAN_ID") == vni and data.get("IFLA_VXLAN_PORT") == port:
            holders.append(ns_name)
    return holders


def vxlan_settings(network):
    """The vxlan0 attributes we own, as the kernel reports them (for comparison) and takes them."""
    return {
        "IFLA_VXLAN_ID": network["vni"],
        "IFLA_VXLAN_PORT": network["port"],
        "IFLA_VXLAN_LEARNING": 0,
        "IFLA_VXLAN_PROXY": 1,
        "IFLA_VXLAN_L2MISS": 1,
        "IFLA_VXLAN_L3MISS": 1,
    }


def _vxlan_matches(msg, network):
    data = _links.info_data(msg)
    return _links.kind(msg) == "vxlan" and all(
        data.get(k) == v for k, v in vxlan_settings(network).items())


def bridge_mac(network):
    """br0's own MAC, set rather than inherited: a bridge left to pick one takes the lowest of its
    ports' and changes it as ports come and go, and a device whose MAC changes loses every
    neighbour entry, permanent ones included (the kernel's neigh_changeaddr): the anti-spoofing
    neighbours of every endpoint would go whenever one port is added. The gateway address's
    Docker-style MAC, which no endpoint derives (the gateway is never an endpoint's address)."""
    return _keys.mac_for(network["gateway"])


def intact(nl, network, prefix="overlay"):
    """vxlan0's index when this host's part of ``network`` holds what a new port needs, read with two
    point requests (br0 and vxlan0) instead of ensure()'s full check; None when anything differs
    (then ensure() repairs it). For a runtime's scoped attach (_endpoint.scoped), whose host runs the
    agent's peers sync: br0 a bridge, up, with its own MAC, MTU and label; vxlan0 with the network's
    settings, up, on br0. What is left out (br0's address, lo, the VXLAN firewall) is the sync's to
    repair on its full passes, with everything else of the network."""
    ipr = nl.get(namespace(network))
    br, vx = _links.find(ipr, BRIDGE), _links.find(ipr, VXLAN)
    up = _links.IFF_UP
    if (br is None or vx is None or _links.kind(br) != "bridge" or not br["flags"] & up or not vx["flags"] & up
            or br.get("IFLA_MTU") != network["mtu"] or vx.get("IFLA_MTU") != network["mtu"]
            or (br.get("IFLA_ADDRESS") or "").lower() != bridge_mac(network)
            or br.get("IFLA_IFALIAS") != alias(network, prefix)
            or vx.get("IFLA_MASTER") != br["index"] or not _vxlan_matches(vx, network)):
        return None
    if isinstance(getattr(ipr, "bridges", None), dict):
        ipr.bridges[BRIDGE] = br["index"]  # the ports built next find their master without a read
    return vx["index"]


def ensure(nl, network, apply, prefix="overlay"):
    """Namespace, br0 and vxlan0 as the network record says. Returns (actions, vxlan index or None).

    A namespace this call created is deleted again if a later step fails: a failed build never
    leaves half a network behind."""
    ns = namespace(network)
    created = apply and not ns.exists()
    try:
        return _ensure(nl, ns, network, apply, prefix)
    except BaseException:
        if created and ns.exists():
            nl.forget(ns)
            _netns.delete_named(ns.spec)
        raise


def _ensure(nl, ns, network, apply, prefix):
    # The VXLAN firewall first: no vxlan device exists without it (fails the run if nft refuses).
    actions = _firewall.guard(network["port"], apply)
    if ns.exists() and not _netns.is_netns(ns.path):
        # A plain file left where the namespace was (its mount vanished, e.g. with the mount
        # namespace of the process that made it): clear it and build again.
        actions.append("remove stale namespace file %s" % ns.path)
        if not apply:
            return actions + ["create namespace %s with %s and %s" % (ns.spec, BRIDGE, VXLAN)], None
        os.unlink(ns.path)
    if not ns.exists():
        actions.append("create namespace %s" % ns.spec)
        if not apply:
            return actions + ["create %s and %s in %s" % (BRIDGE, VXLAN, ns.spec)], None
        _netns.check_exists(ns, "network", create=True)
    ipr = nl.get(ns)
    net = ipaddress.ip_network(network["subnet"])
    gateway = ipaddress.ip_interface("%s/%d" % (network["gateway"], net.prefixlen))

    lo = _links.find(ipr, "lo")
    if lo is not None and not lo["flags"] & _links.IFF_UP:
        actions.append("%s: set lo up" % ns.spec)
        if apply:
            ipr.link("set", index=lo["index"], state="up")

    br = _links.find(ipr, BRIDGE)
    if br is not None and _links.kind(br) != "bridge":
        actions.append("%s: delete %s (a %s, not a bridge)" % (ns.spec, BRIDGE, _links.kind(br)))
        if apply:
            _links.delete(ipr, br)
        br = None
    if br is None:
        actions.append("%s: create bridge %s" % (ns.spec, BRIDGE))
        if apply:
            ipr.link("add", ifname=BRIDGE, kind="bridge", address=bridge_mac(network))
            br = _links.find(ipr, BRIDGE)
    br_spec = _links.LinkSpec(ns, BRIDGE, "network", mtu=network["mtu"], mac=bridge_mac(network), addresses=[gateway],
                              up=True)
    if br is not None:
        actions += _links.ensure_attributes(ipr, br, br_spec, apply)
        if br.get("IFLA_IFALIAS") != alias(network, prefix):
            actions.append("%s: label %s with network %s" % (ns.spec, BRIDGE, network["name"]))
            if apply:
                ipr.link("set", index=br["index"], ifalias=alias(network, prefix))

    vx = _links.find(ipr, VXLAN)
    if vx is not None and not _vxlan_matches(vx, network):
        actions.append("%s: delete %s (settings differ from the network's)" % (ns.spec, VXLAN))
        if apply:
            _links.delete(ipr, vx)
        vx = None
    if vx is None:
        actions.append("%s: create %s (vni %d, port %d)" % (ns.spec, VXLAN, network["vni"], network["port"]))
        if apply:
            vx = _create_vxlan(nl, ns, network)
    vx_spec = _links.LinkSpec(ns, VXLAN, "network", mtu=network["mtu"], master=BRIDGE, up=True)
    if vx is not None:
        try:
            actions += _links.ensure_attributes(ipr, vx, vx_spec, apply)
        except _netns.NetlinkError as e:
            if e.code == errno.EADDRINUSE:
                raise OverlayError("UDP port %d is already in use on this host by something other than a VXLAN "
                                   "device of the same VNI (vxlan0 of network %s cannot come up)"
                                   % (network["port"], network["name"]), "port")
            raise
        vx = _links.find(ipr, VXLAN) if apply else vx
    return actions, (vx["index"] if vx is not None else None)


def _add_vxlan(host, temp, network):
    host.link("add", ifname=temp, kind="vxlan", vxlan_id=network["vni"], vxlan_port=network["port"],
              vxlan_learning=0, vxlan_proxy=1, vxlan_l2miss=1, vxlan_l3miss=1)


def _create_vxlan(nl, ns, network):
    host = nl.get(_netns.resolve(None, None))
    temp = "vx-%06x-%s" % (network["vni"], network["id"][:5])  # Docker's naming, 15 characters
    stale = _links.find(host, temp)
    if stale is not None:  # left by an interrupted run
        _links.delete(host, stale)
    try:
        _add_vxlan(host, temp, network)
    except _netns.NetlinkError as e:
        # Stale namespaces of networks gone from Consul were torn down before (reconcile), so
        # whoever holds the VNI now is not ours to remove.
        holders = _holders_of_vni(nl, network["vni"], network["port"])
        hint = ("; overlay namespace %s on this host already holds it" % ", ".join(holders)) if holders else ""
        raise OverlayError("the kernel refused to create the vxlan device (vni %d, port %d): %s%s"
                           % (network["vni"], network["port"], e, hint))
    index = _links.find(host, temp)["index"]
    with _links.NamespaceFd(ns) as fd:
        host.link("set", index=index, net_ns_fd=fd, ifname=VXLAN)
    return _links.find(nl.get(ns), VXLAN)


def remove(nl, network, apply):
    ns = namespace(network)
    return remove_namespace(nl, ns, apply) if ns.exists() else []


def remove_namespace(nl, ns, apply):
    if apply:
        nl.forget(ns)
        _netns.delete_named(ns.spec)
    return ["delete namespace %s (with %s, %s and the endpoints' overlay ends)" % (ns.spec, BRIDGE, VXLAN)]


def vxlan_index(nl, network):
    ns = namespace(network)
    if not ns.exists():
        return None
    vx = _links.find(nl.get(ns), VXLAN)
    return vx["index"] if vx is not None else None


def describe(nl, network):
    """br0 and vxlan0 as they are, for return values and verify."""
    ns = namespace(network)
    if not ns.exists():
        return None
    ipr = nl.get(ns)
    br, vx = _links.find(ipr, BRIDGE), _links.find(ipr, VXLAN)
    out = {"namespace": ns.spec, "bridge": _links.view(ipr, br, ns.spec), "vxlan": _links.view(ipr, vx, ns.spec)}
    if vx is not None:
        data = _links.info_data(vx)
        out["vxlan"].update(vni=data.get("IFLA_VXLAN_ID"), port=data.get("IFLA_VXLAN_PORT"),
                            learning=bool(data.get("IFLA_VXLAN_LEARNING")), proxy=bool(data.get("IFLA_VXLAN_PROXY")),
                            l2miss=bool(data.get("IFLA_VXLAN_L2MISS")), l3miss=bool(data.get("IFLA_VXLAN_L3MISS")))
    return out
