# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure input checks shared by every module. Each raises OverlayError naming the field."""
from __future__ import annotations

import ipaddress
import re

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

IFNAMSIZ = 15  # the kernel's limit, without the trailing NUL
_IFNAME_BAD = re.compile(r"[\s/:%\x00-\x1f\x7f]")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MTU_MIN = 68
MTU_MAX = 65535


_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def no_space(value, field):
    """Refuse a value with whitespace or a control character anywhere (a trailing newline from a
    template or a file, most often) instead of stripping it silently. None passes through."""
    if isinstance(value, str) and _SPACE.search(value):
        raise OverlayError("%r contains whitespace or a control character (a trailing newline?); "
                           "give the value alone" % (value,), field)
    return value


def not_boolean(value, field):
    """Python's True is 1 and Ansible's type='int' lets a boolean through unchanged: refuse it."""
    if isinstance(value, bool):
        raise OverlayError("%r is a boolean, not an integer" % (value,), field)
    return value


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
    not_boolean(value, field)
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
    no_space(value, field)
    text = str(value).lower().replace("-", ":")
    if not _MAC.match(text):
        raise OverlayError("%r is not a MAC address (expected six hex bytes like 02:42:c0:a8:00:64)" % (value,), field)
    if int(text[:2], 16) & 1:
        raise OverlayError("%s is a multicast MAC address; an interface needs a unicast one" % text, field)
    if text == "00:00:00:00:00:00":
        raise OverlayError("the all-zero MAC address cannot be assigned", field)
    return text


def interface_address(value, field):
    """An address with prefix length, as an ip_interface; a bare address gets /32 or /128."""
    no_space(value, field)
    try:
        iface = ipaddress.ip_interface(str(value))
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
    no_space(value, field)
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as e:
        raise OverlayError("%r is not a valid subnet in CIDR form (%s)" % (value, e), field)
    if net.version != 4:
        raise OverlayError("only IPv4 overlay subnets are supported", field)
    if net.prefixlen > 30:
        raise OverlayError("%s leaves no room for endpoints; use a /30 or larger" % net, field)
    return net


def ipv4_in(value, net, field):
    no_space(value, field)
    try:
        ip = ipaddress.IPv4Address(str(value))
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
    not_boolean(value, field)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise OverlayError("%s %r is not an integer" % (what, value), field)
    if not low <= value <= high:
        raise OverlayError("%s %d is outside %d..%d" % (what, value, low, high), field)
    return value


# Address space an overlay subnet must stay out of: (what it is, the block, why).
SPECIAL_SUBNETS = (
    ("'this network'", ipaddress.IPv4Network("0.0.0.0/8"), "0.0.0.0/8 is not routable"),
    ("loopback", ipaddress.IPv4Network("127.0.0.0/8"), "every host answers it itself"),
    ("link-local", ipaddress.IPv4Network("169.254.0.0/16"), "it is never forwarded and clouds serve metadata there"),
    ("multicast", ipaddress.IPv4Network("224.0.0.0/4"), "an interface cannot hold multicast addresses"),
    ("reserved", ipaddress.IPv4Network("240.0.0.0/4"), "240.0.0.0/4 (and the broadcast address) are not usable"),
)


def overlay_subnet(value, field):
    """An overlay (or gateway) subnet: a valid IPv4 CIDR (see ``subnet``) that is not, inside, or
    containing loopback, link-local, multicast, reserved or 'this network' address space."""
    net = subnet(value, field)
    if net.prefixlen == 0:
        raise OverlayError("%s is every IPv4 address; an overlay needs a subnet of its own" % net, field)
    for what, block, why in SPECIAL_SUBNETS:
        if net.subnet_of(block):
            raise OverlayError("%s is %s address space (%s): %s" % (net, what, block, why), field)
        if net.overlaps(block):
            raise OverlayError("%s contains the %s range %s: %s" % (net, what, block, why), field)
    return net


def no_overlap(net, other, field, what):
    """Refuse ``net`` (the option ``field``) when it overlaps ``other``; ``what`` names other for
    the message, e.g. "the underlay network 10.0.0.0/24 of eth0". ``other`` None: nothing to check."""
    if other is None:
        return net
    net, other = ipaddress.ip_network(str(net)), ipaddress.ip_network(str(other))
    if net.version != other.version or not net.overlaps(other):
        return net
    relation = "is" if net == other else "is inside" if net.subnet_of(other) else "contains"
    raise OverlayError("%s %s %s; the two must not overlap" % (net, relation, what), field)


