# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The overlay_network module's work: the global record in Consul, then this host's part, then peers."""
from __future__ import annotations


from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _allocate, _antispoof, _consul, _netns, _overlay_ns, _peers, _keys, _underlay, _validate)
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

DEFAULT_PORT = 4789


class Request:
    """The module's options, validated; nothing here touches the kernel or Consul."""

    def __init__(self, params):
        self.name = _validate.object_name(params["name"], "name")
        self.state = params["state"]
        self.subnet = _validate.subnet(params["subnet"], "subnet") if params.get("subnet") else None
        self.gateway = None
        if params.get("gateway"):
            if self.subnet is None:
                raise OverlayError("needs subnet to be given too", "gateway")
            self.gateway = _validate.ipv4_in(params["gateway"], self.subnet, "gateway")
        self.vni = _validate.int_range(params.get("vni"), 1, _allocate.VNI_LAST, "vni", "VNI")
        self.port = _validate.int_range(params.get("port"), 1, 65535, "port", "UDP port")
        self.mtu = _validate.mtu(params.get("mtu"), "mtu")
        self.internal = params.get("internal")
        self.anti_spoofing = params.get("anti_spoofing")  # None: not given (a new network gets True)
        self.force = params.get("force", False)


def differences(record, req):
    """Cluster-wide settings given in the task that disagree with the stored network."""
    wrong = []
    checks = (("subnet", req.subnet and str(req.subnet)), ("gateway", req.gateway and str(req.gateway)),
              ("vni", req.vni), ("port", req.port), ("mtu", req.mtu), ("internal", req.internal))
    for field, want in checks:
        if want is not None and record.get(field) != want:
            wrong.append((field, record.get(field), want))
    if req.anti_spoofing is not None and _antispoof.enabled(record) != bool(req.anti_spoofing):
        wrong.append(("anti_spoofing", _antispoof.enabled(record), bool(req.anti_spoofing)))
    return wrong


def new_record(req, underlay):
    if req.subnet is None:
        raise OverlayError("is required to create network %s, which does not exist yet" % req.name, "subnet")
    mtu = req.mtu if req.mtu is not None else underlay.max_overlay_mtu
    gateway = req.gateway or next(req.subnet.hosts())
    return _keys.network_record(req.name, req.subnet, gateway, req.vni, mtu, req.port or DEFAULT_PORT,
                                 bool(req.internal), underlay.host,
                                 anti_spoofing=req.anti_spoofing is not False)


def check_mtu(record, underlay):
    if record["mtu"] > underlay.max_overlay_mtu:
        raise OverlayError(
            "%d is too big for the underlay: %s has MTU %d, which leaves at most %d after the %d bytes of VXLAN "
            "encapsulation" % (record["mtu"], underlay.interface, underlay.mtu, underlay.max_overlay_mtu,
                               _underlay.VXLAN_OVERHEAD), "mtu")


def create_record(store, layout, record):
    """Claim a VNI (the given one, or the lowest free from 256) and the name, in one transaction."""
    explicit = record["vni"] is not None

    def read():
        existing = store.value(layout.network(record["name"]))
        taken = {int(_keys.Layout.last(k)) for k in store.keys(layout.vnis())}
        return existing, taken

    def build(state, attempt):
        existing, taken = state
        if existing is not None:
            return [], existing  # another host created it meanwhile: join that one
        if explicit:
            if record["vni"] in taken:
                owner = store.value(layout.vni(record["vni"]))
                raise OverlayError("VNI %d is already used by network %s" % (
                    record["vni"], (owner or {}).get("network", "?")), "vni")
            vni = record["vni"]
        else:
            vni = _allocate.free_vni(taken)
        rec = dict(record, vni=vni)
        ops = [_consul.op_create(layout.vni(vni), {"network": rec["name"], "id": rec["id"]}),
               _consul.op_create(layout.network(rec["name"]), rec)]
        return ops, rec

    return _allocate.claim(store, read, build, "a VNI for network %s" % record["name"])


def run(params, check_mode):
    _netns.require_pyroute2()
    _netns.require_root()
    req = Request(params)
    settings = _consul.connection_settings(params)
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    with _netns.Netlink() as nl:
        host_ns = _netns.resolve(None, None)
        underlay = _underlay.local(nl.get(host_ns), params, settings["host"])
        record = store.value(layout.network(req.name))
        if req.state == "absent":
            return absent(nl, store, layout, record, underlay, req, check_mode)
        return present(nl, store, layout, record, underlay, req, check_mode)


