# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The overlay_endpoint module's work, for a batch of endpoints of one network.

Order: validate every item; claim addresses in Consul (check-and-set); build the kernel side;
if the kernel side fails, release what this run claimed and built, so nothing is half-done."""
from __future__ import annotations

import ipaddress
import socket

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _allocate, _antispoof, _consul, _firewall, _gateway, _hostlock, _keys, _links, _netns, _nft, _overlay_ns,
    _peers, _records, _runtime, _underlay, _validate)
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

OVERLAY_END = "ve-%s"   # the overlay namespace's end of eth0, on br0
GATEWAY_END = "gw-%s"   # the host's end of eth1, on the gateway bridge
HANDOFF_END = "vc-%s"  # a handed-off endpoint's container end, in the host namespace until the runtime moves it
CHUNK = _records.CHUNK


class Item:
    """One requested endpoint, validated."""

    def __init__(self, raw, field, defaults, present=True):
        self.field = field
        self.name = _validate.object_name(raw.get("name"), field + "name")
        namespace = _validate.no_space(raw.get("namespace"), field + "namespace")
        self.ns = _netns.resolve(namespace, field + "namespace") if namespace else None
        self.ns_field = field + "namespace"  # the option that named the namespace, for its errors
        self.container = None  # what the runtime reported: {runtime, name, id, pid, sandbox_key, socket}
        container = _validate.no_space(raw.get("container"), field + "container")
        if container is not None:
            if namespace:
                raise OverlayError("give either namespace or container, not both", field + "container")
            self.ns_field = field + "container"
            if present:  # a detach goes by the endpoint's name: the container may be gone already
                self.container = self.inspect(raw, container, defaults)
                self.ns = _netns.of_container(self.container, self.ns_field)
        self.ip_text = _validate.no_space(raw.get("ip"), field + "ip")
        self.mac = _validate.mac(raw.get("mac"), field + "mac")
        self.ifname = _validate.ifname(raw.get("ifname") or defaults["ifname"], field + "ifname")
        self.gw_ifname = _validate.ifname(raw.get("gateway_ifname") or defaults["gateway_ifname"],
                                          field + "gateway_ifname")
        if self.ifname == self.gw_ifname:
            raise OverlayError("must differ from the overlay interface name %s" % self.ifname,
                               field + "gateway_ifname")
        self.ip = None
        # A runtime that moves the interface into the container itself (Docker's Join): the inner end
        # stays in the host namespace under ``ifname``, bare (the runtime sets address, MAC, name).
        self.handoff = bool(raw.get("handoff"))
        if self.handoff:
            self.ns = _netns.resolve(None, None)
        # An address the runtime's IPAM step claimed before the endpoint existed (Docker's
        # RequestAddress): (claim key, index), taken over in the transaction that creates the record.
        self.pending = raw.get("pending")
        self.endpoint_id = raw.get("id")  # the runtime's own endpoint id (Docker's EndpointID), if any
        # Names the names service answers besides the endpoint's (a CNI container's name); None: keep the record's.
        self.aliases = _validate.dns_names(raw.get("aliases"), field + "aliases")

    def inspect(self, raw, container, defaults):
        """Ask the container's runtime for it, through the socket of this item or of the task."""
        runtime_field = self.f("container_runtime") if raw.get("container_runtime") else "container_runtime"
        runtime = _runtime.runtime_name(raw.get("container_runtime") or defaults["container_runtime"],
                                        runtime_field)
        socket_field = self.f("container_socket") if raw.get("container_socket") else "container_socket"
        sock = _validate.no_space(raw.get("container_socket") or defaults["container_socket"], socket_field)
        return _runtime.inspect(container, runtime, sock, self.f("container"), socket_field)

    def f(self, option):
        return self.field + option


