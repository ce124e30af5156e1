# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Endpoints cannot impersonate each other: br0 forwards only what the store says each port is.

Three parts, all inside the network's overlay namespace, all computed from the endpoint records:

* an nftables ``bridge`` table (``overlay_antispoof``) whose prerouting chain lets a ``ve-*`` port
  send only IPv4 from its own MAC and IP and ARP whose sender is its own MAC and IP; everything
  else from an endpoint (another source, IPv6 and ND, VLAN tags, other ethertypes) is dropped.
  It runs before the bridge's FDB learning and ARP handling, so a dropped frame teaches nothing;
  a port that has no element yet (an endpoint being attached) is dropped too: fail closed.
* br0 does not learn: learning off on every port (ve-* and vxlan0), and its FDB holds static
  entries from the store: local endpoint MACs on their ve-* port, remote ones on vxlan0.
* ARP answered from the store: a permanent neighbour entry on br0 for every endpoint, proxy ARP
  on the ve-* ports and neighbour suppression on vxlan0. The kernel's br_do_proxy_suppress_arp
  answers a request from port P for IP T when br0 has a valid neighbour for T, the FDB knows its
  MAC, and P has proxy_arp or the MAC's port has neigh_suppress; a request arriving on a port
  that itself has neigh_suppress is never answered, so that flag goes on vxlan0 only. The bridge
  never floods to a proxy_arp port: endpoints get no broadcast, multicast or unknown unicast.

