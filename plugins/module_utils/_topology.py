# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What this host's kernel really holds for the overlay, read-only, as the seed's diagrams draw it:
the underlay, each network's namespace with br0 and vxlan0, every local endpoint's veth pairs
(eth0 <-> its br0 port, eth1 <-> its gateway bridge port, found by the peer ifindex as ethtool
shows it), the VXLAN tunnels to other VTEPs with the remote MACs vxlan0's FDB holds, and Consul.

``gather`` returns one host's topology; ``to_dot`` draws one or several hosts' topologies (as
gathered on each host) as a Graphviz DOT document."""
from __future__ import annotations

import socket

from ansible_collections.overlay.vxlan.plugins.module_utils import _gateway, _links, _netns, _overlay_ns, _peers

IFF_UP = 0x1


def _link(ipr, msg, label):
    """A link's view plus its veth peer index and, on a bridge, its port isolation."""
    out = _links.view(ipr, msg, label)
    if out is None:
        return None
    out["peer_ifindex"] = msg.get("IFLA_LINK") if _links.kind(msg) == "veth" else None
    slave = (msg.get("IFLA_LINKINFO") or {}).get("IFLA_INFO_SLAVE_DATA") or {}
    if msg.get("IFLA_MASTER"):
        out["isolated"] = bool(slave.get("IFLA_BRPORT_ISOLATED"))
    return out


def _ports(ipr, bridge_msg, label):
    if bridge_msg is None:
        return []
    return sorted((_link(ipr, m, label) for m in _links.ports(ipr, bridge_msg["index"])), key=lambda p: p["ifindex"])


def _peer(ipr, end, label):
    """The other end of a veth, looked up by the peer index in the namespace it should be in;
    only a link whose own peer index points back at ``end`` counts."""
    if end is None or not end.get("peer_ifindex"):
        return None
    msg = _links.by_index(ipr, end["peer_ifindex"])
    if msg is None or _links.kind(msg) != "veth" or msg.get("IFLA_LINK") != end["ifindex"]:
        return None
    return _link(ipr, msg, label)


def _routes(ipr):
    names = {m["index"]: m.get("IFLA_IFNAME") for m in ipr.get_links()}
    out = []
    for r in ipr.get_routes(family=socket.AF_INET, table=254):
        dst = r.get("RTA_DST")
        out.append({"dst": "%s/%d" % (dst, r["dst_len"]) if dst else "default",
                    "via": r.get("RTA_GATEWAY"), "dev": names.get(r.get("RTA_OIF"))})
    return sorted(out, key=lambda r: (r["dst"] != "default", r["dst"]))


def _network(nl, network, endpoints, underlay):
    ns = _overlay_ns.namespace(network)
    out = {"id": network["id"], "name": network["name"], "vni": network["vni"], "subnet": network["subnet"],
           "namespace": ns.spec if ns.exists() else None, "bridge": None, "vxlan": None, "ports": [],
           "fdb": [], "neighbours": [], "tunnels": []}
    if not ns.exists():
        return out
    ipr = nl.get(ns)
    described = _overlay_ns.describe(nl, network)
    out["bridge"], out["vxlan"] = described["bridge"], described["vxlan"]
    br, vx = _links.find(ipr, _overlay_ns.BRIDGE), _links.find(ipr, _overlay_ns.VXLAN)
    if vx is not None:
        data = _links.info_data(vx)
        out["vxlan"]["local"] = data.get("IFLA_VXLAN_LOCAL")
        out["vxlan"]["ttl"] = data.get("IFLA_VXLAN_TTL")
    out["ports"] = _ports(ipr, br, ns.spec)
    if vx is None:
        return out
    fdb, neigh = _peers.current(ipr, vx["index"])
    out["fdb"] = sorted(({"mac": mac, "dst": dst} for mac, dsts in fdb.items() for dst in dsts),
                        key=lambda e: (e["dst"], e["mac"]))
    out["neighbours"] = sorted(({"ip": ip, "mac": mac} for ip, mac in neigh.items()), key=lambda e: e["ip"])
    hosts = {e["vtep"]: e["host"] for e in endpoints}
    by_dst = {}
    for entry in out["fdb"]:
        by_dst.setdefault(entry["dst"], []).append(entry["mac"])
    out["tunnels"] = [{"local": underlay.vtep if underlay else None, "remote": dst, "remote_host": hosts.get(dst),
                       "macs": sorted(macs)} for dst, macs in sorted(by_dst.items())]
    return out


