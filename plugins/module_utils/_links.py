# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Links as they are and as they should be: read, compare after normalising, apply only the difference.

Every ``ensure_*`` function takes ``apply``: with ``apply=False`` (check mode) it only reports
the actions it would take. Actions are short strings that say what changed and where.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import random

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError
from ansible_collections.overlay.vxlan.plugins.module_utils._netns import NetlinkError, same_namespace

IFF_UP = 0x1


class LinkSpec:
    """The desired state of one link. ``None`` means "leave as it is"."""

    def __init__(self, ns, name, field, mtu=None, mac=None, addresses=None, master=None, up=True):
        self.ns = ns
        self.name = name
        self.field = field  # option prefix for errors, e.g. "peer"
        self.mtu = mtu
        self.mac = mac
        self.addresses = addresses  # list of ipaddress interfaces, or None
        self.master = master
        self.up = up

    def f(self, option):
        return "%s.%s" % (self.field, option) if self.field else option


# ---------------------------------------------------------------------------- reading

def find(ipr, name):
    """The link message for ``name`` or None."""
    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise
    return found[0] if found else None


def by_index(ipr, index):
    try:
        return ipr.link("get", index=index)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def ports(ipr, bridge_index):
    """The link messages of the ports of the bridge with index ``bridge_index`` (one dump of the
    namespace's links, which a run's snapshot answers)."""
    return [m for m in ipr.get_links() if m.get_attr("IFLA_MASTER") == bridge_index]


def kind(msg):
    info = msg.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def info_data(msg):
    info = msg.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info else None
    return data or {}


def addresses(ipr, index):
    """Addresses of a link as ip_interface objects, minus the kernel's own IPv6 link-local ones."""
    result = []
    for msg in ipr.get_addr(index=index):
        ip = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        iface = ipaddress.ip_interface("%s/%d" % (ip, msg["prefixlen"]))
        if iface.version == 6 and iface.ip.is_link_local:
            continue
        result.append(iface)
    return sorted(result, key=lambda i: (i.version, int(i.ip)))


def view(ipr, msg, namespace_label, known_addresses=None):
    """What a module returns about a link: plain, JSON-friendly values. ``known_addresses``: the
    link's addresses when the caller has just made them so (ensure_attributes with them as the
    spec), which spares a dump of the namespace's addresses."""
    if msg is None:
        return None
    master = msg.get("IFLA_MASTER")
    master_msg = by_index(ipr, master) if master else None
    return {
        "namespace": namespace_label,
        "name": msg.get("IFLA_IFNAME"),
        "ifindex": msg["index"],
        "kind": kind(msg),
        "mac": msg.get("IFLA_ADDRESS"),
        "mtu": msg.get("IFLA_MTU"),
        "state": "up" if msg["flags"] & IFF_UP else "down",
        "master": master_msg.get("IFLA_IFNAME") if master_msg else None,
        "addresses": [str(a) for a in (addresses(ipr, msg["index"]) if known_addresses is None else
                                       sorted(known_addresses, key=lambda i: (i.version, int(i.ip))))],
    }


def comparable(v):
    """A view without the fields that change on every re-creation, for diff mode."""
    if v is None:
        return None
    return {k: v[k] for k in v if k != "ifindex"}


def project(before, spec, namespace_label, kind_name):
    """The view a link would have after ``ensure_attributes``: used in check mode."""
    after = dict(before) if before else {
        "namespace": namespace_label, "name": spec.name, "ifindex": None, "kind": kind_name,
        "mac": None, "mtu": None, "state": "down", "master": None, "addresses": []}
    if spec.mtu is not None:
        after["mtu"] = spec.mtu
    if spec.mac is not None:
        after["mac"] = spec.mac
    if spec.master is not None:
        after["master"] = spec.master or None
    if spec.addresses is not None:
        after["addresses"] = [str(a) for a in spec.addresses]
    if spec.up is not None:
        after["state"] = "up" if spec.up else "down"
    return after


# ---------------------------------------------------------------------------- changing