``reconcile`` is the one entry point; with ``apply=False`` it returns what it would change (check
mode and verify). A network record with ``anti_spoofing: false`` gets the kernel's defaults back:
no table, learning on, no static entries or neighbours on br0.
"""
from __future__ import annotations

import socket

from ansible_collections.overlay.vxlan.plugins.module_utils import _links, _nft, _overlay_ns
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

TABLE = "overlay_antispoof"
PORT_PREFIX = "ve-"
NUD_NOARP = 0x40       # a bridge FDB entry with this state is "static"
NUD_PERMANENT = 0x80   # on the bridge: a "local" entry (delivered to br0 itself); on a neighbour: permanent
NTF_SELF = 0x02
NTF_MASTER = 0x04  # a delete must say so, or it removes the port device's own (self) entry instead

RULES = (
    # (comment, rule): the comments let a re-run see that the chain is ours and complete.
    ("ovx-other-ports", 'iifname != "%s*" accept' % PORT_PREFIX),
    ("ovx-ipv4", "iifname . ether saddr . ip saddr @src4 accept"),
    ("ovx-arp", "iifname . ether saddr . arp saddr ether . arp saddr ip @srcarp accept"),
    ("ovx-drop", "counter drop"),
)


def enabled(network):
    """Records written before the option existed count as protected."""
    return network.get("anti_spoofing", True) is not False


def port_name(endpoint):
    return PORT_PREFIX + endpoint["id"][:10]


# ------------------------------------------------------------------------------ nftables

def _elements(local):
    ipv4 = sorted((port_name(e), e["mac"].lower(), e["ip"]) for e in local)
    arp = sorted((p, m, m, ip) for p, m, ip in ipv4)
    return ipv4, arp


def script(local):
    """The whole table, replaced in one transaction (create-then-delete makes it work from nothing)."""
    ipv4, arp = _elements(local)
    lines = ["table bridge %s {}" % TABLE, "delete table bridge %s" % TABLE, "table bridge %s {" % TABLE,
             "  set src4 { type ifname . ether_addr . ipv4_addr; }",
             "  set srcarp { type ifname . ether_addr . ether_addr . ipv4_addr; }",
             "  chain prerouting {",
             "    type filter hook prerouting priority -300; policy accept;"]
    lines += ['    %s comment "%s"' % (rule, comment) for comment, rule in RULES]
    lines += ["  }", "}"]
    if ipv4:
        lines.append("add element bridge %s src4 { %s }" % (
            TABLE, ", ".join('"%s" . %s . %s' % e for e in ipv4)))
        lines.append("add element bridge %s srcarp { %s }" % (
            TABLE, ", ".join('"%s" . %s . %s . %s' % e for e in arp)))
    return "\n".join(lines) + "\n"


def _current_table(ns):
    """(rule comments, chain settings, {set: sorted elements}) or None when the table is absent."""
    objects = _nft.ruleset(ns, "bridge", TABLE)
    if not objects:
        return None
    comments, chain, sets = [], None, {}
    for obj in objects:
        if "set" in obj:
            s = obj["set"]
            elems = []
            for elem in s.get("elem", ()):
                value = elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) and "elem" in elem else elem
                parts = value.get("concat", []) if isinstance(value, dict) else [value]
                elems.append(tuple(str(p).lower() for p in parts))
            sets[s["name"]] = (tuple(s.get("type", ())), sorted(elems))
        elif "chain" in obj and obj["chain"].get("name") == "prerouting":
            c = obj["chain"]
            chain = (c.get("hook"), c.get("prio"), c.get("policy"))
        elif "rule" in obj and obj["rule"].get("chain") == "prerouting":
            comments.append(obj["rule"].get("comment"))
    return comments, chain, sets


def _table_actions(ns, network, local, on, apply):
    current = _current_table(ns)
    if not on:
        if current is None:
            return []
        if apply:
            _nft.apply(ns, "delete table bridge %s\n" % TABLE, "removing the anti-spoofing table")
        return ["nftables: delete table bridge %s (anti_spoofing is off)" % TABLE]
    ipv4, arp = _elements(local)
    want_sets = {"src4": (("ifname", "ether_addr", "ipv4_addr"), ipv4),
                 "srcarp": (("ifname", "ether_addr", "ether_addr", "ipv4_addr"), arp)}
    actions = []
    if current is None:
        actions.append("nftables: create table bridge %s (each ve-* port sends only its own MAC and IP)" % TABLE)
    else:
        comments, chain, sets = current
        if comments != [c for c, r in RULES] or chain != ("prerouting", -300, "accept") or \
                {k: v[0] for k, v in sets.items()} != {k: v[0] for k, v in want_sets.items()}:
            actions.append("nftables: rewrite table bridge %s (its chain or sets differ)" % TABLE)
        else:
            have = {e[0]: e for e in sets["src4"][1]}
            want = {e[0]: e for e in ipv4}
            for port in sorted(set(have) | set(want)):
                if have.get(port) != want.get(port):
                    if port in want:
                        actions.append("nftables: %s may send as %s %s" % (port, want[port][1], want[port][2]))
                    else:
                        actions.append("nftables: forget %s (%s %s)" % (port, have[port][1], have[port][2]))
            if not actions and sets["srcarp"][1] != arp:
                actions.append("nftables: ARP elements differ from the endpoints")
    if actions and apply:
        _nft.apply(ns, script(local), "the anti-spoofing table of network %s" % network["name"])
    return actions


# ------------------------------------------------------------------------------ bridge ports

def _protinfo(msg):
    """A bridge port's flags, from its own link message (bridge slave data): the link dump that
    found the ports already carries them, where ``brport show`` would dump every port again.
    Read with ``.get("IFLA_BRPORT_...")``: only the flags compared are decoded."""
    info = msg.get("IFLA_LINKINFO") or {}
    if info.get("IFLA_INFO_SLAVE_KIND") != "bridge":
        return {}
    data = info.get("IFLA_INFO_SLAVE_DATA") or {}
    return data if hasattr(data, "get") else {}


def _port_actions(ipr, ports, vx_name, on, apply):
    """``ports``: {name: link message} of br0's ports."""
    actions = []
    for name, msg in sorted(ports.items()):
        if name == vx_name:
            want = {"learning": 0, "neigh_suppress": 1} if on else {"learning": 1, "neigh_suppress": 0}
        elif name.startswith(PORT_PREFIX):
            want = {"learning": 0, "proxyarp": 1} if on else {"learning": 1, "proxyarp": 0}
        else:
            continue
        have = _protinfo(msg)
        diff = {k: v for k, v in want.items() if have.get("IFLA_BRPORT_" + k.upper()) != v}
        if diff:
            actions.append("%s: %s" % (name, ", ".join("%s %s" % (k, "on" if v else "off")
                                                       for k, v in sorted(diff.items()))))
            if apply:
                ipr.brport("set", index=msg["index"], **diff)
    return actions


# ------------------------------------------------------------------------------ FDB and neighbours

def _fdb_actions(ipr, br_index, ports, want, on, apply):
    """``want``: {mac: port index}. Ours are br0's static (NOARP) master entries; learned
    (dynamic) ones are removed too while protection is on."""
    names = {index: name for name, index in ports.items()}
    static, learned = {}, []
    for msg in ipr.fdb("dump"):
        if msg.get("NDA_MASTER") != br_index or msg["flags"] & NTF_SELF or msg["state"] & NUD_PERMANENT:
            continue
        mac = (msg.get("NDA_LLADDR") or "").lower()
        if msg.get("NDA_VLAN"):
            continue
        if msg["state"] & NUD_NOARP:
            static[mac] = msg["ifindex"]
        elif on:
            learned.append((mac, msg["ifindex"]))
    actions = []
    for mac, index in learned:
        actions.append("br0 fdb: forget learned %s on %s" % (mac, names.get(index, index)))
        if apply:
            _quiet(ipr.fdb, "del", ifindex=index, lladdr=mac, flags=NTF_MASTER)
    for mac, index in sorted(static.items()):
        if want.get(mac) != index:
            actions.append("br0 fdb: remove %s on %s" % (mac, names.get(index, index)))
            if apply:
                _quiet(ipr.fdb, "del", ifindex=index, lladdr=mac, flags=NTF_MASTER)
    for mac, index in sorted(want.items()):
        if static.get(mac) != index:
            actions.append("br0 fdb: %s static on %s" % (mac, names.get(index, index)))
            if apply:
                ipr.fdb("replace", ifindex=index, lladdr=mac, master=br_index, state=NUD_NOARP)
    return actions


