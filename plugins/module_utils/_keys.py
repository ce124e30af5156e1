# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Consul key layout, in one place. docs/key-layout.md describes the same thing for people.

    <prefix>/v1/networks/<network name>              network record
    <prefix>/v1/vnis/<vni>                           claim: which network holds the VNI
    <prefix>/v1/ipam/<network id>/<ip>               claim: which endpoint holds the overlay address
    <prefix>/v1/macs/<network id>/<mac>              claim: which endpoint holds the MAC address
    <prefix>/v1/endpoints/<network id>/<endpoint>    endpoint record
    <prefix>/v1/hosts/<host>                         host record (its VTEP address)
    <prefix>/v1/gateway-ipam/<host>/<ip>             claim: gateway-bridge address of a local endpoint
    <prefix>/v1/changes/<network id>/<shard>         change mark: set by every transaction that writes
                                                     an endpoint record of the shard (change_marks)
"""
from __future__ import annotations

import base64
import calendar
import hashlib
import ipaddress
import json
import os
import time
import zlib

SCHEMA = 1
SHARDS = 64  # change marks per network: a reader woken by a change re-reads 1/SHARDS of the records


class Layout:
    def __init__(self, prefix):
        self.prefix = prefix.strip("/")
        self.root = "%s/v%d/" % (self.prefix, SCHEMA)

    def networks(self):
        return self.root + "networks/"

    def network(self, name):
        return self.root + "networks/" + name

    def vnis(self):
        return self.root + "vnis/"

    def vni(self, vni):
        return "%s%d" % (self.vnis(), vni)

    def ipam(self, network_id):
        return "%sipam/%s/" % (self.root, network_id)

    def ip_claim(self, network_id, ip):
        return "%s%s" % (self.ipam(network_id), ip)

    def macs(self, network_id):
        return "%smacs/%s/" % (self.root, network_id)

    def mac_claim(self, network_id, mac):
        return self.macs(network_id) + mac

    def endpoints(self, network_id):
        return "%sendpoints/%s/" % (self.root, network_id)

    def endpoint(self, network_id, name):
        return self.endpoints(network_id) + name

    def host(self, host):
        return self.root + "hosts/" + host

    def users(self, network_id):
        """Who uses a network outside the inventory: one key per host and runtime network (a
        Docker NetworkID) that maps to it. A network created through a runtime goes with its last user."""
        return "%susers/%s/" % (self.root, network_id)

    def user(self, network_id, host, ref):
        return "%s%s/%s" % (self.users(network_id), host, ref)

    def gateway_ipam(self, host):
        return "%sgateway-ipam/%s/" % (self.root, host)

    def gateway_claim(self, host, ip):
        return self.gateway_ipam(host) + str(ip)

    def changes(self, network_id):
        """A network's change marks: one key per shard of its endpoint records (``shard``)."""
        return "%schanges/%s/" % (self.root, network_id)

    def change_mark(self, network_id, name):
        return self.changes(network_id) + shard(name)

    def endpoint_of(self, key):
        """(network id, endpoint name) of an endpoint record's key; None for any other key."""
        start = self.root + "endpoints/"
        if not key.startswith(start):
            return None
        network_id, _sep, name = key[len(start):].partition("/")
        return (network_id, name) if network_id and name else None

    def shard_of(self, key):
        """The shard of an endpoint record's key (None for any other key)."""
        found = self.endpoint_of(key)
        return shard(found[1]) if found else None

    def mark_keys(self, ops):
        """The change marks of every endpoint record ``ops`` write (create, cas, set, delete: any
        verb but a read or a check), once each, in order."""
        marks = []
        for op in ops:
            kv = op.get("KV") or {}
            found = None if kv.get("Verb") in _READ_VERBS else self.endpoint_of(kv.get("Key", ""))
            if found:
                mark = self.change_mark(*found)
                if mark not in marks:
                    marks.append(mark)
        return marks

    def change_marks(self, ops):
        """The ops that set the change mark of every endpoint record ``ops`` write (``mark_keys``).
        Every transaction carries them (``_consul.Consul.commit`` adds them), so a mark's ModifyIndex
        moves whenever a record of its shard is written, a record deleted and created again under
        the same name included: the agent's change pass (agent/peers.py) reads the marks, then only
        the shards whose mark moved. Only a mark's index counts; its value is new for each
        transaction (Consul leaves the index of a key written with the value it holds where it was)."""
        marks = self.mark_keys(ops)
        value = base64.b64encode(json.dumps(os.urandom(8).hex()).encode()).decode() if marks else None
        return [{"KV": {"Verb": "set", "Key": mark, "Value": value}} for mark in marks]

    @staticmethod
    def last(key):
        return key.rstrip("/").rsplit("/", 1)[-1]


_READ_VERBS = frozenset(("get", "get-tree", "check-index", "check-session", "check-not-exists"))


def shard(name):
    """The change-mark shard of an endpoint name: 2 hex digits, the same on every host and version."""
    return "%02x" % (zlib.crc32(name.encode("utf-8")) % SHARDS)


def new_id():
    """64 hex digits, like Docker's network and endpoint ids."""
    return hashlib.sha256(os.urandom(32)).hexdigest()


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def age(stamp):
    """Seconds since a now() timestamp; very old when there is none (or it cannot be read)."""
    try:
        return time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return float("inf")


def mac_for(ip):
    """Docker's rule: 02:42 followed by the four bytes of the IPv4 address."""
    return "02:42:" + ":".join("%02x" % b for b in ipaddress.IPv4Address(str(ip)).packed)


def ip_for(mac):
    """The IPv4 address whose Docker MAC ``mac`` is, or None for a MAC outside the 02:42 scheme."""
    parts = str(mac).lower().split(":")
    if len(parts) != 6 or parts[:2] != ["02", "42"]:
        return None
    try:
        return str(ipaddress.IPv4Address(bytes(int(x, 16) for x in parts[2:])))
    except ValueError:
        return None


def network_record(name, net, gateway, vni, mtu, port, internal, host, anti_spoofing=True):
    return {
        "schema": SCHEMA, "id": new_id(), "name": name, "subnet": str(net), "gateway": str(gateway),
        "vni": vni, "mtu": mtu, "port": port, "internal": internal, "anti_spoofing": bool(anti_spoofing),
        "created_at": now(), "created_by": host,
    }


def endpoint_record(network, name, ip, mac, host, vtep, ifname, gateway_ip, namespace, endpoint_id=None):
    return {
        "schema": SCHEMA, "id": endpoint_id or new_id(), "name": name,
        "network_id": network["id"], "network": network["name"],
        "ip": str(ip), "prefixlen": ipaddress.ip_network(network["subnet"]).prefixlen, "mac": mac,
        "host": host, "vtep": vtep, "ifname": ifname,
        "gateway_ip": str(gateway_ip) if gateway_ip else None, "namespace": namespace,
    }


def overlay_namespace(network):
    """Each host names a network's namespace the same way, from the network id."""
    return "ovl-" + network["id"][:12]