def present(nl, store, layout, record, underlay, req, check_mode):
    actions = []
    created = False
    before = dict(record) if record else None
    if record is not None:
        wrong = differences(record, req)
        if wrong:
            field, have, want = wrong[0]
            raise OverlayError("network %s already exists with %s %s; this task asks for %s. A network's "
                               "settings are cluster-wide: remove it first to change them"
                               % (req.name, field, have, want), field)
    else:
        proposed = new_record(req, underlay)
        check_mtu(proposed, underlay)
        actions.append("store: create network %s" % req.name)
        if check_mode:
            record = dict(proposed, vni=req.vni or "(allocated on creation)")
        else:
            record = create_record(store, layout, proposed)
            created = record["id"] == proposed["id"]  # not joined a record another host wrote meanwhile
    check_mtu(record, underlay)
    try:
        actions += register_host(store, layout, underlay, check_mode)
        if check_mode and not isinstance(record["vni"], int):
            return result(record, actions + ["create namespace and devices for network %s" % req.name],
                          underlay, None, before)
        host_actions, vx_index = _overlay_ns.ensure(nl, record, apply=not check_mode)
        actions += host_actions
        endpoints = list_endpoints(store, layout, record)
        peers = None
        if vx_index is not None:
            ipr = nl.get(_overlay_ns.namespace(record))
            actions += _peers.sync(ipr, vx_index, _peers.desired(endpoints, underlay.vtep), apply=not check_mode)
            peers = _peers.table(ipr, vx_index)
        actions += _antispoof.reconcile(nl, record, endpoints, underlay.vtep, apply=not check_mode)
    except Exception:
        if created:  # nothing half-built: a record this run created goes with the failed host part
            store.txn([_consul.op_delete(layout.network(record["name"])), _consul.op_delete(layout.vni(record["vni"]))])
            _overlay_ns.remove(nl, record, apply=True)
        raise
    return result(record, actions, underlay, peers, before, nl=nl, endpoints=endpoints)


def register_host(store, layout, underlay, check_mode):
    key = layout.host(underlay.host)
    have = store.value(key)
    want = {"host": underlay.host, "vtep": underlay.vtep, "interface": underlay.interface}
    if have is not None and {k: have.get(k) for k in want} == want:
        return []
    if not check_mode:
        store.put(key, dict(want, updated_at=_keys.now()))
    return ["store: host %s vtep %s" % (underlay.host, underlay.vtep)]


def list_endpoints(store, layout, record):
    return store.values(layout.endpoints(record["id"]))


def absent(nl, store, layout, record, underlay, req, check_mode):
    if record is None:
        # Another host removed the record already; this host's part may still be here.
        actions = []
        for ns in _overlay_ns.find_by_name(nl, req.name):
            actions += _overlay_ns.remove_namespace(nl, ns, apply=not check_mode)
        return {"changed": bool(actions), "actions": actions, "network": None, "kept_in_store": False,
                "diff": {"before": {"namespaces": [a.split()[2] for a in actions]}, "after": {"namespaces": []}}}
    actions = []
    endpoints = list_endpoints(store, layout, record)
    local = [e["name"] for e in endpoints if e["host"] == underlay.host]
    if local and not req.force:
        raise OverlayError("network %s still has endpoints on this host (%s); remove them with "
                           "overlay_endpoint state=absent, or set force: true" % (req.name, ", ".join(sorted(local))),
                           "state")
    if local:
        from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint
        actions += _endpoint.remove_records(nl, store, layout, record,
                                            [e for e in endpoints if e["host"] == underlay.host], check_mode)
    actions += _overlay_ns.remove(nl, record, apply=not check_mode)
    remaining = [e for e in endpoints if e["host"] != underlay.host]
    kept = bool(remaining)
    if not kept:
        actions.append("store: delete network %s and release VNI %s" % (req.name, record["vni"]))
        if not check_mode:
            failed = store.txn([
                _consul.op_delete(layout.network(record["name"])),
                _consul.op_delete(layout.vni(record["vni"])),
                _consul.op_delete_tree(layout.ipam(record["id"])),
                _consul.op_delete_tree(layout.endpoints(record["id"])),
            ])
            if failed:
                raise OverlayError("Consul refused to delete network %s: %s" % (req.name, failed))
    return {"changed": bool(actions), "actions": actions, "network": None if not kept else record,
            "kept_in_store": kept, "remaining_endpoints": len(remaining),
            "diff": {"before": {"network": record}, "after": {"network": record if kept else None}}}


def result(record, actions, underlay, peers, before, nl=None, endpoints=None):
    host_part = _overlay_ns.describe(nl, record) if nl is not None else None
    return {
        "changed": bool(actions),
        "actions": actions,
        "network": record,
        "namespace": _keys.overlay_namespace(record) if len(record.get("id", "")) == 64 else None,
        "host": {"name": underlay.host, "vtep": underlay.vtep, "interface": underlay.interface,
                 "underlay_mtu": underlay.mtu},
        "devices": host_part,
        "peers": peers,
        "endpoints": len(endpoints or ()),
        "diff": {"before": {"network": before, "actions": []}, "after": {"network": record, "actions": actions}},
    }


def lookup(store, layout, spec, field="network"):
    """A network record by name, or by id (full, or a unique prefix of at least 12 hex digits)."""
    record = store.value(layout.network(spec)) if _validate_name_quietly(spec) else None
    if record is not None:
        return record
    if len(spec) >= 12 and all(c in "0123456789abcdef" for c in spec):
        found = [v for v in store.values(layout.networks()) if v["id"].startswith(spec)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise OverlayError("id prefix %s matches %d networks" % (spec, len(found)), field)
    raise OverlayError("no overlay network named %s exists in Consul (create it with overlay_network first)" % spec,
                       field)


def _validate_name_quietly(spec):
    try:
        _validate.object_name(spec, "network")
        return True
    except OverlayError:
        return False