def items_from(params):
    _validate.key_segment(params.get("network"), "network")  # a network name or id prefix: both fit
    defaults = {"ifname": params.get("ifname") or "eth0", "gateway_ifname": params.get("gateway_ifname") or "eth1",
                "container_runtime": params.get("container_runtime") or "docker",
                "container_socket": params.get("container_socket")}
    if params.get("endpoints"):
        if params.get("name") is not None:
            raise OverlayError("give either name (one endpoint) or endpoints (a list), not both", "endpoints")
        if params.get("container") is not None:
            raise OverlayError("names the container of the one endpoint given by name; give each item of "
                               "endpoints its own container", "container")
        raws = [(e, "endpoints[%d]." % i) for i, e in enumerate(params["endpoints"])]
        for raw, field in raws:
            if raw.get("network") not in (None, params["network"]):
                raise OverlayError("is %s, but this task attaches to network %s" % (raw["network"], params["network"]),
                                   field + "network")
    elif params.get("name") is not None:  # an empty name is refused as a name, below
        raws = [(dict(name=params["name"], namespace=params.get("namespace"), container=params.get("container"),
                      ip=params.get("ip"), mac=params.get("mac"), handoff=params.get("handoff"),
                      pending=params.get("pending"), id=params.get("endpoint_id"),
                      aliases=params.get("aliases")), "")]
    else:
        raise OverlayError("one of name or endpoints is required", "name")
    present = params.get("state", "present") == "present"
    items = [Item(raw, field, defaults, present) for raw, field in raws]
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
    with _hostlock.HostLock() as lock, _netns.Netlink() as nl, _nft.reads_once():
        if params.get("repair") == "endpoint":  # a runtime's few point reads beat a dump of a big namespace
            nl.snapshots = False
        underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, settings["host"])
        network, index = _records.lookup(store, layout, params["network"])
        # egress "runtime": the container runtime gives egress (Docker's docker_gwbridge), not ours.
        gw = None if network["internal"] or params.get("egress") == "runtime" else _gateway.from_params(params)
        if gw is not None and present:  # the gateway subnet must not overlap the overlay or the underlay
            _validate.no_overlap(gw.subnet, network["subnet"], "gateway_subnet",
                                 "the subnet %s of network %s" % (network["subnet"], network["name"]))
            _validate.no_overlap(gw.subnet, underlay.network, "gateway_subnet",
                                 "the underlay network %s of %s" % (underlay.network, underlay.interface))
        if present:
            _records.usable(network)
            out = attach(nl, store, layout, network, index, gw, underlay, items, params, settings, check_mode,
                         run_command)
            # A scoped attach changed only what the agent's difference sync expects: no mark for it.
            lock.marks = not out.pop("scoped")
            return out
        return detach(nl, store, layout, network, underlay, items, check_mode)


# ------------------------------------------------------------------------------------ present

def validate_items(nl, network, items, existing, claims, macs, underlay, gw, force):
    """Every check that needs the store's or the kernel's view, before anything is written."""
    net = ipaddress.ip_network(network["subnet"])
    gateway = ipaddress.IPv4Address(network["gateway"])
    host_ns = _netns.resolve(None, None)
    overlay_ns = _overlay_ns.namespace(network)
    wanted, wanted_macs, names_in_ns = {}, {}, {}  # names_in_ns: {(namespace identity, ifname): endpoint}
    host_id = _netns.identity(host_ns)
    overlay_ids = {_netns.identity(_netns.resolve(n, "namespace")) for n in _netns.list_named() if n.startswith("ovl-")}
    for item in items:
        if item.ns is None:
            raise OverlayError("is required to attach endpoint %s (or give container)" % item.name, item.f("namespace"))
        _netns.check_exists(item.ns, item.ns_field)
        ns_id = _netns.identity(item.ns)
        if ns_id == host_id and not item.handoff:
            raise OverlayError("%s is this host's own network namespace; an endpoint needs a namespace of its own "
                               "(a container's)" % item.ns.describe(), item.ns_field)
        if ns_id in overlay_ids:
            raise OverlayError("%s is an overlay network's own namespace" % item.ns.describe(), item.ns_field)
        for ifname in (item.ifname, item.gw_ifname):
            other_name = names_in_ns.get((ns_id, ifname))
            if other_name is not None:
                raise OverlayError("endpoints %s and %s both want interface %s in %s"
                                   % (other_name, item.name, ifname, item.ns.describe()), item.f("ifname"))
        names_in_ns.update({(ns_id, item.ifname): item.name, (ns_id, item.gw_ifname): item.name})
        entry = existing.get(item.name)
        record = entry.value if entry is not None else None
        check_interfaces(nl, network, gw, item, record, overlay_ns, force)
        if item.ip_text:
            item.ip = _validate.ipv4_in(item.ip_text, net, item.f("ip"))
            if item.ip == gateway:
                raise OverlayError("%s is the gateway address of network %s" % (item.ip, network["name"]),
                                   item.f("ip"))
            if item.ip in wanted:
                raise OverlayError("%s is requested for both %s and %s" % (item.ip, wanted[item.ip], item.name),
                                   item.f("ip"))
            wanted[item.ip] = item.name
        if item.mac is not None:
            if item.mac == _overlay_ns.bridge_mac(network):
                raise OverlayError("%s is the MAC of network %s's bridge" % (item.mac, network["name"]), item.f("mac"))
            if item.mac in wanted_macs:
                raise OverlayError("%s is requested for both %s and %s" % (item.mac, wanted_macs[item.mac], item.name),
                                   item.f("mac"))
            wanted_macs[item.mac] = item.name
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
            continue
        if item.ip is not None and not item.pending:
            owner = claims.get(str(item.ip))
            if owner is not None:
                raise OverlayError("%s is already taken by endpoint %s of network %s"
                                   % (item.ip, owner, network["name"]), item.f("ip"))
        if item.mac is not None:
            owner = macs.get(item.mac) or next((e.value["name"] for e in existing.values()
                                                if e.value.get("mac") == item.mac), None)
            if owner is not None:
                raise OverlayError("%s is already used by endpoint %s of network %s"
                                   % (item.mac, owner, network["name"]), item.f("mac"))
    if gw is not None:
        check_gateway_subnet(nl, gw)