def bridge_index(ipr, name, field):
    """The index of bridge ``name``; refuses another kind of device. Remembered by the run's socket
    (_netns.Snapshot.bridges) until a link is deleted, renamed or moved: a run that builds many
    ports on one bridge looks it up once."""
    known = getattr(ipr, "bridges", None)
    if isinstance(known, dict) and name in known:
        return known[name]
    msg = find(ipr, name)
    if msg is None:
        raise OverlayError("bridge %s does not exist" % name, field)
    if kind(msg) != "bridge":
        raise OverlayError("%s is a %s device, not a bridge" % (name, kind(msg) or "plain"), field)
    if isinstance(known, dict):
        known[name] = msg["index"]
    return msg["index"]


def ensure_attributes(ipr, msg, spec, apply, fresh=False):
    """Bring an existing link's MTU, MAC, master, addresses and up/down state to ``spec``.

    ``fresh``: the link was created by this run a moment ago, so it has no addresses yet (the
    kernel's IPv6 link-local one is not counted) and they need not be read."""
    return _ensure(ipr, msg, spec, apply, fresh)[0]


def _ensure(ipr, msg, spec, apply, fresh=False, master_index=None):
    """ensure_attributes, and whether ``msg`` is stale after it: (actions, relink).

    A changed MTU, MAC or master makes the message stale (read the link again for it); an up/down
    change is written into ``msg["flags"]`` and addresses are not in a link message, so neither
    needs that read. ``master_index``: the bridge's index when the caller just looked it up (it
    created the link on it), which spares another lookup by name."""
    actions = []
    relink = False
    index = msg["index"] if msg is not None else None
    where = "%s in %s" % (spec.name, spec.ns.describe())

    def act(text, **kwargs):
        actions.append("%s: %s" % (where, text))
        if apply:
            ipr.link("set", index=index, **kwargs)

    if spec.mtu is not None and msg.get("IFLA_MTU") != spec.mtu:
        act("mtu %s -> %s" % (msg.get("IFLA_MTU"), spec.mtu), mtu=spec.mtu)
        relink = True
    if spec.mac is not None and (msg.get("IFLA_ADDRESS") or "").lower() != spec.mac:
        act("mac %s -> %s" % (msg.get("IFLA_ADDRESS"), spec.mac), address=spec.mac)
        relink = True
    if spec.master is not None:
        have = msg.get("IFLA_MASTER") or 0
        want = master_index if (spec.master and master_index is not None) else (
            bridge_index(ipr, spec.master, spec.f("master")) if spec.master else 0)
        if want != have:
            act("master -> %s" % (spec.master or "none"), master=want)
            relink = True
    if spec.addresses is not None:
        have = set() if fresh else set(addresses(ipr, index))
        want = set(spec.addresses)
        for iface in sorted(have - want, key=str):
            actions.append("%s: remove address %s" % (where, iface))
            if apply:
                _del_address(ipr, index, iface)
        if apply and have - want:
            # Removing a primary IPv4 address takes the secondaries of its subnet with it.
            have = set(addresses(ipr, index))
        for iface in sorted(want - have, key=str):
            actions.append("%s: add address %s" % (where, iface))
            if apply:
                _add_address(ipr, index, iface)
    if spec.up is not None:
        is_up = bool(msg["flags"] & IFF_UP)
        if is_up != spec.up:
            act("set %s" % ("up" if spec.up else "down"), state="up" if spec.up else "down")
            if apply:
                msg["flags"] = (msg["flags"] | IFF_UP) if spec.up else (msg["flags"] & ~IFF_UP)
    return actions, relink


def _del_address(ipr, index, iface):
    try:
        ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    except NetlinkError as e:
        if e.code != errno.EADDRNOTAVAIL:  # already gone with its primary address
            raise


def _add_address(ipr, index, iface):
    kwargs = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 4 and iface.network.prefixlen < 31:
        kwargs["broadcast"] = str(iface.network.broadcast_address)
    ipr.addr("add", **kwargs)


def delete(ipr, msg):
    """Delete a link, tolerating one that vanished meanwhile (a veth end goes with its peer)."""
    try:
        ipr.link("del", index=msg["index"])
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise


