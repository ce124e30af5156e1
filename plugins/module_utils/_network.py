# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The overlay_network module's work: the global record in Consul, then this host's part, then peers."""
from __future__ import annotations

import time

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _allocate, _antispoof, _consul, _dockernet, _endpoint, _firewall, _gateway, _gc, _hostlock, _keys, _netns, _overlay_ns,
    _peers, _records, _underlay, _validate)
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

DEFAULT_PORT = 4789
REMOVE_WAIT = 30  # seconds a removal waits for (or retries against) other hosts removing the same network
STALE_MARK = 60  # a removal mark older than this is a dead host's: another run takes the removal over


class Request:
    """The module's options, validated; nothing here touches the kernel or Consul."""

    def __init__(self, params):
        self.name = _validate.object_name(params["name"], "name")
        self.state = params["state"]
        self.subnet = _validate.overlay_subnet(params["subnet"], "subnet") if params.get("subnet") else None
        if self.subnet is not None and not params.get("internal"):  # its endpoints get a gateway port
            gw_subnet = params.get("gateway_subnet") or _gateway.DEFAULT_SUBNET
            _validate.no_overlap(self.subnet, gw_subnet, "subnet", "the gateway subnet %s" % gw_subnet)
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
        self.docker = bool(params.get("docker"))
        if params.get("docker_socket") and not self.docker:
            raise OverlayError("is only used with docker: true", "docker_socket")
        # Set by a runtime's front door (the agent's Docker plugin), never by the module: a network
        # created this way goes with its last runtime user (leave_runtime_network).
        self.origin = params.get("origin")


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
    record = _keys.network_record(req.name, req.subnet, gateway, req.vni, mtu, req.port or DEFAULT_PORT,
                                  bool(req.internal), underlay.host,
                                  anti_spoofing=req.anti_spoofing is not False)
    if req.origin:
        record["origin"] = req.origin
    return record


def check_overlaps(networks, req):
    """A new network's subnet may not overlap another overlay's: the same hosts route both."""
    for other in networks.values():
        if other["name"] != req.name and req.subnet.overlaps(_validate.subnet(other["subnet"], "subnet")):
            raise OverlayError("%s overlaps %s of network %s" % (req.subnet, other["subnet"], other["name"]), "subnet")


def refuse_differences(record, req):
    wrong = differences(record, req)
    if wrong:
        field, have, want = wrong[0]
        raise OverlayError("network %s already exists with %s %s; this task asks for %s. A network's "
                           "settings are cluster-wide: remove it first to change them"
                           % (req.name, field, have, want), field)


def run(params, check_mode):
    _netns.require_pyroute2()
    _netns.require_root()
    req = Request(params)
    settings = _consul.connection_settings(params)
    docker = None
    if req.docker:  # checked before anything changes: the socket answers, no other network holds the name
        docker = _dockernet.Docker(params.get("docker_socket"))
        have = docker.get(req.name)
        problem = have and req.state == "present" and _dockernet.conflict(have, req.name, req.subnet, req.gateway)
        if problem:
            raise OverlayError(problem, "docker")
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    with _hostlock.HostLock(), _netns.Netlink() as nl:
        host_ns = _netns.resolve(None, None)
        underlay = _underlay.local(nl.get(host_ns), params, settings["host"])
        record, index = _records.read_network(store, layout, req.name)
        networks = _records.all_networks(store, layout)
        # Namespaces of networks that are gone from Consul go first: they may hold a VNI this run needs.
        actions = _overlay_ns.reconcile(nl, networks, settings["prefix"], apply=not check_mode)
        if req.state == "absent":
            result = absent(nl, store, layout, record, index, underlay, req, settings, check_mode)
        else:
            result = present(nl, store, layout, record, index, networks, underlay, req, settings, check_mode)
        created = result.pop("created", False)
        result["actions"] = actions + result["actions"]
        if params.get("gc", True):
            result["garbage"] = _gc.collect(nl, store, layout, underlay, settings["prefix"],
                                            grace=params.get("gc_grace", _gc.DEFAULT_GRACE), apply=not check_mode)
    if docker is not None:  # outside the host lock: Docker calls the agent's plugin, which takes it
        docker_side(docker, result, req, check_mode, created,
                    lambda: _undo_creation(store, layout, result["network"], underlay.host))
    result["changed"] = bool(result["actions"])
    return result


