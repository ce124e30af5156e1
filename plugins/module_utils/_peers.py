# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Remote endpoints on vxlan0: a static FDB entry (MAC -> remote VTEP) and a permanent neighbour
entry (IP -> MAC) for each, from the store's endpoint records; stale ones are removed.
Local endpoints are left to br0's own learning, as Docker does, unless the network has anti-spoofing
(the default): then _antispoof programs br0's FDB and neighbours for every endpoint and br0 learns nothing."""
from __future__ import annotations

import socket

try:
    from pyroute2.netlink.rtnl import ndmsg
    NUD_PERMANENT = ndmsg.states["permanent"]
except ImportError:  # reported by _netns.require_pyroute2
    NUD_PERMANENT = 0x80
NTF_SELF = 0x02


def desired(endpoints, my_vtep):
    """{mac: (ip, vtep)} for every endpoint that lives on another host."""
    return {ep["mac"]: (ep["ip"], ep["vtep"]) for ep in endpoints if ep["vtep"] != my_vtep}


class Index:
    """``desired()`` kept up to date one endpoint record at a time (the agent between its full passes):
    a change costs what it touches, not the number of endpoints in the network.

    ``records``: {key: endpoint record}; as in ``desired()`` over the records sorted by key, the
    last key wins when two records name the same MAC (which the MAC claims prevent)."""

    def __init__(self, records, my_vtep):
        self.my_vtep = my_vtep
        self.macs = {}  # mac -> {key: (ip, vtep)} of the endpoints on other hosts
        for key, record in records.items():
            self._add(key, record)

    def _add(self, key, record):
        if record["vtep"] != self.my_vtep:
            self.macs.setdefault(record["mac"], {})[key] = (record["ip"], record["vtep"])

    def _remove(self, key, record):
        held = self.macs.get(record["mac"])
        if held is not None:
            held.pop(key, None)
            if not held:
                del self.macs[record["mac"]]

    def want(self, mac):
        held = self.macs.get(mac)
        return held[max(held)] if held else None

    def apply(self, changes):
        """Take in ``changes`` ({key: (record before or None, record after or None)}). Returns
        (have, want): ``desired()`` before and after, for the MACs the changes touched only: what
        ``sync(..., want, have=have)`` needs to write just the difference."""
        touched = {r["mac"] for pair in changes.values() for r in pair if r is not None}
        have = {mac: self.want(mac) for mac in touched}
        for key, (before, after) in changes.items():
            if before is not None:
                self._remove(key, before)
            if after is not None:
                self._add(key, after)
        want = {mac: self.want(mac) for mac in touched}
        return ({m: v for m, v in have.items() if v is not None}, {m: v for m, v in want.items() if v is not None})

    def desired(self):
        return {mac: self.want(mac) for mac in self.macs}


def current(ipr, vx_index):
    fdb = {}
    for msg in ipr.fdb("dump", ifindex=vx_index):
        dst = msg.get("NDA_DST")
        # Only our own static "self" entries; br0's learned entries carry NDA_MASTER instead.
        if msg["ifindex"] == vx_index and dst and msg["flags"] & NTF_SELF:
            fdb.setdefault(msg.get("NDA_LLADDR"), set()).add(dst)
    neigh = {}
    for msg in ipr.get_neighbours(family=socket.AF_INET, ifindex=vx_index):
        if msg["state"] & NUD_PERMANENT:
            neigh[msg.get("NDA_DST")] = msg.get("NDA_LLADDR")
    return fdb, neigh


def _as_current(have):
    """``desired()`` of an earlier pass as current() would read it back from the kernel."""
    fdb, neigh = {}, {}
    for mac, (ip, vtep) in have.items():
        fdb.setdefault(mac, set()).add(vtep)
        neigh[ip] = mac
    return fdb, neigh


def sync(ipr, vx_index, want, apply, have=None):
    """Make vxlan0's FDB and neighbour tables match ``want``. Returns the actions.

    ``have``: what an earlier sync of this same vxlan0 made them (its ``want``): then only the
    difference is written, without dumping the tables (the agent between its full passes)."""
    fdb, neigh = current(ipr, vx_index) if have is None else _as_current(have)
    want_neigh = {ip: mac for mac, (ip, vtep) in want.items()}
    actions = []
    for mac, dsts in sorted(fdb.items()):
        for dst in sorted(dsts):
            if want.get(mac, (None, None))[1] != dst:
                actions.append("fdb: remove %s dst %s" % (mac, dst))
                if apply:
                    _gone_ok(ipr.fdb, "del", ifindex=vx_index, lladdr=mac, dst=dst)
    for ip, mac in sorted(neigh.items()):
        if want_neigh.get(ip) != mac:
            actions.append("neigh: remove %s lladdr %s" % (ip, mac))
            if apply:
                _gone_ok(ipr.neigh, "del", ifindex=vx_index, dst=ip, lladdr=mac)
    for mac, (ip, vtep) in sorted(want.items()):
        if vtep not in fdb.get(mac, ()):
            actions.append("fdb: add %s dst %s" % (mac, vtep))
            if apply:
                ipr.fdb("append", ifindex=vx_index, lladdr=mac, dst=vtep, state=NUD_PERMANENT)
        if neigh.get(ip) != mac:
            actions.append("neigh: add %s lladdr %s" % (ip, mac))
            if apply:
                ipr.neigh("replace", ifindex=vx_index, dst=ip, lladdr=mac, state=NUD_PERMANENT)
    return actions


def _gone_ok(call, *args, **kwargs):
    """A delete of an entry that is already gone (another writer was first) is done."""
    from ansible_collections.overlay.vxlan.plugins.module_utils._netns import NetlinkError
    try:
        call(*args, **kwargs)
    except NetlinkError as e:
        if e.code not in (2, 19):  # ENOENT, ENODEV
            raise


def table(ipr, vx_index):
    """The entries as a module returns them."""
    fdb, neigh = current(ipr, vx_index)
    return {"fdb": sorted("%s dst %s" % (mac, d) for mac, ds in fdb.items() for d in ds),
            "neighbours": sorted("%s lladdr %s" % (ip, mac) for ip, mac in neigh.items())}
