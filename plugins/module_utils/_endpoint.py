# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The overlay_endpoint module's work, for a batch of endpoints of one network.

Order: validate every item; claim addresses in Consul (check-and-set); build the kernel side;
if the kernel side fails, release what this run claimed and built, so nothing is half-done."""
from __future__ import annotations

import ipaddress
import socket

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _allocate, _antispoof, _consul, _gateway, _links, _netns, _network, _overlay_ns, _peers, _keys, _underlay, _validate)
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

OVERLAY_END = "ve-%s"   # the overlay namespace's end of eth0, on br0
GATEWAY_END = "gw-%s"   # the host's end of eth1, on the gateway bridge
CHUNK = _consul.TXN_MAX_OPS // 3  # three claims per endpoint in one transaction


class Item:
    """One requested endpoint, validated."""

    def __init__(self, raw, field, defaults):
        self.field = field
        self.name = _validate.object_name(raw.get("name"), field + "name")
        self.ns = _netns.resolve(raw.get("namespace"), field + "namespace") if raw.get("namespace") else None
        self.ip_text = raw.get("ip")
        self.mac = _validate.mac(raw.get("mac"), field + "mac")
        self.ifname = _validate.ifname(raw.get("ifname") or defaults["ifname"], field + "ifname")
        self.gw_ifname = _validate.ifname(raw.get("gateway_ifname") or defaults["gateway_ifname"],
                                          field + "gateway_ifname")
        if self.ifname == self.gw_ifname:
            raise OverlayError("must differ from the overlay interface name %s" % self.ifname,
                               field + "gateway_ifname")
        self.ip = None

    def f(self, option):
        return self.field + option


def items_from(params):
    defaults = {"ifname": params.get("ifname") or "eth0", "gateway_ifname": params.get("gateway_ifname") or "eth1"}
    if params.get("endpoints"):
        if params.get("name"):
            raise OverlayError("give either name (one endpoint) or endpoints (a list), not both", "endpoints")
        raws = [(e, "endpoints[%d]." % i) for i, e in enumerate(params["endpoints"])]
        for raw, field in raws:
            if raw.get("network") not in (None, params["network"]):
                raise OverlayError("is %s, but this task attaches to network %s" % (raw["network"], params["network"]),
                                   field + "network")
    elif params.get("name"):
        raws = [(dict(name=params["name"], namespace=params.get("namespace"), ip=params.get("ip"),
                      mac=params.get("mac")), "")]
    else:
        raise OverlayError("one of name or endpoints is required", "name")
    items = [Item(raw, field, defaults) for raw, field in raws]
    seen = {}
    for item in items:
        if item.name in seen:
            raise OverlayError("endpoint %s is listed twice" % item.name, item.f("name"))
        seen[item.name] = item
    return items


def run(params, check_mode, run_command):
    _netns.require_pyroute2()
    _netns.require_root()
    items = items_from(params)
    present = params["state"] == "present"
    settings = _consul.connection_settings(params)
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    with _netns.Netlink() as nl:
        underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, settings["host"])
        network = _network.lookup(store, layout, params["network"])
        gw = None if network["internal"] else _gateway.from_params(params)
        if present:
            return attach(nl, store, layout, network, gw, underlay, items, params, check_mode, run_command)
        return detach(nl, store, layout, network, underlay, items, check_mode)


# ------------------------------------------------------------------------------------ present

def validate_items(nl, network, items, existing, claims, underlay):
    """Every check that needs the store's or the kernel's view, before anything is written."""
    net = ipaddress.ip_network(network["subnet"])
    gateway = ipaddress.IPv4Address(network["gateway"])
    wanted = {}
    for item in items:
        if item.ns is None:
            raise OverlayError("is required to attach endpoint %s" % item.name, item.f("namespace"))
        _netns.check_exists(item.ns, item.f("namespace"))
        ipr = nl.get(item.ns)
        for option, ifname in (("ifname", item.ifname), ("gateway_ifname", item.gw_ifname)):
            msg = _links.find(ipr, ifname)
            if msg is not None and _links.kind(msg) != "veth":
                raise OverlayError("%s already has a %s device named %s; it will not be replaced"
                                   % (item.ns.describe(), _links.kind(msg) or "plain", ifname), item.f(option))
        if item.ip_text:
            item.ip = _validate.ipv4_in(item.ip_text, net, item.f("ip"))
            if item.ip == gateway:
                raise OverlayError("%s is the gateway address of network %s" % (item.ip, network["name"]),
                                   item.f("ip"))
            if item.ip in wanted:
                raise OverlayError("%s is requested for both %s and %s" % (item.ip, wanted[item.ip], item.name),
                                   item.f("ip"))
            wanted[item.ip] = item.name
        record = existing.get(item.name)
        if record is not None:
            if record["host"] != underlay.host:
                raise OverlayError("endpoint %s of network %s is attached on host %s, not here (%s)"
                                   % (item.name, network["name"], record["host"], underlay.host), item.f("name"))
            if item.ip is not None and str(item.ip) != record["ip"]:
                raise OverlayError("endpoint %s already has address %s; remove it first to change it"
                                   % (item.name, record["ip"]), item.f("ip"))
            if item.mac is not None and item.mac != record["mac"]:
                raise OverlayError("endpoint %s already has MAC %s; remove it first to change it"
                                   % (item.name, record["mac"]), item.f("mac"))
        elif item.ip is not None:
            owner = claims.get(str(item.ip))
            if owner is not None:
                raise OverlayError("%s is already taken by endpoint %s of network %s"
                                   % (item.ip, owner, network["name"]), item.f("ip"))


def read_state(store, layout, network, underlay):
    existing = {v["name"]: v for v in store.values(layout.endpoints(network["id"]))}
    claims = {_keys.Layout.last(k): (v or {}).get("endpoint")
              for k, (v, index) in store.get_tree(layout.ipam(network["id"])).items()}
    gw_claims = {_keys.Layout.last(k) for k in store.keys(layout.gateway_ipam(underlay.host))}
    return existing, claims, gw_claims


def claim_new(store, layout, network, gw, underlay, new_items):
    """Create the records of new endpoints, allocating addresses, in transactions of CHUNK endpoints."""
    created = []
    net = ipaddress.ip_network(network["subnet"])
    for start in range(0, len(new_items), CHUNK):
        chunk = new_items[start:start + CHUNK]

        def read():
            return read_state(store, layout, network, underlay)

        def build(state, attempt, chunk=chunk):
            existing, claims, gw_claims = state
            for item in chunk:
                if item.name in existing:
                    raise OverlayError("endpoint %s was created by another run meanwhile" % item.name, item.f("name"))
                if item.ip is not None and str(item.ip) in claims:
                    raise OverlayError("%s was taken by endpoint %s meanwhile" % (item.ip, claims[str(item.ip)]),
                                       item.f("ip"))
            reserved = set(claims) | {network["gateway"]} | {str(i.ip) for i in chunk if i.ip is not None}
            automatic = [i for i in chunk if i.ip is None]
            ips = iter(_allocate.free_addresses(net, reserved, len(automatic), randomize=_allocate.spread(attempt)))
            gw_ips = iter(_allocate.free_addresses(gw.subnet, gw_claims | {gw.router}, len(chunk),
                                                   randomize=_allocate.spread(attempt))) if gw else None
            ops, records = [], []
            for item in chunk:
                ip = item.ip if item.ip is not None else next(ips)
                gw_ip = next(gw_ips) if gw else None
                record = _keys.endpoint_record(network, item.name, ip, item.mac or _keys.mac_for(ip),
                                                underlay.host, underlay.vtep, item.ifname, gw_ip, item.ns.spec)
                record["gateway_ifname"] = item.gw_ifname if gw else None
                ops.append(_consul.op_create(layout.ip_claim(network["id"], ip), {"endpoint": item.name}))
                if gw:
                    ops.append(_consul.op_create(layout.gateway_claim(underlay.host, gw_ip),
                                                 {"endpoint": "%s/%s" % (network["id"], item.name)}))
                ops.append(_consul.op_create(layout.endpoint(network["id"], item.name), record))
                records.append(record)
            return ops, records

        created += _allocate.claim(store, read, build, "addresses in network %s" % network["name"])
    return created


def release(store, layout, network, records):
    ops = []
    for record in records:
        ops.append(_consul.op_delete(layout.endpoint(network["id"], record["name"])))
        ops.append(_consul.op_delete(layout.ip_claim(network["id"], record["ip"])))
        if record.get("gateway_ip"):
            ops.append(_consul.op_delete(layout.gateway_claim(record["host"], record["gateway_ip"])))
    for start in range(0, len(ops), _consul.TXN_MAX_OPS):
        store.txn(ops[start:start + _consul.TXN_MAX_OPS])


def link_specs(record, network, gw, target_ns, overlay_ns):
    """eth0 <-> ve-* on br0, and unless internal eth1 <-> gw-* on the gateway bridge."""
    ip = ipaddress.ip_interface("%s/%d" % (record["ip"], record["prefixlen"]))
    short = record["id"][:10]
    pairs = [(
        _links.LinkSpec(target_ns, record["ifname"], "", mtu=network["mtu"], mac=record["mac"],
                        addresses=[ip], up=True),
        _links.LinkSpec(overlay_ns, OVERLAY_END % short, "", mtu=network["mtu"], master=_overlay_ns.BRIDGE, up=True),
    )]
    if gw is not None and record.get("gateway_ip"):
        gw_ip = ipaddress.ip_interface("%s/%d" % (record["gateway_ip"], gw.subnet.prefixlen))
        pairs.append((
            _links.LinkSpec(target_ns, record.get("gateway_ifname") or "eth1", "", mac=_keys.mac_for(gw_ip.ip),
                            addresses=[gw_ip], up=True),
            _links.LinkSpec(_netns.resolve(None, None), GATEWAY_END % short, "", master=gw.name, up=True),
        ))
    return pairs


def ensure_default_route(ipr, ifname, router, apply, where):
    index = _links.find(ipr, ifname)["index"] if apply else None
    for route in ipr.get_default_routes(family=socket.AF_INET):
        if route.get("RTA_GATEWAY") == router and (index is None or route.get("RTA_OIF") == index):
            return []
    if apply:
        ipr.route("replace", dst="0.0.0.0/0", gateway=router, oif=index)
    return ["%s: default via %s dev %s" % (where, router, ifname)]


def build_kernel(nl, network, gw, record, ns, apply, default_route):
    overlay_ns = _overlay_ns.namespace(network)
    actions = []
    pairs = link_specs(record, network, gw, ns, overlay_ns)
    for inner, outer in pairs:
        built = _links.ensure_veth(nl, inner, outer, apply)  # (actions, inner end, outer end)
        actions += built[0]
        outer_msg = built[2]
        if gw is not None and outer.master == gw.name and outer_msg is not None:
            actions += _gateway.isolate_port(nl.get(outer.ns), outer_msg, apply, outer.name)
    if gw is not None and default_route and len(pairs) > 1:
        actions += ensure_default_route(nl.get(ns), pairs[1][0].name, gw.router, apply,
                                        "%s in %s" % (record["name"], ns.describe()))
    return ["%s: %s" % (record["name"], a) for a in actions]


def attach(nl, store, layout, network, gw, underlay, items, params, check_mode, run_command):
    existing, claims = read_state(store, layout, network, underlay)[:2]
    validate_items(nl, network, items, existing, claims, underlay)
    _network.check_mtu(network, underlay)
    apply = not check_mode
    actions = []
    new_items = [i for i in items if i.name not in existing]
    moved = [existing[i.name] for i in items if i.name in existing and existing[i.name]["namespace"] != i.ns.spec]
    created = []
    if new_items:
        actions += ["store: register endpoint %s" % i.name for i in new_items]
        if apply:
            created = claim_new(store, layout, network, gw, underlay, new_items)
    try:
        for record in moved:
            item = next(i for i in items if i.name == record["name"])
            actions.append("store: endpoint %s now in namespace %s" % (record["name"], item.ns.spec))
            record["namespace"] = item.ns.spec
            if apply:
                store.put(layout.endpoint(network["id"], record["name"]), record)
        host_actions, vx_index = _overlay_ns.ensure(nl, network, apply)
        actions += host_actions
        everyone = list(existing.values()) + created
        # Before any new port joins br0: the table exists with the new ports' elements (fail closed).
        actions += _antispoof.reconcile(nl, network, everyone, underlay.vtep, apply)
        if gw is not None:
            actions += _gateway.ensure(nl, gw, run_command, apply)
        records = {r["name"]: r for r in list(existing.values()) + created}
        results = []
        for item in items:
            record = records.get(item.name)
            if record is None:  # check mode, not yet registered
                actions.append("%s: create interfaces %s%s in %s" % (
                    item.name, item.ifname, "" if gw is None else " and " + item.gw_ifname, item.ns.describe()))
                results.append({"name": item.name, "network": network["name"], "namespace": item.ns.spec,
                                "ip": str(item.ip) if item.ip else None, "host": underlay.host})
                continue
            if not apply and not _overlay_ns.namespace(network).exists():  # check mode: nothing to read yet
                actions.append("%s: create interfaces in %s" % (item.name, item.ns.describe()))
            else:
                actions += build_kernel(nl, network, gw, record, item.ns, apply, params.get("default_route", True))
            results.append(describe(nl, network, record, item.ns, apply))
        if vx_index is not None:  # records holds every endpoint of the network, so peers come for free
            actions += _peers.sync(nl.get(_overlay_ns.namespace(network)), vx_index,
                                   _peers.desired(records.values(), underlay.vtep), apply)
        # The new ports exist now: learning off, static FDB entries, neighbours.
        if apply:
            actions += _antispoof.reconcile(nl, network, everyone, underlay.vtep, apply)
    except BaseException:
        if created:  # nothing half-built: undo what this run built and claimed
            for record in created:
                _remove_kernel(nl, network, record, apply=True)
            release(store, layout, network, created)
        raise
    return {"changed": bool(actions), "actions": actions, "network": network, "endpoints": results,
            "diff": {"before": {"endpoints": sorted(n for n in existing if n in {i.name for i in items})},
                     "after": {"endpoints": sorted(i.name for i in items), "actions": actions}}}


def describe(nl, network, record, ns, applied):
    out = dict(record)
    out["interfaces"] = {}
    if applied and ns.exists():
        ipr = nl.get(ns)
        for name in (record["ifname"], record.get("gateway_ifname")):
            msg = _links.find(ipr, name) if name else None
            if msg is not None:
                out["interfaces"][name] = _links.view(ipr, msg, ns.spec)
    return out


# ------------------------------------------------------------------------------------ absent

def _remove_kernel(nl, network, record, apply):
    """Delete the ends we own (ve-* in the overlay namespace, gw-* on the host): each takes its peer
    in the target namespace with it, and a namespace whose PID was reused is never touched."""
    short = record["id"][:10]
    ends = [(_overlay_ns.namespace(network), OVERLAY_END % short)]
    if record.get("gateway_ip"):
        ends.append((_netns.resolve(None, None), GATEWAY_END % short))
    actions = []
    for ns, name in ends:
        msg = _links.find(nl.get(ns), name) if ns.exists() else None
        if msg is not None:
            actions.append("delete %s in %s" % (name, ns.describe()))
            if apply:
                _links.delete(nl.get(ns), msg)
    return actions


def remove_records(nl, store, layout, network, records, check_mode):
    """Interfaces, record and claims of endpoints on this host (also used by overlay_network force)."""
    actions = []
    if records:  # before the ports go: their elements, static FDB entries and neighbours
        gone = {r["name"] for r in records}
        remaining = [e for e in store.values(layout.endpoints(network["id"])) if e["name"] not in gone]
        actions += _antispoof.reconcile(nl, network, remaining, records[0]["vtep"], not check_mode)
    for record in records:
        actions += ["%s: %s" % (record["name"], a) for a in _remove_kernel(nl, network, record, not check_mode)]
        actions.append("store: remove endpoint %s (%s)" % (record["name"], record["ip"]))
    if not check_mode:
        release(store, layout, network, records)
    return actions


def detach(nl, store, layout, network, underlay, items, check_mode):
    existing = read_state(store, layout, network, underlay)[0]
    records = []
    for item in items:
        record = existing.get(item.name)
        if record is None:
            continue
        if record["host"] != underlay.host:
            raise OverlayError("endpoint %s is attached on host %s; remove it there" % (item.name, record["host"]),
                               item.f("name"))
        records.append(record)
    actions = remove_records(nl, store, layout, network, records, check_mode)
    return {"changed": bool(actions), "actions": actions, "network": network,
            "endpoints": [dict(r, state="absent") for r in records],
            "diff": {"before": {"endpoints": sorted(r["name"] for r in records)}, "after": {"endpoints": []}}}
