# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure input checks shared by every module. Each raises OverlayError naming the field."""
from __future__ import annotations

import ipaddress
import re

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

IFNAMSIZ = 15  # the kernel's limit, without the trailing NUL
_IFNAME_BAD = re.compile(r"[\s/:%]")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MTU_MIN = 68
MTU_MAX = 65535


def ifname(value, field):
    if not isinstance(value, str) or not value:
        raise OverlayError("must be a non-empty interface name", field)
    if len(value) > IFNAMSIZ:
        raise OverlayError("interface name %r is %d characters long; the kernel allows at most %d"
                           % (value, len(value), IFNAMSIZ), field)
    if value in (".", "..") or _IFNAME_BAD.search(value):
        raise OverlayError("interface name %r may not be '.' or '..' nor contain whitespace, '/', ':' or '%%'"
                           % value, field)
    return value


def mtu(value, field, maximum=MTU_MAX):
    if value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise OverlayError("MTU %r is not an integer" % (value,), field)
    if not MTU_MIN <= value <= maximum:
        raise OverlayError("MTU %d is outside %d..%d" % (value, MTU_MIN, maximum), field)
    return value


def mac(value, field):
    if value is None:
        return None
    text = str(value).strip().lower().replace("-", ":")
    if not _MAC.match(text):
        raise OverlayError("%r is not a MAC address (expected six hex bytes like 02:42:c0:a8:00:64)" % (value,), field)
    if int(text[:2], 16) & 1:
        raise OverlayError("%s is a multicast MAC address; an interface needs a unicast one" % text, field)
    if text == "00:00:00:00:00:00":
        raise OverlayError("the all-zero MAC address cannot be assigned", field)
    return text


def interface_address(value, field):
    """An address with prefix length, as an ip_interface; a bare address gets /32 or /128."""
    try:
        iface = ipaddress.ip_interface(str(value).strip())
    except ValueError:
        raise OverlayError("%r is not an IPv4 or IPv6 address with prefix length (like 10.0.0.2/24)" % (value,), field)
    return iface


def interface_addresses(values, field):
    if values is None:
        return None
    seen = {}
    for value in values:
        iface = interface_address(value, field)
        if iface.version == 6 and iface.ip.is_link_local:
            raise OverlayError("%s is an IPv6 link-local address; those are left to the kernel" % iface, field)
        if iface.ip in seen:
            raise OverlayError("address %s is listed twice" % iface.ip, field)
        seen[iface.ip] = iface
    return sorted(seen.values(), key=lambda i: (i.version, int(i.ip)))


def subnet(value, field):
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as e:
        raise OverlayError("%r is not a valid subnet in CIDR form (%s)" % (value, e), field)
    if net.version != 4:
        raise OverlayError("only IPv4 overlay subnets are supported", field)
    if net.prefixlen > 30:
        raise OverlayError("%s leaves no room for endpoints; use a /30 or larger" % net, field)
    return net


def ipv4_in(value, net, field):
    try:
        ip = ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise OverlayError("%r is not an IPv4 address" % (value,), field)
    if ip not in net:
        raise OverlayError("%s is outside the subnet %s" % (ip, net), field)
    if ip in (net.network_address, net.broadcast_address):
        raise OverlayError("%s is the %s address of %s" %
                           (ip, "network" if ip == net.network_address else "broadcast", net), field)
    return ip


def int_range(value, low, high, field, what):
    if value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise OverlayError("%s %r is not an integer" % (what, value), field)
    if not low <= value <= high:
        raise OverlayError("%s %d is outside %d..%d" % (what, value, low, high), field)
    return value


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def object_name(value, field, max_len=64):
    """Names used as Consul key segments: networks, endpoints, hosts."""
    if not isinstance(value, str) or not _NAME.match(value) or len(value) > max_len:
        raise OverlayError("%r is not a valid name: use 1-%d letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit" % (value, max_len), field)
    return value
