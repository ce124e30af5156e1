# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A synchronous rtnetlink socket for the requests a run makes by the hundred.

pyroute2 0.9 sends every request through an asyncio event loop and its request compiler: about
0.25 ms of CPU for a ``link("set")`` the kernel itself answers in 0.05 ms, 0.45 ms for a ``link
("get")`` (benchmarks/README.md, "the netlink transport"). Attaching 50 endpoints makes about a
thousand requests, so that machinery was most of a run's CPU. ``Socket`` builds the very same
messages with pyroute2's own message classes (``ifinfmsg``, ``ifaddrmsg``, ``ndmsg``, ``rtmsg``,
``nsidmsg``), writes them to a plain blocking netlink socket and reads the answer in the same call.
Answers read like IPRoute's (``msg["index"]``, ``msg.get("IFLA_MTU")``, ...) but are decoded on
demand, from pyroute2's tables (``Message``).

It answers the calls this collection makes in its hot paths, in the shapes it makes them (see
``NATIVE``); any other call, or a known call with other arguments, goes to an IPRoute opened in
the same namespace at its first use, so a caller never needs to know which path served it.
tests/unit/test_rtnl.py holds each native request against the bytes pyroute2's own compiler
(IPBatch) makes for the same call.
"""
from __future__ import annotations

import errno
import socket
import struct
import threading

# Kernel ABI (linux/netlink.h, linux/rtnetlink.h), as pyroute2 names them.
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTM_NEWNSID, RTM_GETNSID = 88, 90

try:  # _netns imports this module only where pyroute2 imports, and reports a missing one
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.marshal import Marshal
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    from pyroute2.netlink.rtnl.nsidmsg import nsidmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
except ImportError:
    NetlinkError = OSError
    ifaddrmsg = ifinfmsg = Marshal = ndmsg = nsidmsg = rtmsg = None

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11  # the kernel's reason for a refusal comes with it (NLMSGERR_ATTR_MSG)
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # flags of an error answer
NLMSGERR_ATTR_MSG = 1
IFF_UP = 0x1
NTF_SELF = 0x02
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
RTA_DST = "RTA_DST"

# The flags IPRoute puts on each kind of request.
F_GET = NLM_F_REQUEST | NLM_F_ACK
F_DUMP = NLM_F_REQUEST | NLM_F_DUMP
F_SET = NLM_F_REQUEST | NLM_F_ACK
F_ADD = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
F_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
F_APPEND = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND

# link("set")/link("add") keywords this socket encodes itself, one table per field: the NLA
# each goes to. "state" goes to the header's flags instead (IFF_UP in flags and change).
LINK_ATTRS = {
    "ifname": "IFLA_IFNAME",
    "mtu": "IFLA_MTU",
    "address": "IFLA_ADDRESS",
    "master": "IFLA_MASTER",
    "net_ns_fd": "IFLA_NET_NS_FD",
    "group": "IFLA_GROUP",
    "ifalias": "IFLA_IFALIAS",
}
VETH_PEER_ATTRS = ("ifname", "mtu", "address", "net_ns_fd")
# brport("set") keywords: bridge port flags, all one byte (IFLA_BRPORT_*).
BRPORT_ATTRS = {"learning", "proxyarp", "isolated", "neigh_suppress", "unicast_flood", "mcast_flood",
                "bcast_flood", "flood", "hairpin_mode", "guard", "protect", "fast_leave", "proxyarp_wifi"}

# What Socket serves itself, for the reader: every other call goes to IPRoute.
NATIVE = ("get_links()", "link('get', index=|ifname=)", "link('set', index=, %s, state=)" % ", ".join(LINK_ATTRS),
          "link('del', index=|group=)", "link('add', kind='bridge'|'vxlan'|'veth', ..., peer={...})", "brport('set', index=, ...)",
          "get_addr(index=, family=)", "addr('add'|'del', index=, address=, prefixlen=, broadcast=)",
          "fdb('dump', ifindex=)", "fdb('replace'|'append', ...)", "neigh('replace', ...)",
          "get_neighbours(family=, ifindex=)", "get_default_routes(family=)", "route('get', dst=)",
          "route('replace', dst='0.0.0.0/0', ...)",
          "get_netnsid(fd=)")


class Unsupported(Exception):
    """A call this socket does not encode itself: IPRoute serves it."""


def _header(msg, msg_type, flags):
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    return msg


# ------------------------------------------------------------------ requests, as IPRoute builds them
# Each returns the message, its type and flags set (sequence number and port id are the socket's).

def link_get(index=None, ifname=None):
    msg = _header(ifinfmsg(), RTM_GETLINK, F_GET)
    msg["index"] = index or 0
    if ifname is not None:
        msg["attrs"].append(("IFLA_IFNAME", ifname))
    return msg


def link_dump():
    return _header(ifinfmsg(), RTM_GETLINK, F_DUMP)


def _link_fields(msg, kwargs):
    for key in LINK_ATTRS:
        if key in kwargs:
            msg["attrs"].append((LINK_ATTRS[key], kwargs[key]))
    if "state" in kwargs:
        msg["change"] = IFF_UP
        msg["flags"] = IFF_UP if kwargs["state"] == "up" else 0


def link_set(index, **kwargs):
    if set(kwargs) - set(LINK_ATTRS) - {"state"} or kwargs.get("state", "up") not in ("up", "down") or not index:
        raise Unsupported()
    msg = _header(ifinfmsg(), RTM_NEWLINK, F_SET)
    msg["index"] = index
    _link_fields(msg, kwargs)
    return msg


def link_del(index=None, group=None):
    if (index is None) == (group is None):
        raise Unsupported()
    msg = _header(ifinfmsg(), RTM_DELLINK, F_SET)
    msg["index"] = index or 0
    if group is not None:
        msg["attrs"].append(("IFLA_GROUP", group))
    return msg


def link_add(kind, peer=None, **kwargs):
    """A bridge, a vxlan device (``vxlan_*`` keywords: IFLA_VXLAN_* in IFLA_INFO_DATA) or a veth
    pair in one RTM_NEWLINK: the end here with its attributes, the peer's in
    IFLA_INFO_DATA/VETH_INFO_PEER (a nested ifinfmsg)."""
    own = set(kwargs) - {"state"} - {k for k in kwargs if kind == "vxlan" and k.startswith("vxlan_")}
    if kind not in ("bridge", "vxlan", "veth") or (peer is not None) != (kind == "veth") \
            or own - set(LINK_ATTRS) or set(peer or ()) - set(VETH_PEER_ATTRS) \
            or kwargs.get("state", "up") not in ("up", "down"):
        raise Unsupported()
    msg = _header(ifinfmsg(), RTM_NEWLINK, F_ADD)
    _link_fields(msg, kwargs)
    info = [("IFLA_INFO_KIND", kind)]
    if kind == "veth":
        peer_msg = {"attrs": [(LINK_ATTRS[key], peer[key]) for key in VETH_PEER_ATTRS if key in peer],
                    "family": 0, "ifi_type": 0, "index": 0, "flags": 0, "change": 0}
        info.append(("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_msg)]}))
    elif kind == "vxlan":
        info.append(("IFLA_INFO_DATA", {"attrs": [("IFLA_" + key.upper(), value) for key, value in kwargs.items()
                                                  if key.startswith("vxlan_")]}))
    msg["attrs"].append(("IFLA_LINKINFO", {"attrs": info}))
    return msg


def brport_set(index, **kwargs):
    if set(kwargs) - BRPORT_ATTRS or not index:
        raise Unsupported()
    msg = _header(ifinfmsg(), RTM_NEWLINK, F_SET)
    msg["index"] = index
    msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "bridge_slave"),
        ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_" + key.upper(), int(kwargs[key])) for key in kwargs]})]}))
    return msg


def addr_dump(family=socket.AF_UNSPEC):
    msg = _header(ifaddrmsg(), RTM_GETADDR, F_DUMP)
    msg["family"] = family
    return msg


def addr_change(cmd, index, address, prefixlen, broadcast=None):
    if ":" in address or cmd not in ("add", "del"):
        raise Unsupported()  # IPv4 only here: IPRoute picks the family of anything else
    msg = _header(ifaddrmsg(), RTM_NEWADDR if cmd == "add" else RTM_DELADDR, F_ADD if cmd == "add" else F_SET)
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = prefixlen
    msg["index"] = index
    msg["attrs"].append(("IFA_ADDRESS", address))
    if broadcast is not None:
        msg["attrs"].append(("IFA_BROADCAST", broadcast))
    msg["attrs"].append(("IFA_LOCAL", address))
    return msg


def neigh_dump(family):
    msg = _header(ndmsg(), RTM_GETNEIGH, F_DUMP)
    msg["family"] = family
    return msg


def neigh_replace(ifindex, dst, lladdr, state):
    """An IPv4 neighbour entry (``neigh("replace")``)."""
    if ":" in dst:
        raise Unsupported()
    msg = _header(ndmsg(), RTM_NEWNEIGH, F_REPLACE)
    msg["family"] = socket.AF_INET
    msg["ifindex"] = ifindex
    msg["state"] = state
    msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
    return msg


def fdb_change(cmd, ifindex, lladdr, state, master=None, dst=None):
    """A bridge FDB entry: ``replace`` with ``master`` (an entry of the bridge for its port),
    ``append`` with ``dst`` (a vxlan device's own entry). ``append`` gets what IPRoute.fdb adds to
    it: NUD_NOARP in the state, NTF_SELF in the flags."""
    if (cmd, master is None, dst is None) not in (("replace", False, True), ("append", True, False)) \
            or (dst is not None and ":" in dst):
        raise Unsupported()
    msg = _header(ndmsg(), RTM_NEWNEIGH, F_REPLACE if cmd == "replace" else F_APPEND)
    msg["family"] = socket.AF_BRIDGE
    msg["ifindex"] = ifindex
    if cmd == "append":
        state |= NUD_NOARP
        if not state & NUD_PERMANENT:
            state |= NUD_PERMANENT
        msg["flags"] = NTF_SELF
    msg["state"] = state
    msg["attrs"].append(("NDA_LLADDR", lladdr))
    msg["attrs"].append(("NDA_MASTER", master) if master is not None else ("NDA_DST", dst))
    return msg


def route_dump(family):
    msg = _header(rtmsg(), RTM_GETROUTE, F_DUMP)
    msg["family"] = family
    return msg


def route_get(dst):
    """``route("get", dst=...)``: the kernel's route to one IPv4 address."""
    if ":" in dst or "/" in dst:
        raise Unsupported()
    msg = _header(rtmsg(), RTM_GETROUTE, F_GET)
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 32
    msg["table"] = RT_TABLE_MAIN
    msg["attrs"] = [("RTA_DST", dst)]
    return msg


def default_route_replace(gateway, oif):
    """``route("replace", dst="0.0.0.0/0", gateway=..., oif=...)`` in the main table."""
    if ":" in gateway:
        raise Unsupported()
    msg = _header(rtmsg(), RTM_NEWROUTE, F_REPLACE)
    msg["family"] = socket.AF_INET
    msg["table"] = RT_TABLE_MAIN
    msg["proto"] = RTPROT_STATIC
    msg["type"] = RTN_UNICAST
    msg["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", oif)]
    return msg