def check_gateway_subnet(nl, gw):
    """An existing gateway bridge keeps its subnet: re-addressing it would cut every endpoint on it."""
    ipr = nl.get(_netns.resolve(None, None))
    br = _links.find(ipr, gw.name)
    if br is None:
        return
    v4 = [a for a in _links.addresses(ipr, br["index"]) if a.version == 4]
    if v4 and gw.address not in v4:
        raise OverlayError("the gateway bridge %s already has %s; this task asks for %s (gateway_subnet %s). "
                           "Every endpoint on this host shares one gateway bridge"
                           % (gw.name, ", ".join(map(str, v4)), gw.address, gw.subnet), "gateway_subnet")


def check_interfaces(nl, network, gw, item, record, overlay_ns, force):
    """Refuse to replace what this collection did not build, and to take over a live endpoint.

    An interface under the requested name is ours only when it is the peer of this endpoint's
    port (ve-* on br0, gw-* on the gateway bridge). The endpoint is live elsewhere when its br0
    port still exists with its peer in another namespace: the old container still runs.
    """
    ipr = nl.get(item.ns)
    short = record["id"][:10] if record else None
    ends = [("ifname", item.ifname, overlay_ns, OVERLAY_END),
            ("gateway_ifname", item.gw_ifname, _netns.resolve(None, None), GATEWAY_END)]
    for option, ifname, port_ns, pattern in ends:
        msg = _links.find(ipr, ifname)
        if option == "gateway_ifname" and gw is None and (msg is None or item.handoff):
            continue
        port_spec = _links.LinkSpec(port_ns, pattern % short, "") if short else None
        port = _links.find(nl.get(port_ns), port_spec.name) if short and port_ns.exists() else None
        mine = (msg is not None and port is not None and
                _links.is_pair(nl, _links.LinkSpec(item.ns, ifname, ""), msg, port_spec, port))
        if port is not None and not mine and option == "ifname":
            raise OverlayError("endpoint %s is attached to another namespace (%s) that still exists; detach it "
                               "there first (a restarted container's old namespace is gone, which is allowed)"
                               % (item.name, record["namespace"]), item.ns_field)
        if msg is not None and not mine and not force:
            raise OverlayError("%s already has a %s device named %s that overlay.vxlan did not create for this "
                               "endpoint; it will not be replaced (set force: true to replace it)"
                               % (item.ns.describe(), _links.kind(msg) or "plain", ifname), item.f(option))
        if msg is not None and not mine and _links.kind(msg) != "veth":
            raise OverlayError("%s already has a %s device named %s; it is not a veth and will not be replaced"
                               % (item.ns.describe(), _links.kind(msg) or "plain", ifname), item.f(option))


