# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's names: a small DNS server answering the cluster's endpoint names from Consul.

``<endpoint>`` and ``<endpoint>.<network>`` (case-insensitive) answer the endpoint's overlay
address (A, TTL 0, so a re-attached endpoint is never served stale); every other question is
relayed to the upstream resolvers (``--dns-upstream``, default the nameservers of
/etc/resolv.conf that are not this server's own addresses). A name that two networks hold answers
with the network whose name sorts first; ``<name>.<network>`` is exact.

The table follows Consul with a blocking query on the store (no polling) and reads only what the
change marks name (``_changes.View``): a name is served within a Consul round trip of its record's
creation, at a cost that follows the change, not the size of the store. Docker's embedded DNS
forwards the names it does not know to the daemon's ``dns`` servers: point them at this server
(docs/names.md).
"""
from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time

from ansible_collections.overlay.vxlan.plugins.module_utils import _changes, _consul, _keys

TYPE_A, TYPE_AAAA, TYPE_ANY, CLASS_IN = 1, 28, 255, 1
RCODE_SERVFAIL, RCODE_NXDOMAIN = 2, 3


class Table:
    """{name: ip} and {name.network: ip} from one read of the store."""

    def __init__(self):
        self.names = {}
        self.lock = threading.Lock()

    def rebuild(self, tree, layout):
        networks = {}
        for key, (value, _index) in tree.items():
            if key.startswith(layout.networks()) and isinstance(value, dict) and value.get("id"):
                networks[value["id"]] = value.get("name")
        names = {}
        prefix = layout.root + "endpoints/"
        records = [v for k, (v, _i) in tree.items() if k.startswith(prefix) and isinstance(v, dict)]
        ordered = sorted(records, key=lambda r: (str(networks.get(r.get("network_id"))), str(r.get("name"))))
        # Names first, then aliases (a runtime's container names): an alias never hides a name.
        for aliases in (False, True):
            for record in ordered:
                name, ip, network = record.get("name"), record.get("ip"), networks.get(record.get("network_id"))
                if not (isinstance(name, str) and isinstance(ip, str) and network):
                    continue
                given = record.get("aliases") if isinstance(record.get("aliases"), list) else []
                for n in [a for a in given if isinstance(a, str) and a] if aliases else [name]:
                    names.setdefault(n.lower(), ip)
                    names.setdefault("%s.%s" % (n.lower(), network.lower()), ip)
        with self.lock:
            self.names = names

    def lookup(self, name):
        with self.lock:
            return self.names.get(name.lower().rstrip("."))


def follow(store, layout, table, log, stop, wait="30s"):
    """Keep ``table`` in step with Consul: a blocking query on the root (the keys up to the first
    "/" only), then a read of what the change marks name (``_changes.View``); the whole store
    on the first read, after an error and when ``wait`` passes without a change (a periodic full
    read, which also catches a writer that sets no marks). Backs off while Consul is away."""
    view, index, full = _changes.View(), 0, True
    while not stop.is_set():
        try:
            view.read(store, layout, lambda key, raw: None, full)
            table.rebuild(view.tree(), layout)
            new_index = store.wait(layout.root, index, wait, separator="/")
            full = new_index <= index  # no change within the wait, or Consul's index went back
            index = new_index
        except Exception as e:  # noqa: BLE001 - the last table keeps being served
            log("names: reading Consul failed (%s); retrying" % e)
            index, full = 0, True
            stop.wait(1.0)


def parse_question(data):
    """(id, flags, qname, qtype, end of the question) of a DNS query, or None."""
    if len(data) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 or pos + 1 + length > len(data):
            return None
        labels.append(data[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    if pos + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack("!HH", data[pos:pos + 4])
    return ident, flags, ".".join(labels), qtype, pos + 4


def answer(data, question, ip):
    """A reply to ``data`` with one A record (ip) or none (ip None: the name exists, no such type)."""
    ident, flags, _name, _qtype, end = question
    rd = flags & 0x0100
    header = struct.pack("!HHHHHH", ident, 0x8400 | rd | 0x0080, 1, 1 if ip else 0, 0, 0)
    body = data[12:end]
    if ip:
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, 0, 4) + socket.inet_aton(ip)
    return header + body


def failure(data, question, rcode):
    ident, flags, _name, _qtype, end = question
    return struct.pack("!HHHHHH", ident, 0x8080 | (flags & 0x0100) | rcode, 1, 0, 0, 0) + data[12:end]


def upstreams_from_resolv_conf(path="/etc/resolv.conf", exclude=()):
    servers = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in exclude:
                    servers.append((parts[1], 53))
    except OSError:
        pass
    return servers


def relay(data, upstreams, timeout=2.0):
    for host, port in upstreams:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.settimeout(timeout)
            sock.sendto(data, (host, port))
            reply, _addr = sock.recvfrom(65535)
            if reply[:2] == data[:2]:
                return reply
        except OSError:
            continue
        finally:
            sock.close()
    return None


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        server = self.server
        question = parse_question(data)
        if question is None:
            return
        ip = server.table.lookup(question[2])
        if ip is not None:
            reply = answer(data, question, ip if question[3] in (TYPE_A, TYPE_ANY) else None)
        else:
            reply = relay(data, server.upstreams) or failure(data, question, RCODE_SERVFAIL)
        sock.sendto(reply, self.client_address)


class _Server(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(params, listen, upstreams=None, log=None):
    """Start the table's watcher and one DNS server per ``listen`` address (host:port); returns a
    stop function."""
    log = log or (lambda text: None)
    settings = _consul.connection_settings(params)
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    table = Table()
    stop = threading.Event()
    threading.Thread(target=follow, args=(store, layout, table, log, stop), daemon=True, name="names").start()
    own = {hostport.rsplit(":", 1)[0] for hostport in listen}
    upstreams = upstreams if upstreams is not None else upstreams_from_resolv_conf(exclude=own)
    servers = []
    for hostport in listen:
        host, _sep, port = hostport.rpartition(":")
        server = _Server((host, int(port or 53)), _Handler)
        server.table, server.upstreams = table, upstreams
        threading.Thread(target=server.serve_forever, daemon=True, name="dns-%s" % hostport).start()
        servers.append(server)
    deadline = time.monotonic() + 5
    while not table.names and time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.02)  # the first read, so the first question is not answered from an empty table

    def close():
        stop.set()
        for server in servers:
            server.shutdown()
            server.server_close()
    return close
