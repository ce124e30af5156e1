# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The netns_veth module's work: validate everything first, then reconcile one veth pair."""
from __future__ import annotations

from ansible_collections.overlay.vxlan.plugins.module_utils import _links, _netns, _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError


IPV6_MIN_MTU = 1280


def _end_spec(params, field, up, default_mtu=None):
    prefix = field + "." if field else ""
    ns = _netns.resolve(params.get("namespace"), prefix + "namespace")
    mtu = params.get("mtu")
    spec = _links.LinkSpec(
        ns=ns,
        name=_validate.ifname(params["name"], prefix + "name"),
        field=field,
        mtu=_validate.mtu(mtu if mtu is not None else default_mtu, prefix + "mtu"),
        mac=_validate.mac(params.get("mac"), prefix + "mac"),
        addresses=_validate.interface_addresses(params.get("addresses"), prefix + "addresses"),
        master=params.get("master"),
        up=up,
    )
    if spec.mtu is not None and spec.mtu < IPV6_MIN_MTU and any(a.version == 6 for a in spec.addresses or ()):
        # The kernel disables IPv6 on a link whose MTU is below 1280 and refuses its addresses.
        raise OverlayError("IPv6 addresses need an MTU of at least %d; the MTU is %d" % (IPV6_MIN_MTU, spec.mtu),
                           prefix + "addresses")
    return spec


def _validate_environment(nl, specs, present, create, check_mode):
    """Everything that can fail is checked before the first change."""
    created = []
    for spec in specs:
        if not present and not spec.ns.exists():
            continue
        if (_netns.check_exists(spec.ns, spec.f("namespace"), create=create and present, check_mode=True)
                and spec.ns not in created):
            created.append(spec.ns)
    if not present:
        return created
    a, b = specs
    if a.name == b.name and _netns.same_namespace(a.ns, b.ns):
        raise OverlayError("both ends are named %s in %s" % (a.name, a.ns.describe()), "peer.name")
    for spec in specs:
        if spec.master and spec.ns not in created:
            _links.bridge_index(nl.get(spec.ns), spec.master, spec.f("master"))
        elif spec.master:
            raise OverlayError("bridge %s cannot exist in namespace %s, which is about to be created"
                               % (spec.master, spec.ns.spec), spec.f("master"))
    for spec in specs:
        if spec.ns not in created:
            _links.veth_end(nl.get(spec.ns), spec)  # raises on a non-veth device under that name
    return created


def run_netns_veth(params, check_mode):
    _netns.require_pyroute2()
    _netns.require_root()
    present = params["state"] == "present"
    up = params["link_state"] == "up"
    a = _end_spec(params, "", up)
    b = _end_spec(params["peer"], "peer", up, default_mtu=params.get("mtu"))
    with _netns.Netlink() as nl:
        created = _validate_environment(nl, (a, b), present, params["create_namespaces"], check_mode)
        before = {"end": _read(nl, a), "peer": _read(nl, b)}
        actions = []
        for ns in created:
            actions.append("create namespace %s" % ns.spec)
            if not check_mode:
                _netns.check_exists(ns, None, create=True)
        if present:
            if check_mode and created:
                # A namespace that does not exist yet cannot be opened: report the creation only.
                actions.append("create veth %s (%s) <-> %s (%s)" % (a.name, a.ns.describe(), b.name, b.ns.describe()))
                after = {"end": _links.project(None, a, a.ns.spec, "veth"),
                         "peer": _links.project(None, b, b.ns.spec, "veth")}
            else:
                more, la, lb = _links.ensure_veth(nl, a, b, apply=not check_mode)
                actions += more
                if check_mode:
                    after = {"end": _links.project(before["end"] if la is not None else None, a, a.ns.spec, "veth"),
                             "peer": _links.project(before["peer"] if lb is not None else None, b, b.ns.spec, "veth")}
                else:
                    after = {"end": _links.view(nl.get(a.ns), la, a.ns.spec),
                             "peer": _links.view(nl.get(b.ns), lb, b.ns.spec)}
        else:
            actions += _links.remove_veth(nl, a, b, apply=not check_mode)
            after = {"end": None, "peer": None}
    return {
        "changed": bool(actions),
        "actions": actions,
        "end": after["end"],
        "peer": after["peer"],
        "diff": {"before": {k: _links.comparable(v) for k, v in before.items()},
                 "after": {k: _links.comparable(v) for k, v in after.items()}},
    }


def _read(nl, spec):
    if not spec.ns.exists():
        return None
    ipr = nl.get(spec.ns)
    msg = _links.find(ipr, spec.name)
    return _links.view(ipr, msg, spec.ns.spec) if msg is not None and _links.kind(msg) == "veth" else None