def _neigh_actions(ipr, br_index, want, apply):
    have = {}
    for msg in ipr.get_neighbours(family=socket.AF_INET, ifindex=br_index):
        if msg["state"] & NUD_PERMANENT:
            have[msg.get("NDA_DST")] = (msg.get("NDA_LLADDR") or "").lower()
    actions = []
    for ip, mac in sorted(have.items()):
        if want.get(ip) != mac:
            actions.append("br0 neigh: remove %s lladdr %s" % (ip, mac))
            if apply:
                _quiet(ipr.neigh, "del", ifindex=br_index, dst=ip, lladdr=mac)
    for ip, mac in sorted(want.items()):
        if have.get(ip) != mac:
            actions.append("br0 neigh: %s lladdr %s" % (ip, mac))
            if apply:
                ipr.neigh("replace", ifindex=br_index, dst=ip, lladdr=mac, state=NUD_PERMANENT)
    return actions


def _quiet(call, *args, **kwargs):
    """A delete whose target vanished meanwhile (its port went) is done, not an error."""
    from ansible_collections.overlay.vxlan.plugins.module_utils._netns import NetlinkError
    try:
        call(*args, **kwargs)
    except NetlinkError as e:
        if e.code not in (2, 19):  # ENOENT, ENODEV
            raise


# ------------------------------------------------------------------------------ one runtime's endpoints

def admit(nl, network, records, apply):
    """Before new local ports join br0 (a runtime's attach of its own endpoints, while the agent's
    peers sync repairs the whole network after every change of the store): add their elements to
    the table ``reconcile`` left, in one ``nft`` transaction, without reading the table or the
    bridge back. Returns the actions, or None when this shortcut does not apply (protection off, no
    namespace or table yet): the caller then runs ``reconcile``. The ports do not exist yet, so a
    set the kernel refuses (the table was deleted) means None too, never an unprotected port."""
    ns = _overlay_ns.namespace(network)
    if not (enabled(network) and records and ns.exists()):
        return None
    ipv4, arp = _elements(records)
    script = "add element bridge %s src4 { %s }\nadd element bridge %s srcarp { %s }\n" % (
        TABLE, ", ".join('"%s" . %s . %s' % e for e in ipv4), TABLE, ", ".join('"%s" . %s . %s . %s' % e for e in arp))
    if apply:
        try:
            _nft.apply(ns, script, "the anti-spoofing elements of the new endpoints")
        except OverlayError:
            return None
    return ["anti-spoofing: nftables: %s may send as %s %s" % e for e in ipv4]


def secure(nl, network, records, apply):
    """After ``admit``, once the new ports exist: each port learning off and proxy ARP on, its MAC
    static on it in br0's FDB, its address a permanent neighbour on br0: point requests, no dump.
    Returns the actions, or None when this shortcut does not apply (the caller runs ``reconcile``)."""
    ns = _overlay_ns.namespace(network)
    if not (enabled(network) and records and ns.exists()):
        return None
    ipr = nl.get(ns)
    try:
        br_index = _links.bridge_index(ipr, _overlay_ns.BRIDGE, "network")  # remembered by the attach's build
    except OverlayError:
        return None
    ports = [(r, _links.find(ipr, port_name(r))) for r in records]
    if any(port is None or port.get_attr("IFLA_MASTER") != br_index for _r, port in ports):
        return None
    actions = []
    for record, port in ports:
        mac, name = record["mac"].lower(), port_name(record)
        actions += ["%s: learning off, proxyarp on" % name, "br0 fdb: %s static on %s" % (mac, name),
                    "br0 neigh: %s lladdr %s" % (record["ip"], mac)]
        if apply:
            ipr.brport("set", index=port["index"], learning=0, proxyarp=1)
            ipr.fdb("replace", ifindex=port["index"], lladdr=mac, master=br_index, state=NUD_NOARP)
            ipr.neigh("replace", ifindex=br_index, dst=record["ip"], lladdr=mac, state=NUD_PERMANENT)
    return ["anti-spoofing: %s" % a for a in actions]