def new_records_builder(network, gw, underlay, new_items):
    """build(state, start, end, attempt) for _records.claim_endpoints: records for items start..end."""
    net = ipaddress.ip_network(network["subnet"])

    def build(state, start, end, attempt):
        existing, claims, macs, gw_claims = state
        chunk = new_items[start:end]
        pending = {}  # item name -> the claim taken over, still there (else the address is claimed afresh)
        for item in chunk:
            if item.name in existing:
                raise OverlayError("endpoint %s was created by another run meanwhile" % item.name, item.f("name"))
            if item.ip is not None and str(item.ip) in claims:
                if not item.pending or claims[str(item.ip)] is not None:
                    raise OverlayError("%s was taken by endpoint %s meanwhile" % (item.ip, claims[str(item.ip)]),
                                       item.f("ip"))
                pending[item.name] = item.pending
            if item.mac is not None and item.mac in macs:
                raise OverlayError("%s was taken by endpoint %s meanwhile" % (item.mac, macs[item.mac]), item.f("mac"))
        reserved = set(claims) | {network["gateway"]} | {str(i.ip) for i in new_items if i.ip is not None}
        # An address whose Docker MAC is already claimed is not free either: an explicit MAC of another
        # endpoint, or a claim that landed between the reads of the address and MAC claims.
        reserved |= {ip for ip in map(_keys.ip_for, macs) if ip is not None}
        automatic = [i for i in chunk if i.ip is None]
        spread = _allocate.spread(attempt)
        ips = iter(_allocate.free_addresses(net, reserved, len(automatic), randomize=spread))
        gw_ips = iter(_allocate.free_addresses(gw.subnet, gw_claims | {gw.router}, len(chunk), randomize=spread,
                                               field="gateway_subnet")) if gw else None
        records = []
        # Port names use an id's first 10 characters (ve-/gw-/vh-): two endpoints sharing them would
        # share ports, and attaching one would delete the other's as "not its peer".
        shorts = {(e.value.get("id") or "")[:10]: e.value.get("name") for e in existing.values()
                  if isinstance(e.value, dict)}
        for item in chunk:
            ip = item.ip if item.ip is not None else next(ips)
            mac = item.mac or _keys.mac_for(ip)
            if item.mac is None and mac in macs:  # an explicit MAC of another endpoint took this one
                raise OverlayError("the MAC %s derived from %s is used by endpoint %s; give this endpoint an ip or "
                                   "a mac" % (mac, ip, macs[mac]), item.f("mac"))
            record = _keys.endpoint_record(network, item.name, ip, mac, underlay.host, underlay.vtep,
                                           item.ifname, next(gw_ips) if gw else None, item.ns.spec,
                                           endpoint_id=item.endpoint_id)
            while record["id"][:10] in shorts and item.endpoint_id is None:
                record["id"] = _keys.new_id()
            if record["id"][:10] in shorts:
                raise OverlayError("endpoint id %s shares its first 10 characters (its port names) with endpoint %s "
                                   "of network %s" % (record["id"], shorts[record["id"][:10]], network["name"]),
                                   item.f("name"))
            shorts[record["id"][:10]] = item.name
            record["gateway_ifname"] = item.gw_ifname if gw else None
            if item.handoff:
                record["handoff"] = True
            if item.aliases:
                record["aliases"] = item.aliases  # in the transaction that creates the record
            if item.name in pending:
                record["_pending"] = list(pending[item.name])  # popped by _records._claim_ops, never stored
            records.append(record)
        return records

    return build


def link_specs(record, network, gw, target_ns, overlay_ns):
    """eth0 <-> ve-* on br0, and unless internal eth1 <-> gw-* on the gateway bridge."""
    ip = ipaddress.ip_interface("%s/%d" % (record["ip"], record["prefixlen"]))
    short = record["id"][:10]
    if record.get("handoff"):  # the runtime moves, renames and addresses it: only MTU and MAC here
        inner = _links.LinkSpec(_netns.resolve(None, None), record["ifname"], "", mtu=network["mtu"],
                                mac=record["mac"])
        return [(inner, _links.LinkSpec(overlay_ns, OVERLAY_END % short, "", mtu=network["mtu"],
                                        master=_overlay_ns.BRIDGE, up=True))]
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


def ensure_default_route(ipr, ifname, router, apply, where, index=None):
    if apply and index is None:
        index = _links.find(ipr, ifname)["index"]
    for route in ipr.get_default_routes(family=socket.AF_INET):
        if route.get("RTA_GATEWAY") == router and (index is None or route.get("RTA_OIF") == index):
            return []
    if apply:
        ipr.route("replace", dst="0.0.0.0/0", gateway=router, oif=index)
    return ["%s: default via %s dev %s" % (where, router, ifname)]