def delete_many(ipr, msgs):
    """Delete several links of one namespace in one request. One RTM_DELLINK per link waits for
    the kernel's teardown each time (about 20 ms per veth on an idle machine); a group delete
    tears the whole batch down with one wait. The links are put in a group no link of the
    namespace is in (group ids are per link and nothing else reads them), then that group is
    deleted, so nothing but these links can go. Links that vanished meanwhile are skipped."""
    if len(msgs) < 2:
        for msg in msgs:
            delete(ipr, msg)
        return
    used = {m.get("IFLA_GROUP") for m in ipr.get_links()}
    group = random.randint(1 << 24, (1 << 31) - 1)
    while group in used:
        group = random.randint(1 << 24, (1 << 31) - 1)
    for msg in msgs:
        try:
            ipr.link("set", index=msg["index"], group=group)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise
    try:
        ipr.link("del", group=group)
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise


class NamespaceFd:
    """An open fd for a namespace, as IFLA_NET_NS_FD wants; the host's is our own."""

    def __init__(self, ns):
        self.path = ns.path or "/proc/self/ns/net"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY)
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)


# ---------------------------------------------------------------------------- veth pairs

def veth_end(ipr, spec):
    """The veth named ``spec.name`` or None; refuses any other kind of device under that name."""
    msg = find(ipr, spec.name)
    if msg is not None and kind(msg) != "veth":
        raise OverlayError(
            "a %s device named %s already exists in %s; it is not a veth end and will not be replaced"
            % (kind(msg) or "plain", spec.name, spec.ns.describe()), spec.f("name"))
    return msg


def veth_pair_state(nl, a, b):
    """Read both ends; refuse non-veth devices in the way. Returns (msg_a, msg_b, paired)."""
    la, lb = veth_end(nl.get(a.ns), a), veth_end(nl.get(b.ns), b)
    return la, lb, is_pair(nl, a, la, b, lb)


NETNSID_NONE = 0xFFFFFFFF  # NETNSA_NSID_NOT_ASSIGNED as the kernel reports it


def _netnsid(nl, ns, other):
    """The id under which ``ns`` knows ``other`` (None when it has none). An assigned id stays
    while both namespaces exist, so the Netlink keeps it until the run writes (a new veth may
    assign one)."""
    key = (ns.path, other.path)
    if key in nl.netnsids:
        return nl.netnsids[key]
    with NamespaceFd(other) as fd:
        info = nl.get(ns).get_netnsid(fd=fd) or {}
    nsid = info.get("nsid")
    nsid = None if nsid in (None, NETNSID_NONE, -1) else nsid
    if nsid is not None:
        nl.netnsids[key] = nsid
    return nsid


def is_pair(nl, a, la, b, lb):
    """True when the veths ``la`` (of spec ``a``) and ``lb`` (of ``b``) are each other's peer.

    Each names the other's ifindex as its link; ifindexes are per namespace, so across
    namespaces each end's IFLA_LINK_NETNSID must also be the id its namespace gives the
    other's (within one namespace there is none). Indexes alone match by chance easily:
    every fresh namespace numbers its first device 2. One direction's id is enough: a veth has
    exactly one peer, so when ``la``'s peer is index ``lb`` in ``b``'s namespace, that is ``lb``,
    and ``lb``'s peer is ``la``.
    """
    if (la is None or lb is None
            or la.get("IFLA_LINK") != lb["index"] or lb.get("IFLA_LINK") != la["index"]):
        return False
    if same_namespace(a.ns, b.ns):
        return la.get("IFLA_LINK_NETNSID") is None and lb.get("IFLA_LINK_NETNSID") is None
    return (la.get("IFLA_LINK_NETNSID") is not None and lb.get("IFLA_LINK_NETNSID") is not None
            and la.get("IFLA_LINK_NETNSID") == _netnsid(nl, a.ns, b.ns))