def netnsid_get(fd):
    msg = _header(nsidmsg(), RTM_GETNSID, NLM_F_REQUEST)
    msg["attrs"].append(("NETNSA_FD", fd))
    return msg


# ------------------------------------------------------------------ answers, decoded on demand
# A link message carries about 40 attributes (statistics, per-family configuration, queues...);
# pyroute2 makes an object for each as it decodes the message (about 0.2 ms), and the collection
# reads five or six of them. A re-run reads every link of every namespace it touches, so that
# decoding was most of what a re-run cost once the transport was gone. ``Message`` finds the
# attributes' offsets in one pass and decodes an attribute when it is read, with pyroute2's own
# tables (the code and type of each name: ``nla_map``) for the scalar and string types; anything
# else (vxlan's IFLA_INFO_DATA, IFLA_AF_SPEC, ``msg["attrs"]``, ...) comes from pyroute2's full
# decoding of the same bytes, made once per message when first needed.

_SCALARS = {"uint8": "=B", "uint16": "=H", "uint32": "=I", "uint64": "=Q", "int8": "=b", "int16": "=h",
            "int32": "=i", "be16": ">H", "be32": ">I", "be64": ">Q"}


def _table(cls):
    """{code: (name, type)} and {name: code} of a pyroute2 message or NLA class, read from its
    ``nla_map`` as pyroute2 compiles it: codes by position unless the map gives them."""
    nla_map = cls.nla_map
    explicit = isinstance(nla_map[0][0], int)
    by_code = {}
    for pos, item in enumerate(nla_map):
        code, name, kind = (item[0], item[1], item[2]) if explicit else (pos, item[0], item[1])
        by_code[code] = (name, kind.lstrip("*").split("|")[0].split("(")[0].strip())
    return by_code, {name: code for code, (name, _kind) in by_code.items()}