def build_kernel(nl, network, gw, record, ns, apply, default_route):
    """Both pairs of an endpoint as its record says. Returns (actions, {inner name: (link message
    as it is after this call or None, its spec)}): describe() builds the return value from them."""
    overlay_ns = _overlay_ns.namespace(network)
    actions, inner_ends = [], {}
    pairs = link_specs(record, network, gw, ns, overlay_ns)
    for inner, outer in pairs:
        built = _links.ensure_veth(nl, inner, outer, apply)  # (actions, inner end, outer end)
        actions += built[0]
        inner_ends[inner.name] = (built[1], inner)
        outer_msg = built[2]
        if gw is not None and outer.master == gw.name and outer_msg is not None:
            actions += _gateway.isolate_port(nl.get(outer.ns), outer_msg, apply, outer.name)
    if gw is not None and default_route and len(pairs) > 1:
        gw_end = inner_ends[pairs[1][0].name][0]
        actions += ensure_default_route(nl.get(ns), pairs[1][0].name, gw.router, apply,
                                        "%s in %s" % (record["name"], ns.describe()),
                                        gw_end["index"] if gw_end is not None else None)
    return ["%s: %s" % (record["name"], a) for a in actions], inner_ends


def scoped(params, items, network, apply):
    """True for a runtime's attach of new handed-off endpoints (Docker's CreateEndpoint) on a host
    that already has the network, when ``repair: endpoint`` says the agent's peers sync runs: then
    only the new ports are secured, with point requests, and the whole-network repair (other
    networks' stale namespaces, every port's anti-spoofing state, peers, the VTEP firewall) is left
    to that sync, which runs on the change this attach writes. The cost of a ``docker run`` stays
    flat with the endpoints a host holds instead of growing with them."""
    return (params.get("repair") == "endpoint" and apply and all(i.handoff for i in items) and
            _overlay_ns.namespace(network).exists())