def ensure_veth(nl, a, b, apply):
    """A veth pair a<->b with both ends' attributes as specified. Returns (actions, msg_a, msg_b),
    the messages as the ends are after the call.

    A pair whose ends no longer match (one end renamed, moved to another namespace, or a
    stray veth under one of the names) is deleted and built again. A new pair is read once after
    its creation: what creation could not set (the peer's up state, addresses) is written
    afterwards without making those messages stale (see _ensure), so a run that builds many
    endpoints makes few requests per pair.
    """
    ipr_a, ipr_b = nl.get(a.ns), nl.get(b.ns)
    la, lb, paired = veth_pair_state(nl, a, b)
    actions = []
    if not paired:
        for spec, msg in ((a, la), (b, lb)):
            if msg is not None:
                actions.append("%s in %s: delete (not the peer of %s)" % (
                    spec.name, spec.ns.describe(), (b if spec is a else a).name))
        actions.append("create veth %s (%s) <-> %s (%s)" % (a.name, a.ns.describe(), b.name, b.ns.describe()))
        if not apply:
            return actions + _would_set(a) + _would_set(b), None, None
        for ipr, msg in ((ipr_a, la), (ipr_b, lb)):
            if msg is not None:
                delete(ipr, msg)
        masters = _create_veth(nl, a, b)
        la, lb = find(ipr_a, a.name), find(ipr_b, b.name)
        if la is None or lb is None:
            raise OverlayError("the kernel did not create veth %s <-> %s" % (a.name, b.name))
        relink_a = _ensure(ipr_a, la, a, True, fresh=True, master_index=masters.get(id(a)))[1]
        relink_b = _ensure(ipr_b, lb, b, True, fresh=True, master_index=masters.get(id(b)))[1]
        return actions, find(ipr_a, a.name) if relink_a else la, find(ipr_b, b.name) if relink_b else lb
    more_a, relink_a = _ensure(ipr_a, la, a, apply)
    more_b, relink_b = _ensure(ipr_b, lb, b, apply)
    actions += more_a + more_b
    if apply and relink_a:
        la = find(ipr_a, a.name)
    if apply and relink_b:
        lb = find(ipr_b, b.name)
    return actions, la, lb


def _create_veth(nl, a, b):
    """Create the pair with as much of both specs as one RTM_NEWLINK takes: names, namespaces,
    MTUs and MACs of both ends, and master and up state of the end created in the socket's own
    namespace (the kernel applies neither to the peer). That end is the one with a master, so a
    bridge port is on its bridge from the start. _ensure then sets what is left (the peer's up
    state, addresses) and repairs anything the kernel did not take. Returns {id(spec): index of
    the bridge it was created on}."""
    main, peer = (b, a) if b.master and not a.master else (a, b)
    kwargs = dict(_created_attributes(main), kind="veth")
    masters = {}
    if main.master:
        kwargs["master"] = masters[id(main)] = bridge_index(nl.get(main.ns), main.master, main.f("master"))
    if main.up:
        kwargs["state"] = "up"
    with NamespaceFd(peer.ns) as fd:
        nl.get(main.ns).link("add", peer=dict(_created_attributes(peer), net_ns_fd=fd), **kwargs)
    return masters


def _created_attributes(spec):
    attrs = {"ifname": spec.name}
    if spec.mtu is not None:
        attrs["mtu"] = spec.mtu
    if spec.mac is not None:
        attrs["address"] = spec.mac
    return attrs


def _would_set(spec):
    # Check mode on a pair that does not exist yet: list what creation would set.
    where = "%s in %s" % (spec.name, spec.ns.describe())
    out = []
    if spec.mtu is not None:
        out.append("%s: mtu -> %s" % (where, spec.mtu))
    if spec.mac is not None:
        out.append("%s: mac -> %s" % (where, spec.mac))
    if spec.master:
        out.append("%s: master -> %s" % (where, spec.master))
    for iface in spec.addresses or ():
        out.append("%s: add address %s" % (where, iface))
    return out


def remove_veth(nl, a, b, apply):
    """Remove the pair. Devices under either name that are not veths are left alone, and an end
    whose namespace is gone went with it, so only existing namespaces are looked at."""
    found = []
    for spec in (a, b):
        msg = find(nl.get(spec.ns), spec.name) if spec.ns.exists() else None
        if msg is not None and kind(msg) == "veth":
            found.append((spec, msg))
    if len(found) == 2 and is_pair(nl, a, found[0][1], b, found[1][1]):
        found = found[:1]  # deleting one end of a pair deletes the other
    actions = []
    for spec, msg in found:
        actions.append("%s in %s: delete" % (spec.name, spec.ns.describe()))
        if apply:
            delete(nl.get(spec.ns), msg)
    return actions