def _endpoint(nl, network, record, gw):
    ns = _netns.resolve(record["namespace"], "namespace")
    out = {"network": network["name"], "name": record["name"], "id": record["id"], "ip": record["ip"],
           "mac": record["mac"], "namespace": record["namespace"], "exists": ns.exists(),
           "interfaces": [], "routes": []}
    if not ns.exists():
        return out
    ipr = nl.get(ns)
    overlay_ns = _overlay_ns.namespace(network)
    host = _netns.resolve(None, None)
    ends = [(record["ifname"], overlay_ns)]
    if record.get("gateway_ifname") and gw is not None:
        ends.append((record["gateway_ifname"], host))
    for ifname, peer_ns in ends:
        end = _link(ipr, _links.find(ipr, ifname), record["namespace"])
        if end is None:
            continue
        label = "host" if peer_ns.is_host else peer_ns.spec
        end["peer"] = _peer(nl.get(peer_ns), end, label) if peer_ns.exists() else None
        out["interfaces"].append(end)
    out["routes"] = _routes(ipr)
    return out


def _gateway_bridge(nl, gw, run_command):
    ipr = nl.get(_netns.resolve(None, None))
    msg = _links.find(ipr, gw.name)
    if msg is None:
        return None
    out = _link(ipr, msg, "host")
    out["ports"] = _ports(ipr, msg, "host")
    out["subnet"] = str(gw.subnet)
    if run_command is not None:
        checks = [run_command(["iptables", "-w", "-t", t, "-C", c] + r)[0] == 0 for t, c, r in _gateway.nat_rules(gw)]
        out["nat"] = all(checks)
    with open(_gateway.IP_FORWARD) as f:
        out["ip_forward"] = f.read().strip() == "1"
    return out


def gather(nl, networks, per_network, underlay, gw, consul, run_command=None):
    """This host's topology (read-only).

    networks: network records; per_network: {network id: [endpoint records]}; underlay: an
    _underlay.Underlay; gw: a _gateway.Gateway or None; consul: {"host", "port", "scheme"}.
    """
    ipr = nl.get(_netns.resolve(None, None))
    under = {"host": underlay.host, "vtep": underlay.vtep, "interface": underlay.interface, "mtu": underlay.mtu}
    msg = _links.find(ipr, underlay.interface) if underlay.interface else None
    under["mac"] = msg.get("IFLA_ADDRESS") if msg is not None else None
    out = {"host": underlay.host, "underlay": under,
           "consul": {k: consul.get(k) for k in ("scheme", "host", "port")},
           "networks": [], "endpoints": [],
           "gateway_bridge": _gateway_bridge(nl, gw, run_command) if gw is not None else None}
    for network in networks:
        endpoints = per_network.get(network["id"], [])
        out["networks"].append(_network(nl, network, endpoints, underlay))
        net_gw = None if network.get("internal") else gw
        for record in sorted(endpoints, key=lambda e: e["name"]):
            if record["host"] == underlay.host:
                out["endpoints"].append(_endpoint(nl, network, record, net_gw))
    return out


# ---------------------------------------------------------------------------- DOT

def _id(*parts):
    return '"%s"' % ":".join(str(p) for p in parts).replace('"', "'")


def _label(*lines):
    return '"%s"' % "\\n".join(str(x) for x in lines if x not in (None, "")).replace('"', "'")