def docker_side(docker, result, req, check_mode, created, undo):
    """``docker: true``: this host's Docker network of the same name (present), or its removal
    (absent, after this host left the overlay network). A failure undoes a creation of this run."""
    if req.state == "absent":
        actions, before = _dockernet.leave(docker, req.name, req.force, not check_mode)
        after = None
    else:
        record = result["network"]
        try:
            actions, before, after = _dockernet.ensure(docker, record["name"], record["subnet"], record["gateway"],
                                                       record.get("internal"), not check_mode)
        except BaseException:
            if created:
                undo()
            raise
        result["docker_network"] = _dockernet.shown(after)
    result["actions"] += actions
    result["diff"]["before"]["docker_network"] = _dockernet.shown(before)
    result["diff"]["after"]["docker_network"] = _dockernet.shown(after)


def _undo_creation(store, layout, record, host):
    """Remove the network this run created (its Docker side failed), unless another host uses it by now."""
    with _hostlock.HostLock(), _netns.Netlink() as nl:
        current, index = _records.read_network(store, layout, record["name"])
        if current is None or current.get("id") != record["id"]:
            return
        remaining, deleted = _remove_record(store, layout, current, index, host)
        if deleted and not remaining:
            _overlay_ns.remove(nl, current, apply=True)


def present(nl, store, layout, record, index, networks, underlay, req, settings, check_mode):
    actions = []
    created = False
    before = dict(record) if record else None
    if req.subnet is not None and underlay.network is not None:  # the overlay must not hide the underlay
        _validate.no_overlap(req.subnet, underlay.network, "subnet",
                             "the underlay network %s of %s" % (underlay.network, underlay.interface))
    if record is not None:
        refuse_differences(record, req)
        _records.usable(record, "name")
    else:
        proposed = new_record(req, underlay)
        _underlay.check_mtu(proposed, underlay)
        check_overlaps(networks, req)
        actions.append("store: create network %s" % req.name)
        if check_mode:
            record = dict(proposed, vni=req.vni or "(allocated on creation)")
        else:
            record, index, created = _records.create_network(store, layout, proposed)
            if not created:  # another host created it meanwhile: it must be what this task asks for
                refuse_differences(record, req)
                _records.usable(record, "name")
                actions = []
    _underlay.check_mtu(record, underlay)
    try:
        actions += register_host(store, layout, underlay, check_mode)
        actions += _firewall.sync_store(store, layout, underlay.vtep, apply=not check_mode)
        if check_mode and not isinstance(record["vni"], int):
            return result(record, actions + ["create namespace and devices for network %s" % req.name],
                          underlay, None, before)
        host_actions, vx_index = _overlay_ns.ensure(nl, record, not check_mode, settings["prefix"])
        actions += host_actions
        endpoints = list_endpoints(store, layout, record)  # read under the host lock: never older than a sync
        peers = None
        if vx_index is not None:
            ipr = nl.get(_overlay_ns.namespace(record))
            actions += _peers.sync(ipr, vx_index, _peers.desired(endpoints, underlay.vtep), apply=not check_mode)
            peers = _peers.table(ipr, vx_index)
        actions += _antispoof.reconcile(nl, record, endpoints, underlay.vtep, apply=not check_mode)
    except BaseException:
        if created:  # nothing half-built: a record this run created goes with the failed host part
            _records.delete_created_network(store, layout, record, index)
            _overlay_ns.remove(nl, record, apply=True)
        raise
    out = result(record, actions, underlay, peers, before, nl=nl, endpoints=endpoints)
    out["created"] = created
    return out


def register_host(store, layout, underlay, check_mode, seen=None):
    """This host's record (name, VTEP, interface). ``seen``, a dict, receives the fields as they
    were and as they are now, for a diff."""
    key = layout.host(underlay.host)
    have = store.value(key)
    want = {"host": underlay.host, "vtep": underlay.vtep, "interface": underlay.interface}
    if seen is not None:
        seen.update(before={k: have.get(k) for k in want} if isinstance(have, dict) else None, after=want)
    if have is not None and {k: have.get(k) for k in want} == want:
        return []
    if not check_mode:
        store.put(key, dict(want, updated_at=_keys.now()))
    return ["store: host %s vtep %s" % (underlay.host, underlay.vtep)]


def list_endpoints(store, layout, record):
    return [v for v in store.values(layout.endpoints(record["id"])) if isinstance(v, dict)]