def attach(nl, store, layout, network, index, gw, underlay, items, params, settings, check_mode, run_command):
    apply = not check_mode
    narrow = scoped(params, items, network, apply)
    actions = [] if narrow else _overlay_ns.reconcile(nl, _records.all_networks(store, layout), settings["prefix"],
                                                      apply)
    wanted = None
    if narrow and all(i.ip_text for i in items):  # addresses known: point reads, not the network's tree
        net = ipaddress.ip_network(network["subnet"])
        wanted = []
        for item in items:
            ip = _validate.ipv4_in(item.ip_text, net, item.f("ip"))
            wanted.append((item.name, str(ip), item.mac or _keys.mac_for(ip)))
        existing, claims, macs = _records.read_item_state(store, layout, network, wanted)[:3]
    else:
        existing, claims, macs = _records.read_endpoint_state(store, layout, network, underlay.host)[:3]
    narrow = narrow and not any(i.name in existing for i in items)
    validate_items(nl, network, items, existing, claims, macs, underlay, gw, params.get("force", False))
    _underlay.check_mtu(network, underlay)
    new_items = [i for i in items if i.name not in existing]
    # Existing records to rewrite: the endpoint is in a new namespace (a restarted container), or given
    # other aliases than the record holds.
    rewrite = [(existing[i.name], i) for i in items if i.name in existing and (
        existing[i.name].value["namespace"] != i.ns.spec or
        (i.aliases is not None and (existing[i.name].value.get("aliases") or []) != i.aliases))]
    claimed = None
    if new_items:
        actions += ["store: register endpoint %s" % i.name for i in new_items]
        if apply:
            claimed = _records.claim_endpoints(store, layout, network, index, underlay.host,
                                               new_records_builder(network, gw, underlay, new_items),
                                               len(new_items), "addresses in network %s" % network["name"],
                                               wanted if narrow else None)
    created = claimed.records if claimed else []
    try:
        records = {name: e.value for name, e in existing.items()}
        for entry, item in rewrite:
            record = {k: v for k, v in entry.value.items() if k != "orphaned_at"}
            if record["namespace"] != item.ns.spec:
                actions.append("store: endpoint %s now in namespace %s" % (entry.value["name"], item.ns.spec))
                record["namespace"] = item.ns.spec
            if item.aliases is not None and (record.get("aliases") or []) != item.aliases:
                actions.append("store: endpoint %s aliases %s" % (entry.value["name"], ", ".join(item.aliases) or "none"))
                record["aliases"] = item.aliases
                if not item.aliases:
                    del record["aliases"]
            records[record["name"]] = record
            if apply:
                _records.update_endpoint(store, layout, entry, record)
        vx_index = _overlay_ns.intact(nl, network, settings["prefix"]) if narrow else None
        if vx_index is None:
            host_actions, vx_index = _overlay_ns.ensure(nl, network, apply, settings["prefix"])
            actions += host_actions
            narrow = narrow and not host_actions  # a repaired br0 (its MAC set: neighbours flushed) needs it all
        everyone = list(records.values()) + created
        # Before any new port joins br0: the table exists with the new ports' elements (fail closed).
        admitted = _antispoof.admit(nl, network, created, apply) if narrow else None
        narrow = admitted is not None
        actions += admitted if narrow else _antispoof.reconcile(nl, network, everyone, underlay.vtep, apply)
        if gw is not None:
            actions += _gateway.ensure(nl, gw, run_command, apply)
        records.update({r["name"]: r for r in created})
        results = []
        built = False  # a port created or repaired: the second anti-spoofing pass has work to check
        for item in items:
            inner_ends = {}
            record = records.get(item.name)
            if record is None:  # check mode, not yet registered
                actions.append("%s: create interfaces %s%s in %s" % (
                    item.name, item.ifname, "" if gw is None else " and " + item.gw_ifname, item.ns.describe()))
                results.append(with_container({"name": item.name, "network": network["name"],
                                               "namespace": item.ns.spec, "ip": str(item.ip) if item.ip else None,
                                               "host": underlay.host}, item))
                continue
            if not apply and not _overlay_ns.namespace(network).exists():  # check mode: nothing to read yet
                actions.append("%s: create interfaces in %s" % (item.name, item.ns.describe()))
            else:
                kernel, inner_ends = build_kernel(nl, network, gw, record, item.ns, apply,
                                                  params.get("default_route", True))
                built = built or bool(kernel)
                actions += kernel
            results.append(with_container(describe(nl, network, record, item.ns, apply, inner_ends), item))
        secured = _antispoof.secure(nl, network, created, apply) if narrow else None
        if secured is not None:  # the new ports only; the agent's sync repairs the rest
            actions += secured
        else:
            actions += _firewall.sync_store(store, layout, underlay.vtep, apply)
            if vx_index is not None:  # read under the host lock: no sync since can have seen newer records
                actions += _peers.sync(nl.get(_overlay_ns.namespace(network)), vx_index,
                                       _peers.desired(records.values(), underlay.vtep), apply)
        # The new ports exist now: learning off, static FDB entries, neighbours. With no port built or
        # repaired the first pass already saw the same ports, so a second one could only find the same.
        if apply and built and secured is None:
            actions += _antispoof.reconcile(nl, network, everyone, underlay.vtep, apply)
    except BaseException:
        if created:  # nothing half-built: undo what this run built and claimed
            for record in created:
                _remove_kernel(nl, network, record, apply=True)
            _records.release(store, layout, created, claimed.indexes)
            ids = {r["id"] for r in created}
            try:  # and the anti-spoofing elements the new ports were given before they existed
                _antispoof.reconcile(nl, network, [r for r in records.values() if r["id"] not in ids],
                                     underlay.vtep, True)
            except Exception:  # noqa: BLE001 - the first error is the one to report; verify shows the rest
                pass
        raise
    return {"changed": bool(actions), "actions": actions, "network": network, "endpoints": results,
            "scoped": narrow and secured is not None,
            "diff": {"before": {"endpoints": {i.name: diff_fields(existing[i.name].value)
                                              for i in items if i.name in existing}},
                     "after": {"endpoints": {r["name"]: diff_fields(r) for r in results}, "actions": actions}}}


def with_container(result, item):
    """A result entry with what the runtime reported for the item's container, if it named one."""
    if item.container is not None:
        result["container"] = {k: item.container[k] for k in ("runtime", "name", "id", "pid", "sandbox_key")}
    return result


DIFF_FIELDS = ("network", "namespace", "ip", "mac", "ifname", "gateway_ip", "host", "vtep")


def diff_fields(record):
    """An endpoint as ``--diff`` shows it, field by field (the same fields before and after, so a
    moved namespace or a new address reads as one changed line; kernel repairs are the actions)."""
    return {k: record.get(k) for k in DIFF_FIELDS}


