# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's firewall for the overlay, in nftables tables of our own (see docs/firewall.md).

``inet overlay_vxlan``: VXLAN (UDP to a port in ``@ports``) is dropped at prerouting, raw priority,
unless its source is a VTEP registered in Consul (``@vteps``), and always when it comes from a
gateway bridge or a gateway subnet (an endpoint's datagram, before MASQUERADE gives it this host's
VTEP address). A drop at raw priority is final: an admin's ``iptables -I INPUT ... -j ACCEPT``
lives in another table at a later priority and cannot reopen it (CVE-2023-28840's class).

``inet overlay_gateway``: no forwarding from a gateway bridge back into it (Docker's
``-i docker_gwbridge -o docker_gwbridge -j DROP``), and, with ``gateway_block_host``, nothing new
from a gateway bridge to the host's own addresses. Both at ``filter - 10``, before iptables' chains.

Everything is applied with ``nft -f -`` in one transaction; a refusal raises OverlayError, so a run
that cannot install the rules fails before it creates a vxlan device (CVE-2023-28841's class).
"""
from __future__ import annotations

import ipaddress

from ansible_collections.overlay.vxlan.plugins.module_utils import _nft

VXLAN_TABLE = "overlay_vxlan"
GATEWAY_TABLE = "overlay_gateway"
DEFAULT_PORT = 4789

_VXLAN_RULES = [
    ("from-gateway-bridge", "iifname @gateways udp dport @ports drop"),
    ("from-gateway-subnet", "ip saddr @gateway_subnets udp dport @ports drop"),
    ("unregistered-vtep4", "meta nfproto ipv4 udp dport @ports ip saddr != @vteps drop"),
    ("unregistered-vtep6", "meta nfproto ipv6 udp dport @ports ip6 saddr != @vteps6 drop"),
]


def _elements(items):
    return ", ".join('"%s"' % i if isinstance(i, str) and not _is_addr(i) else str(i) for i in items)


def _is_addr(text):
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def _table(family, name):
    """{"sets": {name: set of members as strings}, "rules": {chain: [comments]}} or None."""
    try:
        objs = _nft.ruleset(None, family, name)
    except ValueError:  # nft printed something that is not JSON: a table we cannot read is not ours
        return {"sets": {}, "rules": {}, "chains": set()}
    if not objs:
        return None
    out = {"sets": {}, "rules": {}, "chains": set()}
    for obj in objs:
        if "set" in obj:
            s = obj["set"]
            out["sets"][s["name"]] = set(_member(e) for e in s.get("elem", ()))
        elif "chain" in obj:
            out["chains"].add(obj["chain"]["name"])
        elif "rule" in obj:
            r = obj["rule"]
            out["rules"].setdefault(r["chain"], []).append(r.get("comment"))
    return out


def _member(e):
    if isinstance(e, dict) and "prefix" in e:
        return "%s/%s" % (e["prefix"]["addr"], e["prefix"]["len"])
    if isinstance(e, dict) and "elem" in e:
        return _member(e["elem"]["val"])
    return str(e)


# ----------------------------------------------------------------------------------- VXLAN table

def _vxlan_script(sets):
    lines = ["table inet %s {}" % VXLAN_TABLE, "delete table inet %s" % VXLAN_TABLE,
             "table inet %s {" % VXLAN_TABLE]
    kinds = {"ports": "inet_service", "vteps": "ipv4_addr", "vteps6": "ipv6_addr", "gateways": "ifname",
             "gateway_subnets": "ipv4_addr; flags interval"}
    for name, kind in kinds.items():
        members = sorted(sets.get(name, ()), key=_sort_key)
        lines.append("  set %s { type %s;%s }" % (
            name, kind, (" elements = { %s };" % _elements(members)) if members else ""))
    lines.append("  chain prerouting {")
    lines.append("    type filter hook prerouting priority raw; policy accept;")
    for comment, rule in _VXLAN_RULES:
        lines.append('    %s comment "%s"' % (rule, comment))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _sort_key(v):
    return (0, int(v), "") if str(v).isdigit() else (1, 0, str(v))


def _vxlan_ok(have):
    return (have is not None and "prerouting" in have["chains"]
            and have["rules"].get("prerouting") == [c for c, r in _VXLAN_RULES]
            and all(k in have["sets"] for k in ("ports", "vteps", "vteps6", "gateways", "gateway_subnets")))


def _vxlan_apply(want, have, apply, what):
    """Install the table with ``want`` sets when it differs from ``have``. Returns actions."""
    actions = []
    if not _vxlan_ok(have):
        actions.append("nft: install table inet %s (VXLAN only from registered VTEPs)" % VXLAN_TABLE)
    old = have["sets"] if have else {}
    for name in sorted(want):
        added, removed = want[name] - old.get(name, set()), old.get(name, set()) - want[name]
        for m in sorted(added, key=_sort_key):
            actions.append("nft: %s add %s" % (name, m))
        for m in sorted(removed, key=_sort_key):
            actions.append("nft: %s remove %s" % (name, m))
    if actions and apply:
        _nft.apply(None, _vxlan_script(want), "the VXLAN firewall (table inet %s)" % VXLAN_TABLE)
    return actions


def _current_sets(have):
    sets = {k: set() for k in ("ports", "vteps", "vteps6", "gateways", "gateway_subnets")}
    if have:
        for k in sets:
            sets[k] = set(have["sets"].get(k, ()))
    return sets


def guard(port, apply):
    """Make sure the VXLAN firewall is in place and covers ``port``, before a vxlan device on that
    port exists. Installs it (with no VTEP accepted yet: fail closed) when missing. Raises
    OverlayError when nftables refuses. Returns actions."""
    have = _table("inet", VXLAN_TABLE)
    want = _current_sets(have)
    want["ports"] |= {str(DEFAULT_PORT), str(int(port))}
    return _vxlan_apply(want, have, apply, "guard")


def registered(networks, hosts, endpoints, own_vtep=None):
    """(vteps, ports) from Consul's records: every host record's and endpoint record's vtep, and
    every network's port."""
    vteps = {r.get("vtep") for r in list(hosts) + list(endpoints) if isinstance(r, dict) and r.get("vtep")}
    if own_vtep:
        vteps.add(own_vtep)
    ports = {int(n["port"]) for n in networks if isinstance(n, dict) and isinstance(n.get("port"), int)}
    return vteps, ports


def sync(vteps, ports, apply):
    """Set ``@vteps`` to exactly ``vteps`` (registered VTEPs); add ``ports`` to ``@ports`` (never
    removed: removing only opens). Returns actions ("nft: vteps add 10.0.0.11", ...)."""
    have = _table("inet", VXLAN_TABLE)
    want = _current_sets(have)
    v4, v6 = set(), set()
    for v in vteps:
        try:
            addr = ipaddress.ip_address(v)
        except ValueError:
            continue  # a malformed record is not a reason to open anything
        (v4 if addr.version == 4 else v6).add(str(addr))
    want["vteps"], want["vteps6"] = v4, v6
    want["ports"] |= {str(DEFAULT_PORT)} | {str(p) for p in ports}
    return _vxlan_apply(want, have, apply, "sync")


def sync_store(store, layout, own_vtep, apply):
    """sync() from a fresh read of Consul (for module runs). A value that is not JSON is left out:
    it can only keep a VTEP out of the set (fail closed), and one junk key must not stop every run."""
    tree = store.get_tree(layout.root, on_bad=lambda key, raw: None)
    return sync_tree(tree, layout, own_vtep, apply)


def registered_tree(tree, layout, own_vtep=None):
    """registered() from a tree already read ({key: (value, index)}, as _consul.get_tree returns)."""
    values = {k: v for k, (v, index) in tree.items() if v}
    networks = [v for k, v in values.items() if k.startswith(layout.networks())]
    hosts = [v for k, v in values.items() if k.startswith(layout.root + "hosts/")]
    endpoints = [v for k, v in values.items() if k.startswith(layout.root + "endpoints/")]
    return registered(networks, hosts, endpoints, own_vtep)


def sync_tree(tree, layout, own_vtep=None, apply=True):
    """sync() from a tree already read."""
    return sync(*registered_tree(tree, layout, own_vtep), apply)


def members():
    """The VXLAN table's sets as they are ({} when it is missing), for diffs and verify."""
    have = _table("inet", VXLAN_TABLE)
    return {k: sorted(v, key=_sort_key) for k, v in _current_sets(have).items()} if have else {}


# --------------------------------------------------------------------------------- gateway table

def _gateway_script(bridges, block_host):
    lines = ["table inet %s {}" % GATEWAY_TABLE, "delete table inet %s" % GATEWAY_TABLE,
             "table inet %s {" % GATEWAY_TABLE]
    lines.append("  set bridges { type ifname;%s }" % (
        (" elements = { %s };" % _elements(sorted(bridges))) if bridges else ""))
    lines.append("  set block_host { type ifname;%s }" % (
        (" elements = { %s };" % _elements(sorted(block_host))) if block_host else ""))
    lines += ["  chain forward {", "    type filter hook forward priority filter - 10; policy accept;",
              '    iifname @bridges oifname @bridges drop comment "no-hairpin"', "  }",
              "  chain input {", "    type filter hook input priority filter - 10; policy accept;",
              '    iifname @block_host ct state established,related accept comment "replies"',
              '    iifname @block_host drop comment "block-host"', "  }", "}"]
    return "\n".join(lines) + "\n"


def gateway_blocked(name):
    """Whether bridge ``name`` is in the gateway table's block_host set now (for diffs)."""
    have = _table("inet", GATEWAY_TABLE)
    return bool(have) and name in set(have["sets"].get("block_host", ()))


def ensure_gateway(gw, block_host, apply):
    """The gateway bridge ``gw`` (a _gateway.Gateway): no hairpin forwarding; host addresses blocked
    from it when ``block_host``; its name and subnet added to the VXLAN table's gateway sets (so
    VXLAN from it is dropped even with a forged VTEP source). Returns actions."""
    actions = []
    vx = _table("inet", VXLAN_TABLE)
    want = _current_sets(vx)
    want["gateways"].add(gw.name)
    want["gateway_subnets"].add(str(gw.subnet))
    want["ports"].add(str(DEFAULT_PORT))
    actions += _vxlan_apply(want, vx, apply, "gateway")

    have = _table("inet", GATEWAY_TABLE)
    bridges = set(have["sets"].get("bridges", ())) if have else set()
    blocked = set(have["sets"].get("block_host", ())) if have else set()
    want_bridges = bridges | {gw.name}
    want_blocked = (blocked | {gw.name}) if block_host else (blocked - {gw.name})
    ok = (have is not None and have["rules"].get("forward") == ["no-hairpin"]
          and have["rules"].get("input") == ["replies", "block-host"])
    if not ok:
        actions.append("nft: install table inet %s (no forwarding from %s back into it)" % (GATEWAY_TABLE, gw.name))
    if gw.name not in bridges:
        actions.append("nft: drop forwarding from %s back into it" % gw.name)
    if want_blocked != blocked:
        actions.append("nft: %s the host's own addresses from %s" % ("block" if block_host else "unblock", gw.name))
    if actions and apply and (not ok or want_bridges != bridges or want_blocked != blocked):
        _nft.apply(None, _gateway_script(want_bridges, want_blocked),
                   "the gateway firewall (table inet %s)" % GATEWAY_TABLE)
    return actions