def absent(nl, store, layout, record, index, underlay, req, settings, check_mode):
    apply = not check_mode
    if record is None:
        # Another host removed the record already; this host's part may still be here.
        actions = []
        for ns in _overlay_ns.find_by_name(nl, req.name):
            actions += _overlay_ns.remove_namespace(nl, ns, apply=apply)
        return {"changed": bool(actions), "actions": actions, "network": None, "kept_in_store": False,
                "diff": {"before": {"namespaces": [a.split()[2] for a in actions]}, "after": {"namespaces": []}}}
    actions = []
    tree = _records.network_tree(store, layout, record)
    entries = _records.endpoints_of(tree, layout, record)
    local = [e for e in entries if e.value["host"] == underlay.host]
    if local and not req.force:
        raise OverlayError("network %s still has endpoints on this host (%s); remove them with "
                           "overlay_endpoint state=absent, or set force: true"
                           % (req.name, ", ".join(sorted(e.value["name"] for e in local))), "state")
    if local:
        # Detach refuses before the kernel is touched when Consul does not take the write.
        actions += _endpoint.detach_entries(nl, store, layout, record, local, check_mode)
    remaining = [e for e in entries if e.value["host"] != underlay.host]
    if not remaining:
        actions.append("store: delete network %s and release VNI %s" % (req.name, record["vni"]))
        if apply:
            remaining, deleted = _remove_record(store, layout, record, index, underlay.host)
            if not deleted:
                actions.pop()
    actions += _overlay_ns.remove(nl, record, apply=apply)
    kept = bool(remaining)
    return {"changed": bool(actions), "actions": actions, "network": None if not kept else record,
            "kept_in_store": kept, "remaining_endpoints": len(remaining),
            "diff": {"before": {"network": record}, "after": {"network": record if kept else None}}}


def _remove_record(store, layout, record, index, host, users_keep=False):
    """Mark, re-read, then delete (or un-mark when an endpoint landed before the mark).
    Returns (endpoints that keep the network, whether this run deleted the record). With
    ``users_keep`` (the last runtime user leaving), a registered user keeps the network like an
    endpoint; otherwise (the inventory removes it) the users' keys go with it.

    Several hosts leave a network at once (a play's ``state: absent`` runs on every host): a
    check-and-set lost to another host is not an error. The record is read again: gone means
    another host finished the removal; marked by another host means it is finishing it, so this
    run waits for it (and takes the removal over when the mark is stale: that host died); changed
    otherwise means the decision is made again on what is there now."""
    name, network_id = record["name"], record["id"]
    deadline = time.monotonic() + REMOVE_WAIT
    while True:
        try:
            marked, marked_index = _records.mark_removing(store, layout, record, index, host)
            tree = _records.network_tree(store, layout, marked)
            remaining = _keeping(tree, layout, marked, users_keep)
            if remaining:
                _records.unmark_removing(store, layout, marked, marked_index)
                return remaining, False
            _records.delete_network(store, layout, marked, marked_index, tree)
            return [], True
        except _records.RemovalConflict:
            if time.monotonic() > deadline:
                raise OverlayError("network %s kept changing while it was being removed (other hosts write "
                                   "to it); run again" % name, "state")
        record, index = _records.read_network(store, layout, name)
        while record is not None and _removed_elsewhere(record, host) and time.monotonic() < deadline:
            time.sleep(0.1)
            record, index = _records.read_network(store, layout, name)
        if record is None or record.get("id") != network_id:
            return [], False  # removed by another host (and maybe created again since: that one is not ours)
        remaining = _keeping(_records.network_tree(store, layout, record), layout, record, users_keep)
        if remaining and not record.get("removing"):
            return remaining, False


def _keeping(tree, layout, record, users_keep):
    return _records.endpoints_of(tree, layout, record) + (
        _records.users_of(tree, layout, record) if users_keep else [])


def leave_runtime_network(store, layout, network_id, host, ref):
    """A runtime (``docker network rm``) drops this host's use of the network. A network the
    runtime created (``origin`` set) is removed from Consul with its last user, through the same
    removal as ``state: absent`` (an endpoint or a user registering meanwhile keeps it); one the
    inventory created stays. Returns what was done, for the log."""
    _records.remove_user(store, layout, network_id, host, ref)
    record = _records.lookup(store, layout, network_id)[0] if len(network_id) >= 12 else None
    if record is None or record.get("id") != network_id or not record.get("origin"):
        return "kept" if record is not None else "gone"
    record, index = _records.read_network(store, layout, record["name"])
    if record is None or record.get("id") != network_id:
        return "gone"
    if _keeping(_records.network_tree(store, layout, record), layout, record, True):
        return "kept"
    remaining, deleted = _remove_record(store, layout, record, index, host, users_keep=True)
    return "removed" if deleted else "kept" if remaining else "gone"


def _removed_elsewhere(record, host):
    """Another host marked the record and its mark is fresh: it is deleting the network now."""
    mark = record.get("removing") or {}
    return mark.get("host") not in (None, host) and _keys.age(mark.get("at")) < STALE_MARK


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