def describe(nl, network, record, ns, applied, inner_ends=None):
    """The record with the target-side interfaces. ``inner_ends`` (from build_kernel): the links
    as build_kernel left them, with the addresses it made them have, so nothing is read again."""
    out = dict(record)
    out["interfaces"] = {}
    if applied and ns.exists():
        ipr = nl.get(ns)
        for name in (record["ifname"], record.get("gateway_ifname")):
            msg, spec = (inner_ends or {}).get(name, (None, None))
            if msg is None:
                msg, spec = (_links.find(ipr, name) if name else None), None
            if msg is not None:
                out["interfaces"][name] = _links.view(ipr, msg, ns.spec, spec.addresses if spec else None)
    return out


# ------------------------------------------------------------------------------------ absent

def _owned_ends(nl, network, record):
    """The ends we own (ve-* in the overlay namespace, gw-* on the host) that exist: [(ns, name, msg)]."""
    short = record["id"][:10]
    ends = [(_overlay_ns.namespace(network), OVERLAY_END % short)]
    if record.get("gateway_ip"):
        ends.append((_netns.resolve(None, None), GATEWAY_END % short))
    found = []
    for ns, name in ends:
        msg = _links.find(nl.get(ns), name) if ns.exists() else None
        if msg is not None:
            found.append((ns, name, msg))
    return found


def _remove_kernel(nl, network, record, apply):
    """Delete the ends we own (ve-* in the overlay namespace, gw-* on the host): each takes its peer
    in the target namespace with it, and a namespace whose PID was reused is never touched."""
    actions = []
    for ns, name, msg in _owned_ends(nl, network, record):
        actions.append("delete %s in %s" % (name, ns.describe()))
        if apply:
            _links.delete(nl.get(ns), msg)
    return actions


def _remove_kernel_many(nl, network, records):
    """_remove_kernel for a batch: every end found first, then one group delete per namespace."""
    by_ns = {}
    for record in records:
        for ns, _name, msg in _owned_ends(nl, network, record):
            by_ns.setdefault(ns, []).append(msg)
    for ns, msgs in by_ns.items():
        _links.delete_many(nl.get(ns), msgs)


def detach_entries(nl, store, layout, network, entries, check_mode):
    """Detach endpoints of this host (also used by overlay_network force): mark the records in
    Consul (a refused write stops here, before any interface is touched), remove the interfaces,
    then delete the records and claims. A failure after the mark leaves records marked
    ``detaching`` that the next detach or the garbage collection finishes."""
    actions = []
    records = [e.value for e in entries]
    if records:  # before the ports go: their elements, static FDB entries and neighbours
        gone = {r["name"] for r in records}
        remaining = [e for e in store.values(layout.endpoints(network["id"]))
                     if isinstance(e, dict) and e.get("name") not in gone]
    for entry in entries:
        actions += ["%s: %s" % (entry.value["name"], a)
                    for a in _remove_kernel(nl, network, entry.value, apply=False)]
        actions.append("store: remove endpoint %s (%s)" % (entry.value["name"], entry.value["ip"]))
    if check_mode or not entries:
        if records:
            actions += _antispoof.reconcile(nl, network, remaining, records[0]["vtep"], False)
        return actions
    indexes = _records.mark_detaching(store, layout, entries)
    actions += _antispoof.reconcile(nl, network, remaining, records[0]["vtep"], True)
    _remove_kernel_many(nl, network, records)
    _records.release(store, layout, records, indexes)
    return actions


def detach(nl, store, layout, network, underlay, items, check_mode):
    existing = _records.read_endpoint_state(store, layout, network, underlay.host)[0]
    entries = []
    for item in items:
        entry = existing.get(item.name)
        if entry is None:
            continue
        if entry.value["host"] != underlay.host:
            raise OverlayError("endpoint %s is attached on host %s; remove it there" % (item.name, entry.value["host"]),
                               item.f("name"))
        entries.append(entry)
    actions = detach_entries(nl, store, layout, network, entries, check_mode)
    return {"changed": bool(actions), "actions": actions, "network": network,
            "endpoints": [dict(e.value, state="absent") for e in entries],
            "diff": {"before": {"endpoints": {e.value["name"]: diff_fields(e.value) for e in entries}},
                     "after": {"endpoints": {}, "actions": actions}}}