# The one pattern for every string that becomes part of a Consul key (network, endpoint and host
# names, each segment of consul_prefix); docs/key-layout.md documents it. fullmatch, not match
# with '$': '$' also matches before a trailing newline. re.ASCII: no non-ASCII letters.
KEY_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
KEY_SEGMENT_MAX = 64
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", re.ASCII)


def key_segment(value, field, max_len=KEY_SEGMENT_MAX, what="name"):
    """``value`` unchanged if it may be one segment of a Consul key: 1 to 64 ASCII letters,
    digits, '.', '_' or '-', starting with a letter or digit (so never '.', '..', '', a '/',
    '%', whitespace, a control character or a non-ASCII letter)."""
    if not isinstance(value, str) or len(value) > max_len or not KEY_SEGMENT.fullmatch(value):
        raise OverlayError("%r is not a valid %s: use 1-%d ASCII letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit" % (value, what, max_len), field)
    return value


def is_key_segment(value):
    """key_segment as a yes/no, for a lookup that also accepts ids."""
    return isinstance(value, str) and len(value) <= KEY_SEGMENT_MAX and bool(KEY_SEGMENT.fullmatch(value))


def object_name(value, field, max_len=KEY_SEGMENT_MAX):
    """Names used as Consul key segments: networks, endpoints. The same check as key_segment."""
    return key_segment(value, field, max_len)


def host_name(value, field="host", default=False):
    """A host name as RFC 1123 allows it (dot-separated labels of ASCII letters, digits and '-',
    not starting or ending with '-'), at most 64 characters (Linux's HOST_NAME_MAX), which also
    makes it a valid key segment. ``default``: the value came from socket.gethostname()."""
    ok = isinstance(value, str) and 0 < len(value) <= KEY_SEGMENT_MAX and KEY_SEGMENT.fullmatch(value) \
        and all(_HOST_LABEL.fullmatch(label) and len(label) <= 63 for label in value.split("."))
    if not ok:
        raise OverlayError("%s%r is not a valid host name: use dot-separated labels of ASCII letters, digits "
                           "and '-' (not first or last), at most %d characters in all%s"
                           % ("this machine's name " if default else "", value, KEY_SEGMENT_MAX,
                              "; set host" if default else ""), field)
    return value


DNS_NAME_MAX = 253
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)


def is_dns_name(value):
    """A name the names service can answer: dot-separated labels of 1-63 ASCII letters, digits,
    '_' or '-' (not first or last), at most 253 characters in all (a container's name, a pod's)."""
    return isinstance(value, str) and 0 < len(value) <= DNS_NAME_MAX and \
        all(_DNS_LABEL.fullmatch(label) for label in value.split("."))


def dns_names(values, field):
    """A list of DNS names (an endpoint's aliases), sorted and without repeats. None passes through."""
    if values is None:
        return None
    if not isinstance(values, (list, tuple)):
        raise OverlayError("must be a list of names, not %r" % (values,), field)
    for value in values:
        if not is_dns_name(value):
            raise OverlayError("%r is not a valid DNS name: use dot-separated labels of 1-63 ASCII letters, digits, "
                               "'_' or '-' (not first or last), at most %d characters in all" % (value, DNS_NAME_MAX),
                               field)
    return sorted(set(values))


def consul_prefix(value, field="consul_prefix"):
    """The key prefix without leading or trailing '/': every '/'-separated segment a key_segment.
    None means the default, 'overlay'."""
    if value is None:
        return "overlay"
    if not isinstance(value, str):
        raise OverlayError("%r is not a string" % (value,), field)
    prefix = value.strip("/")
    if not prefix:
        raise OverlayError("must not be empty", field)
    for segment in prefix.split("/"):
        if len(segment) > KEY_SEGMENT_MAX or not KEY_SEGMENT.fullmatch(segment):
            raise OverlayError("segment %r of %r is not a valid name: use 1-%d ASCII letters, digits, '.', '_' "
                               "or '-', starting with a letter or digit, between single '/'"
                               % (segment, value, KEY_SEGMENT_MAX), field)
    return prefix
