# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Garbage collection: what a crash, a removed container or a lost answer left behind.

One pass (``collect``) reads the whole store once and this host's kernel, and finds:

- endpoint records of this host whose interfaces are gone (a container removed without a
  detach): marked ``orphaned_at`` on first sight, released after ``grace`` seconds (a container
  that restarts in the meantime is re-attached by the next run, which clears the mark); a
  runtime's handed-off endpoint (Docker's) is released at once, as no run re-attaches it;
  records marked ``detaching`` by an interrupted detach are finished at once;
- endpoint records whose network is gone;
- address, MAC and gateway claims whose record is gone (after ``grace``: a release that spans
  several transactions leaves claims for a moment);
- change marks (``_keys.Layout.change_marks``) of a network that is gone and holds no record;
- br0 ports (ve-*) and gateway ports (gw-*) on this host that no record owns.

With ``apply=False`` it only reports (overlay_network_info verify); stale overlay namespaces are
_overlay_ns.reconcile's. Every deletion is a delete-cas at the index read, so a key that changed
since is left alone. Callers hold the host lock, so no attach or detach of this host is half-way.
"""
from __future__ import annotations


from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys, _links, _netns, _overlay_ns
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

DEFAULT_GRACE = 120


def _split(layout, key):
    """(kind, network id or host, last segment) of a key under the root."""
    parts = key[len(layout.root):].split("/")
    return (parts[0], parts[1], "/".join(parts[2:])) if len(parts) >= 3 else (parts[0], None, None)


def collect(nl, store, layout, underlay, prefix, grace=DEFAULT_GRACE, apply=True):
    """One pass. Returns findings: [{"kind", "key" or "device", "reason", "action"}]."""
    unreadable = []
    tree = store.get_tree(layout.root, on_bad=lambda key, raw: unreadable.append(key))
    networks, records, claims, change_marks = {}, {}, [], []
    for key, (value, index) in tree.items():
        kind, owner, rest = _split(layout, key)
        if kind == "networks" and isinstance(value, dict) and value.get("id"):
            networks[value["id"]] = (value, index)
        elif kind == "endpoints" and rest:
            records[(owner, rest)] = (key, value, index)
        elif kind in ("ipam", "macs", "gateway-ipam") and rest:
            claims.append((kind, owner, rest, key, value, index))
        elif kind == "changes" and rest:
            change_marks.append((owner, key, value, index))
    findings, deletes, marks = [], [], []

    def found(kind, what, reason, action, key=None):
        findings.append({"kind": kind, "key" if key else "device": what, "reason": reason,
                         "action": action if apply else "would " + action})

    for key in unreadable:  # not ours to judge: reported, never deleted, and the rest still collected
        found("value", key, "its value is not the JSON this collection writes", "leave it alone", key=True)
    local_shorts = set()
    for (net_id, name), (key, value, index) in sorted(records.items()):
        if not isinstance(value, dict):
            continue
        if value.get("host") == underlay.host:
            local_shorts.add((value.get("id") or "")[:10])
        if net_id not in networks:
            found("record", key, "its network is gone", "release", key=True)
            deletes.append((key, index, value))
            continue
        if value.get("host") != underlay.host:
            continue
        network = networks[net_id][0]
        if value.get("detaching"):
            found("record", key, "a detach was interrupted", "finish the detach", key=True)
            _remove_ports(nl, network, value, apply)
            deletes.append((key, index, value))
            continue
        if alive(nl, network, value):
            continue
        if value.get("handoff"):
            # A runtime's endpoint (Docker) never comes back under its id: a restarted container gets a
            # new endpoint. Its port gone (with the host lock held, no attach is half-way) means it is dead.
            found("record", key, "its runtime endpoint is gone (the runtime's delete never arrived)", "release",
                  key=True)
            _remove_ports(nl, network, value, apply)
            deletes.append((key, index, value))
            continue
        if not value.get("orphaned_at") and grace > 0:
            found("record", key, "its interfaces are gone (container removed without a detach?)",
                  "mark orphaned; release after %ds" % grace, key=True)
            marks.append((key, index, value))
        elif grace <= 0 or _keys.age(value["orphaned_at"]) >= grace:
            found("record", key, "its interfaces are gone (since %s)" % value.get("orphaned_at", "now"), "release",
                  key=True)
            _remove_ports(nl, network, value, apply)
            deletes.append((key, index, value))
        else:
            found("record", key, "orphaned since %s" % value["orphaned_at"], "wait for the grace period", key=True)
    released = {d[0] for d in deletes}
    for kind, owner, rest, key, value, index in claims:
        holder = (value or {}).get("endpoint") if isinstance(value, dict) else None
        if kind == "gateway-ipam":
            net_id, _sep, name = (holder or "").partition("/")
        else:
            net_id, name = owner, holder
        rec = records.get((net_id, name))
        rec_value = rec[1] if rec else None
        ok = isinstance(rec_value, dict) and rec[0] not in released and {
            "ipam": rec_value.get("ip"), "macs": rec_value.get("mac"), "gateway-ipam": rec_value.get("gateway_ip")
        }[kind] == rest and (value.get("id") in (None, rec_value.get("id")))
        if ok:
            continue
        if grace > 0 and _keys.age((value or {}).get("at") if isinstance(value, dict) else None) < grace:
            found("claim", key, "no record holds it (yet)", "wait for the grace period", key=True)
            continue
        found("claim", key, "no record holds it", "release", key=True)
        deletes.append((key, index, value))
    # Records of any kind, unreadable values included (a mark deleted while a record of it stays could
    # hide that record from a change pass that never saw the mark).
    with_records = {net_id for (net_id, _name) in records} | {
        owner for kind, owner, rest in (_split(layout, key) for key in unreadable) if kind == "endpoints" and rest}
    for net_id, key, value, index in change_marks:
        # A removal deletes its network's marks last; a late delete of a record sets its mark again.
        # Deleted once no record of that network is left (a record deleted in this pass sets it again:
        # the next pass takes it), with delete-cas: a record written since moved the mark.
        if net_id not in networks and net_id not in with_records:
            found("mark", key, "its network is gone", "release", key=True)
            deletes.append((key, index, value))
    findings += _stray_ports(nl, networks, local_shorts, prefix, apply)
    if apply:
        ops = [_consul.op_cas(k, dict(v, orphaned_at=_keys.now()), i) for k, i, v in marks]
        ops += [_consul.op_delete_cas(k, i) for k, i, _v in deletes]
        committed = True
        for part in store.batches(ops):
            try:
                store.commit(part)
            except _consul.TxnConflict as e:
                committed = False  # something changed meanwhile: the next pass looks again
                keys = [part[i]["KV"]["Key"] for i, _what in e.errors if isinstance(i, int) and i < len(part)]
                findings.append({"kind": "store", "key": ", ".join(keys) or "a key of this batch",
                                 "reason": "changed since this pass read it: nothing of this batch was released",
                                 "action": "look again"})
        if committed:
            _forget_released(nl, layout, underlay, networks, records, deletes)
    return findings


def _forget_released(nl, layout, underlay, networks, records, deletes):
    """The anti-spoofing tables of the networks whose local records this pass released still hold
    their MACs and addresses: reconcile them with the records that remain."""
    from ansible_collections.overlay.vxlan.plugins.module_utils import _antispoof
    gone = {key for key, _i, _v in deletes}
    touched = {_split(layout, key)[1] for key, _i, value in deletes
               if isinstance(value, dict) and value.get("vtep") == underlay.vtep and value.get("ip")}
    for net_id in sorted(touched):
        if net_id in networks:
            remaining = [value for (nid, _name), (key, value, _i) in records.items()
                         if nid == net_id and key not in gone and isinstance(value, dict)]
            _antispoof.reconcile(nl, networks[net_id][0], remaining, underlay.vtep, True)


def alive(nl, network, record):
    ns = _overlay_ns.namespace(network)
    if not ns.exists() or not _netns.is_netns(ns.path):
        return False
    return _links.find(nl.get(ns), "ve-" + record["id"][:10]) is not None


def _remove_ports(nl, network, record, apply):
    if not apply:
        return
    from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint
    _endpoint._remove_kernel(nl, network, record, apply=True)


def _stray_ports(nl, networks, local_shorts, prefix, apply):
    """ve-* ports in this store's overlay namespaces and gw-* ports on the host that no record of
    this host owns. gw-* ports are left alone while another store's namespaces live here."""
    findings = []
    owned = _overlay_ns.owned(nl)
    for ns_name, (_name, net_id, pfx) in sorted(owned.items()):
        if pfx != prefix or net_id not in networks:
            continue
        ns = _netns.resolve(ns_name, "name")
        ipr = nl.get(ns)
        for msg in ipr.get_links():
            name = msg.get("IFLA_IFNAME") or ""
            if name.startswith("ve-") and name[3:] not in local_shorts:
                findings.append({"kind": "port", "device": "%s in %s" % (name, ns_name), "reason": "no record owns it",
                                 "action": "delete" if apply else "would delete"})
                if apply:
                    _links.delete(ipr, msg)
    if any(pfx != prefix for _n, _i, pfx in owned.values()):
        return findings
    host = nl.get(_netns.resolve(None, None))
    for msg in host.get_links():
        name = msg.get("IFLA_IFNAME") or ""
        if name.startswith("gw-") and _links.kind(msg) == "veth" and name[3:] not in local_shorts:
            findings.append({"kind": "port", "device": "%s in the host namespace" % name,
                             "reason": "no record owns it", "action": "delete" if apply else "would delete"})
            if apply:
                try:
                    _links.delete(host, msg)
                except OverlayError:
                    pass
    return findings