if ifinfmsg is not None:
    LINK_TABLE = _table(ifinfmsg)
    LINKINFO_TABLE = _table(ifinfmsg.ifinfo)
    BRPORT_TABLE = _table(ifinfmsg.ifinfo.bridge_slave_data)


class _Chain:
    """An NLA chain (``data[start:end]``) whose attributes are decoded when read. ``full``
    returns pyroute2's decoding of the same level, for what is not decoded here."""

    __slots__ = ("_data", "_start", "_end", "_table", "_full", "_offsets")

    def __init__(self, data, start, end, table, full):
        self._data = data
        self._start = start
        self._end = end
        self._table = table
        self._full = full
        self._offsets = None

    def _scan(self):
        offsets = {}
        data, offset, end = self._data, self._start, self._end
        while offset + 4 <= end:
            length, code = struct.unpack_from("=HH", data, offset)
            if length < 4:
                break
            offsets.setdefault(code & 0x3FFF, (offset + 4, offset + min(length, end - offset)))
            offset += (length + 3) & ~3
        self._offsets = offsets
        return offsets

    def _nested(self, name, kind, start, end):
        return None

    def _inet(self, kind):
        """Whether an address attribute of this type is an IP address: pyroute2's "ipaddr" is one
        by its length; a "target" (routes) by the message's family (MPLS labels otherwise)."""
        return kind == "ipaddr"

    def get_attr(self, name, default=None):
        code = self._table[1].get(name)
        if code is None:
            return self._full().get_attr(name, default)
        offsets = self._offsets if self._offsets is not None else self._scan()
        where = offsets.get(code)
        if where is None:
            return default
        start, end = where
        kind = self._table[0][code][1]
        fmt = _SCALARS.get(kind)
        if fmt is not None:
            return struct.unpack_from(fmt, self._data, start)[0]
        if kind == "asciiz":
            return bytes(self._data[start:end]).split(b"\0", 1)[0].decode("utf-8", "replace")
        if kind == "l2addr" or (kind == "lladdr" and end - start == 6):
            return ":".join("%02x" % b for b in self._data[start:end])
        if kind in ("ipaddr", "target") and end - start in (4, 16) and self._inet(kind):
            return socket.inet_ntop(socket.AF_INET if end - start == 4 else socket.AF_INET6,
                                    bytes(self._data[start:end]))
        nested = self._nested(name, kind, start, end)
        if nested is not None:
            return nested
        return self._full().get_attr(name, default)

    def get(self, key, default=None):
        if isinstance(key, tuple):
            value = self
            for part in key:
                value = value.get(part) if hasattr(value, "get") else None
                if value is None:
                    return default
            return value
        if key.startswith(self._table_prefix()):
            value = self.get_attr(key)
            return default if value is None else value
        return self._full().get(key, default)

    def _table_prefix(self):
        return "IFLA_"

    def __getitem__(self, key):
        return self._full()[key]

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._full(), name)


