# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""This host in the cluster: its name, its VTEP address and the MTU of the underlay interface."""
from __future__ import annotations

import ipaddress
import socket

from ansible_collections.overlay.vxlan.plugins.module_utils import _links, _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8

HOST_ARGS = dict(
    host=dict(type="str"),
    vtep=dict(type="str"),
)


class Underlay:
    def __init__(self, host, vtep, interface, mtu, network=None):
        self.host = host
        self.vtep = vtep
        self.interface = interface
        self.mtu = mtu
        self.network = network  # the VTEP address's subnet: overlay and gateway subnets stay out of it

    @property
    def max_overlay_mtu(self):
        return self.mtu - VXLAN_OVERHEAD


def host_name(params):
    """The host's name in Consul keys: ``host``, else socket.gethostname(); both checked."""
    if params.get("host") is None:
        return _validate.host_name(socket.gethostname(), "host", default=True)
    return _validate.host_name(params["host"], "host")


def discover(ipr, params, consul_host):
    """Resolve ``vtep`` (an interface or an address, like Docker's --cluster-advertise).

    Without it: the address the kernel would use to reach a non-loopback Consul server,
    else the address of the interface holding the default route.
    """
    spec = params.get("vtep")
    if spec:
        try:
            ip = ipaddress.IPv4Address(spec)
        except ValueError:
            return _from_interface(ipr, spec)
        return _from_address(ipr, ip)
    target = _ip_or_none(consul_host)
    if target is not None and not target.is_loopback:
        route = ipr.route("get", dst=str(target))[0]
        return _from_address(ipr, ipaddress.IPv4Address(route.get("RTA_PREFSRC")))
    for route in ipr.get_default_routes(family=socket.AF_INET):
        oif = route.get("RTA_OIF")
        msg = _links.by_index(ipr, oif) if oif else None
        if msg is not None:
            return _from_interface(ipr, msg.get("IFLA_IFNAME"))
    raise OverlayError("cannot tell this host's VTEP address: no default route and Consul is local; "
                       "set vtep to the underlay interface or address", "vtep")


def _ip_or_none(text):
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _from_interface(ipr, name):
    msg = _links.find(ipr, name)
    if msg is None:
        raise OverlayError("interface %s does not exist on this host" % name, "vtep")
    v4 = [a for a in _links.addresses(ipr, msg["index"]) if a.version == 4]
    if not v4:
        raise OverlayError("interface %s has no IPv4 address to use as VTEP" % name, "vtep")
    return Underlay(None, str(v4[0].ip), name, msg.get("IFLA_MTU"), v4[0].network)


def _from_address(ipr, ip):
    for msg in ipr.get_links():
        for iface in _links.addresses(ipr, msg["index"]):
            if iface.ip == ip:
                return Underlay(None, str(ip), msg.get("IFLA_IFNAME"), msg.get("IFLA_MTU"), iface.network)
    raise OverlayError("no interface on this host holds %s" % ip, "vtep")


def local(ipr, params, consul_host):
    underlay = discover(ipr, params, consul_host)
    underlay.host = host_name(params)
    return underlay


def check_mtu(record, underlay):
    """A network's MTU must fit the underlay after the VXLAN encapsulation."""
    if record["mtu"] > underlay.max_overlay_mtu:
        raise OverlayError(
            "%d is too big for the underlay: %s has MTU %d, which leaves at most %d after the %d bytes of VXLAN "
            "encapsulation" % (record["mtu"], underlay.interface, underlay.mtu, underlay.max_overlay_mtu,
                               VXLAN_OVERHEAD), "mtu")