def to_dot(hosts, title="overlay.vxlan"):
    """One DOT graph of the topologies gathered on several hosts (a list of gather() results)."""
    lines = ["graph overlay {", '  graph [rankdir=LR, fontname="Helvetica", label=%s, labelloc=t, compound=true];'
             % _label(title),
             '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    vtep_node = {}
    consul = None
    for h in hosts:
        name = h["host"]
        u = h["underlay"]
        vtep_node[u["vtep"]] = _id(name, "underlay")
        consul = consul or h.get("consul")
        lines.append("  subgraph %s {" % _id("cluster", name))
        lines.append("    label=%s; style=rounded; color=gray40;" % _label("host %s" % name))
        lines.append("    %s [label=%s, fillcolor=lightyellow];" % (
            _id(name, "underlay"), _label("%s %s" % (u["interface"], u["vtep"]), u.get("mac"), "MTU %s" % u["mtu"])))
        gwb = h.get("gateway_bridge")
        if gwb:
            lines.append("    %s [label=%s, fillcolor=lightblue];" % (
                _id(name, "gw", gwb["name"]), _label(gwb["name"], ", ".join(gwb["addresses"]),
                                                     "NAT %s" % ("on" if gwb.get("nat") else "off"),
                                                     "ports isolated" if gwb["ports"] and all(
                                                         p.get("isolated") for p in gwb["ports"]) else None)))
        for net in h["networks"]:
            if not net["namespace"]:
                continue
            nsid = net["namespace"]
            lines.append("    subgraph %s {" % _id("cluster", name, nsid))
            lines.append("      label=%s; style=dashed; color=gray60;" % _label(
                "namespace %s" % nsid, "network %s" % net["name"]))
            if net["bridge"]:
                b = net["bridge"]
                lines.append("      %s [label=%s, fillcolor=palegreen];" % (
                    _id(name, nsid, "br0"), _label("br0", ", ".join(b["addresses"]), "MTU %s" % b["mtu"])))
            if net["vxlan"]:
                v = net["vxlan"]
                flags = " ".join(f for f in ("proxy", "l2miss", "l3miss", "learning") if v.get(f))
                lines.append("      %s [label=%s, fillcolor=khaki];" % (
                    _id(name, nsid, "vxlan0"), _label("vxlan0", "id %s dstport %s" % (v["vni"], v["port"]), flags)))
            for p in net["ports"]:
                if p["name"] == "vxlan0":
                    continue
                lines.append("      %s [label=%s];" % (_id(name, nsid, p["name"]), _label(
                    p["name"], "ifindex %s" % p["ifindex"])))
            lines.append("    }")
            for p in net["ports"]:
                lines.append("    %s -- %s [color=darkgreen];" % (_id(name, nsid, "br0"), _id(name, nsid, p["name"])))
            if net["vxlan"]:
                lines.append("    %s -- %s [style=dotted, label=\"UDP %s\"];" % (
                    _id(name, nsid, "vxlan0"), _id(name, "underlay"), net["vxlan"]["port"]))
        if gwb:
            for p in gwb["ports"]:
                lines.append("    %s [label=%s];" % (_id(name, "host", p["name"]), _label(
                    p["name"], "ifindex %s" % p["ifindex"])))
                lines.append("    %s -- %s [color=steelblue];" % (_id(name, "gw", gwb["name"]),
                                                                  _id(name, "host", p["name"])))
        for ep in h["endpoints"]:
            lines.append("    subgraph %s {" % _id("cluster", name, "ep", ep["name"]))
            lines.append("      label=%s; style=filled; fillcolor=aliceblue; color=gray50;" % _label(
                "%s (namespace %s)" % (ep["name"], ep["namespace"])))
            for i in ep["interfaces"]:
                lines.append("      %s [label=%s];" % (_id(name, "ep", ep["name"], i["name"]), _label(
                    "%s ifindex %s" % (i["name"], i["ifindex"]), ", ".join(i["addresses"]), i["mac"],
                    "MTU %s" % i["mtu"])))
            lines.append("    }")
            for i in ep["interfaces"]:
                peer = i.get("peer")
                if not peer:
                    continue
                where = name + ":host" if peer["namespace"] == "host" else name + ":" + peer["namespace"]
                lines.append("    %s -- %s [label=%s, penwidth=2];" % (
                    _id(name, "ep", ep["name"], i["name"]), '"%s:%s"' % (where, peer["name"]),
                    _label("veth", "peer ifindex %s" % i["peer_ifindex"])))
        lines.append("  }")
    for h in hosts:
        for net in h["networks"]:
            for t in net["tunnels"]:
                far = vtep_node.get(t["remote"])
                if far is None:
                    far = _id("vtep", t["remote"])
                    lines.append("  %s [label=%s, shape=ellipse];" % (far, _label("VTEP %s" % t["remote"])))
                lines.append("  %s -- %s [dir=forward, style=bold, color=darkorange, label=%s];" % (
                    _id(h["host"], net["namespace"], "vxlan0"), far,
                    _label("VXLAN %s -> %s" % (net["vni"], t["remote"]), *t["macs"])))
    if consul:
        lines.append("  consul [label=%s, shape=cylinder, fillcolor=mistyrose];" % _label(
            "Consul", "%s:%s" % (consul.get("host"), consul.get("port"))))
        for h in hosts:
            lines.append("  %s -- consul [style=dashed, color=gray50];" % _id(h["host"], "underlay"))
    lines.append("}")
    return "\n".join(lines) + "\n"