class _LinkInfo(_Chain):
    """IFLA_LINKINFO: its kinds here; a bridge port's IFLA_INFO_SLAVE_DATA too (its flags)."""

    __slots__ = ()

    def _nested(self, name, kind, start, end):
        if name == "IFLA_INFO_SLAVE_DATA" and self.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge":
            return _Chain(self._data, start, end, BRPORT_TABLE, lambda: self._full().get_attr(name))
        return None


class Message(_Chain):
    """An answer as IPRoute returns it, decoded on demand: its fixed fields (``msg["index"]``,
    ``msg["flags"]``, which callers may set, ...), ``msg.get("IFLA_...")``, nested reads such as
    ``msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))``, ``get_attr``; for a link also
    ``msg["state"]``. Anything else is answered by pyroute2's message decoded from the same bytes.
    ``KINDS`` lists the message types decoded this way."""

    __slots__ = ("_fields", "_msg", "_kind")

    def __init__(self, kind, data, offset, length):
        cls, fmt, names, size, _table = kind
        _Chain.__init__(self, data, offset + 16 + size, offset + length, _table, self._decoded)
        self._fields = dict(zip(names, struct.unpack_from(fmt, data, offset + 16)))
        self._msg = offset
        self._kind = kind

    def _decoded(self):
        if not isinstance(self._msg, int):
            return self._msg
        msg = self._kind[0](self._data, offset=self._msg)
        msg.decode()
        for key, value in self._fields.items():
            msg[key] = value
        self._msg = msg
        return msg

    def _inet(self, kind):
        return kind == "ipaddr" or self._fields.get("family") in (socket.AF_INET, socket.AF_INET6)

    def _nested(self, name, kind, start, end):
        if name == "IFLA_LINKINFO":
            return _LinkInfo(self._data, start, end, LINKINFO_TABLE, lambda: self._decoded().get_attr(name))
        return None

    def get(self, key, default=None):
        if key in self._fields:
            return self._fields[key]
        return _Chain.get(self, key, default)

    def _table_prefix(self):
        return self._kind[0].prefix

    def __getitem__(self, key):
        if key in self._fields:
            return self._fields[key]
        if key == "state" and self._kind is LINK:
            return "up" if self._fields["flags"] & IFF_UP else "down"
        return self._decoded()[key]

    def __setitem__(self, key, value):
        if key in self._fields:
            self._fields[key] = value
            if not isinstance(self._msg, int):
                self._msg[key] = value
        else:
            self._decoded()[key] = value

    def __contains__(self, key):
        return key in self._fields or key in self._decoded()

    def __repr__(self):
        return "%s(%r)" % (self._kind[0].__name__, self._fields)