def follow(nl, network, before, after, my_vtep, apply):
    """``reconcile``'s work for one change of the store, from ``before`` (the endpoint records an
    earlier ``reconcile`` or ``follow`` of this namespace enforced) to ``after``, with point
    requests: new local ports secured again (their attach did it, and gave them their table elements:
    a port without one drops everything, so trusting the attach fails closed), and
    br0's static FDB entry and neighbour of each remote endpoint that came or went. Returns the
    actions, or None when the change needs ``reconcile`` (a local endpoint gone or changed,
    protection off, a missing device): the agent between its full passes."""
    ns = _overlay_ns.namespace(network)
    if not (enabled(network) and ns.exists()):
        return None

    def key(e):
        return e["mac"].lower(), e["ip"], e["vtep"]

    local_before = {e["id"]: key(e) for e in before if e.get("vtep") == my_vtep}
    local_after = {e["id"]: e for e in after if e.get("vtep") == my_vtep}
    if any(local_after.get(i) is None or key(local_after[i]) != k for i, k in local_before.items()):
        return None
    remote_before = {(e["id"],) + key(e) for e in before if e.get("vtep") != my_vtep}
    remote_after = {(e["id"],) + key(e) for e in after if e.get("vtep") != my_vtep}
    gone, came = remote_before - remote_after, remote_after - remote_before
    added_local = [e for i, e in sorted(local_after.items()) if i not in local_before]
    actions = []
    if added_local:
        secured = secure(nl, network, added_local, apply)
        if secured is None:
            return None
        actions += secured
    if not (gone or came):
        return actions
    ipr = nl.get(ns)
    br, vx = _links.find(ipr, _overlay_ns.BRIDGE), _links.find(ipr, _overlay_ns.VXLAN)
    if br is None or vx is None:
        return None
    held = {k[1] for k in remote_after} | {e["mac"].lower() for e in local_after.values()}
    addressed = {k[2] for k in remote_after} | {e["ip"] for e in local_after.values()}
    for _id, mac, ip, _vtep in sorted(gone):
        if mac not in held:
            actions.append("anti-spoofing: br0 fdb: remove %s on %s" % (mac, _overlay_ns.VXLAN))
            if apply:
                _quiet(ipr.fdb, "del", ifindex=vx["index"], lladdr=mac, flags=NTF_MASTER)
        if ip not in addressed:
            actions.append("anti-spoofing: br0 neigh: remove %s lladdr %s" % (ip, mac))
            if apply:
                _quiet(ipr.neigh, "del", ifindex=br["index"], dst=ip, lladdr=mac)
    for _id, mac, ip, _vtep in sorted(came):
        actions += ["anti-spoofing: br0 fdb: %s static on %s" % (mac, _overlay_ns.VXLAN),
                    "anti-spoofing: br0 neigh: %s lladdr %s" % (ip, mac)]
        if apply:
            ipr.fdb("replace", ifindex=vx["index"], lladdr=mac, master=br["index"], state=NUD_NOARP)
            ipr.neigh("replace", ifindex=br["index"], dst=ip, lladdr=mac, state=NUD_PERMANENT)
    return actions


# ------------------------------------------------------------------------------ the entry point

def reconcile(nl, network, endpoints, my_vtep, apply):
    """Make this host's part of ``network`` enforce (or, with anti_spoofing off, not enforce) what
    ``endpoints`` (every endpoint record of the network, from any host) say. Returns the actions;
    with apply=False changes nothing. A host without the network's namespace has nothing to do."""
    ns = _overlay_ns.namespace(network)
    if not ns.exists():
        return []
    ipr = nl.get(ns)
    br = _links.find(ipr, _overlay_ns.BRIDGE)
    if br is None:
        return []
    on = enabled(network)
    local = [e for e in endpoints if e.get("vtep") == my_vtep]
    actions = _table_actions(ns, network, local, on, apply)
    port_msgs = {m.get_attr("IFLA_IFNAME"): m for m in _links.ports(ipr, br["index"])}
    actions += _port_actions(ipr, port_msgs, _overlay_ns.VXLAN, on, apply)
    ports = {name: m["index"] for name, m in port_msgs.items()}
    want_fdb, want_neigh = {}, {}
    if on:
        vx_index = ports.get(_overlay_ns.VXLAN)
        local_ids = {e["id"] for e in local}
        for e in endpoints:
            index = ports.get(port_name(e)) if e["id"] in local_ids else vx_index
            if index is not None:
                want_fdb[e["mac"].lower()] = index
            want_neigh[e["ip"]] = e["mac"].lower()
    actions += _fdb_actions(ipr, br["index"], ports, want_fdb, on, apply)
    actions += _neigh_actions(ipr, br["index"], want_neigh, apply)
    return ["anti-spoofing: %s" % a for a in actions]