def _kind(cls, table=None):
    """(pyroute2 class, its fixed fields after nlmsghdr as struct reads them, their names, their
    size, its NLA table), from the class's own ``fields`` and ``nla_map``."""
    fmt = "=" + "".join(f for _name, f in cls.fields)
    names = tuple(name for name, f in cls.fields if not f.endswith("x"))
    return cls, fmt, names, struct.calcsize(fmt), table or _table(cls)


if ifinfmsg is not None:
    LINK = _kind(ifinfmsg, LINK_TABLE)
    KINDS = {RTM_NEWLINK: LINK, RTM_NEWADDR: _kind(ifaddrmsg), RTM_NEWROUTE: _kind(rtmsg), RTM_NEWNEIGH: _kind(ndmsg)}
else:
    LINK = None
    KINDS = {}


# ------------------------------------------------------------------ the socket

class Socket:
    """A blocking rtnetlink socket in the namespace it was created in (see _netns.Netlink.get),
    with IPRoute's call signatures for what it serves (``NATIVE``) and an IPRoute behind it for
    the rest. ``open_iproute``: makes that IPRoute, in the same namespace, at its first use."""

    def __init__(self, open_iproute):
        self._open_iproute = open_iproute
        self._iproute = None
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            try:
                self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            except OSError:  # an old kernel: errors come without the kernel's message
                pass
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._marshal = Marshal()  # pyroute2's parser, for answers Message does not decode (errors, nsid)
        self._marshal.msg_map = {RTM_NEWNSID: nsidmsg}
        self._seq = 0
        self._lock = threading.Lock()

    # -- transport

    def request(self, msg):
        """Send one request and return the messages that answer it (an ack adds none). A refusal
        raises NetlinkError, as IPRoute does; a dump the kernel marks interrupted (the table
        changed under it) is asked again."""
        msg["header"]["pid"] = 0
        msg.encode()
        data = bytearray(msg.data)
        flags = msg["header"]["flags"]
        for _attempt in range(5):
            with self._lock:
                out, interrupted = self._exchange(data, flags)
            if not interrupted:
                return out
        raise NetlinkError(errno.EAGAIN, "netlink dump interrupted five times in a row")

    def _exchange(self, request, flags):
        self._seq = (self._seq % 0x7FFFFFFF) + 1
        seq = self._seq
        struct.pack_into("=I", request, 8, seq)  # nlmsghdr: len, type, flags, seq, pid
        self._sock.send(request)
        out = []
        interrupted = False
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, mflags, mseq = struct.unpack_from("=IHHI", data, offset)
                if length < 16 or offset + length > len(data):
                    break
                if mseq == seq:  # else: the tail of an answer abandoned by an exception
                    if mtype == NLMSG_ERROR or (mtype == NLMSG_DONE and length >= 20):
                        if struct.unpack_from("=i", data, offset + 16)[0] < 0:
                            raise self._error(data, offset, length, mtype, mflags)
                    if mtype in (NLMSG_DONE, NLMSG_ERROR):
                        return out, interrupted
                    if mflags & NLM_F_DUMP_INTR:
                        interrupted = True
                    kind = KINDS.get(mtype)
                    if kind is not None:
                        out.append(Message(kind, data, offset, length))
                    else:
                        out.append(self._marshal.parse_one_message(mtype, mflags, mseq, data, offset, length))
                    if not flags & (NLM_F_ACK | NLM_F_DUMP):
                        return out, interrupted  # a request without an ack: its one answer is all
                offset += (length + 3) & ~3

    @staticmethod
    def _error(data, offset, length, mtype, mflags):
        """The NetlinkError pyroute2 would raise for an error answer: its code and the kernel's
        message (NLMSGERR_ATTR_MSG of the extended ack), read here because a refusal is common
        (every lookup of a link that is not there yet) and pyroute2's decoding of it is not cheap.
        An NLMSG_ERROR is: nlmsghdr, the error, the request's header (and the request unless
        NLM_F_CAPPED), then the ack's attributes when NLM_F_ACK_TLVS; a failed dump's NLMSG_DONE
        has its attributes right after the error."""
        code = -struct.unpack_from("=i", data, offset + 16)[0]
        text = None
        if mflags & NLM_F_ACK_TLVS:
            cursor = offset + 20
            if mtype == NLMSG_ERROR:
                request_length = struct.unpack_from("=I", data, offset + 20)[0]
                cursor += 16 if mflags & NLM_F_CAPPED else (request_length + 3) & ~3
            end = offset + length
            while cursor + 4 <= end:
                nla_length, nla_type = struct.unpack_from("=HH", data, cursor)
                if nla_length < 4:
                    break
                if nla_type == NLMSGERR_ATTR_MSG:
                    text = bytes(data[cursor + 4:cursor + nla_length]).split(b"\0", 1)[0].decode("utf-8", "replace")
                    break
                cursor += (nla_length + 3) & ~3
        return NetlinkError(code, text or None)

    def _fallback(self):
        if self._iproute is None:
            self._iproute = self._open_iproute()
        return self._iproute

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._fallback(), name)

    def close(self):
        self._sock.close()
        if self._iproute is not None:
            self._iproute.close()
            self._iproute = None

    # -- IPRoute's calls

    def get_links(self, *args, **kwargs):
        if args or kwargs:
            return self._fallback().get_links(*args, **kwargs)
        return self.request(link_dump())

    def link(self, cmd, **kwargs):
        try:
            if cmd == "get" and len(kwargs) == 1 and ("index" in kwargs or "ifname" in kwargs):
                return self.request(link_get(**kwargs))
            if cmd == "set" and "index" in kwargs:
                return self.request(link_set(**kwargs))
            if cmd in ("del", "delete", "remove") and set(kwargs) in ({"index"}, {"group"}):
                return self.request(link_del(**kwargs))
            if cmd == "add" and "kind" in kwargs and isinstance(kwargs.get("peer", {}), dict):
                return self.request(link_add(**kwargs))
        except Unsupported:
            pass
        return self._fallback().link(cmd, **kwargs)

    def brport(self, cmd, **kwargs):
        if cmd == "set" and "index" in kwargs:
            try:
                return self.request(brport_set(**kwargs))
            except Unsupported:
                pass
        return self._fallback().brport(cmd, **kwargs)

    def get_addr(self, **kwargs):
        if set(kwargs) - {"index", "family"}:
            return self._fallback().get_addr(**kwargs)
        msgs = self.request(addr_dump(kwargs.get("family", socket.AF_UNSPEC)))
        if "index" in kwargs:
            msgs = [m for m in msgs if m["index"] == kwargs["index"]]
        return msgs

    def addr(self, cmd, **kwargs):
        if cmd in ("add", "del") and {"index", "address", "prefixlen"} <= set(kwargs) <= \
                {"index", "address", "prefixlen", "broadcast"}:
            try:
                return self.request(addr_change(cmd, **kwargs))
            except Unsupported:
                pass
        return self._fallback().addr(cmd, **kwargs)

    def fdb(self, cmd, **kwargs):
        try:
            if cmd == "dump" and set(kwargs) <= {"ifindex"}:
                msgs = self.request(neigh_dump(socket.AF_BRIDGE))
                if "ifindex" in kwargs:
                    msgs = [m for m in msgs if m["ifindex"] == kwargs["ifindex"]]
                return msgs
            if cmd in ("replace", "append") and {"ifindex", "lladdr", "state"} <= set(kwargs) <= \
                    {"ifindex", "lladdr", "state", "master", "dst"}:
                return self.request(fdb_change(cmd, **kwargs))
        except Unsupported:
            pass
        return self._fallback().fdb(cmd, **kwargs)

    def neigh(self, cmd, **kwargs):
        if cmd == "replace" and set(kwargs) == {"ifindex", "dst", "lladdr", "state"}:
            try:
                return self.request(neigh_replace(**kwargs))
            except Unsupported:
                pass
        return self._fallback().neigh(cmd, **kwargs)

    def get_neighbours(self, family=socket.AF_UNSPEC, **kwargs):
        if set(kwargs) - {"ifindex"} or family != socket.AF_INET:
            return self._fallback().get_neighbours(family=family, **kwargs)
        msgs = self.request(neigh_dump(family))
        if "ifindex" in kwargs:
            msgs = [m for m in msgs if m["ifindex"] == kwargs["ifindex"]]
        return msgs

    def get_default_routes(self, family=socket.AF_UNSPEC, table=RT_TABLE_MAIN):
        """Routes of ``table`` without a destination, as IPRoute's (which also keeps routes of
        another table only when ``table`` is None)."""
        if family != socket.AF_INET or table != RT_TABLE_MAIN:
            return self._fallback().get_default_routes(family=family, table=table)
        return [m for m in self.request(route_dump(family))
                if m.get_attr(RTA_DST) is None and (m.get_attr("RTA_TABLE") or m["table"]) == table]

    def route(self, cmd, **kwargs):
        if cmd == "get" and set(kwargs) == {"dst"}:
            try:
                return self.request(route_get(kwargs["dst"]))
            except Unsupported:
                pass
        if cmd == "replace" and kwargs.get("dst") == "0.0.0.0/0" and set(kwargs) == {"dst", "gateway", "oif"}:
            try:
                return self.request(default_route_replace(kwargs["gateway"], kwargs["oif"]))
            except Unsupported:
                pass
        return self._fallback().route(cmd, **kwargs)

    def get_netnsid(self, fd=None, **kwargs):
        if fd is None or kwargs:
            return self._fallback().get_netnsid(fd=fd, **kwargs)
        for reply in self.request(netnsid_get(fd)):
            return {"nsid": reply.get_attr("NETNSA_NSID"), "current_nsid": reply.get_attr("NETNSA_CURRENT_NSID")}
        return None
