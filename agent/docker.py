# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's Docker door: Docker's legacy NetworkDriver and IpamDriver on one unix socket.

    docker network create -d overlay.vxlan --ipam-driver overlay.vxlan --subnet 192.168.0.0/24 demonet

Every call goes to the engine (``_records``, ``_endpoint``, ``_network``); nothing here allocates,
touches netlink or knows the key layout. What this door adds is Docker's protocol
(docs/docker.md, ../shared/reference/docker-plugin-protocol.md):

- **One cluster network per subnet.** Drivers never learn a network's name, so a Docker network
  maps to the overlay network holding exactly its subnet: every host's ``docker network create``
  with that subnet joins the same network (same id, VNI, gateway; the PoolID is the subnet, the
  gateway comes back from RequestPool so no host asks for a second one). ``-o name=NAME`` names
  it explicitly (and is checked against Consul at create time); without it, a network that does
  not exist yet in Consul takes the Docker network's name, read from Docker's API once Docker has
  stored it. A subnet overlapping another overlay network's is refused at create time. The map of
  this host's Docker NetworkIDs is persisted (``--state-dir``): dockerd replays no CreateNetwork.
- **Addresses from Consul.** RequestAddress claims the address ahead (``_records.claim_address``:
  no endpoint id arrives with it); CreateEndpoint takes the claim over in the transaction that
  creates the endpoint record. ReleaseAddress frees a claim no endpoint took; one whose release
  was lost is collected by the garbage collection.
- **The container's side.** CreateEndpoint builds the veth pair (MTU, MAC 02:42 + IP unless
  ``--mac-address`` was given) with the container end in the host namespace; Join hands it to
  Docker, which moves, renames and addresses it. No gateway is returned: Docker's own
  docker_gwbridge gives egress and ``-p`` (internal networks: DisableGatewayService).
- Calls for ids this host does not know (Leave, DeleteEndpoint, DeleteNetwork, ReleaseAddress)
  succeed, as Docker needs after crashes and restarts.
"""
from __future__ import annotations

import http.server
import ipaddress
import json
import os
import socketserver
import subprocess
import threading
import time

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _consul, _dockernet, _endpoint, _gc, _hostlock, _keys, _netns, _network, _overlay_ns, _records, _runtime, _underlay,
    _validate)
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

PLUGIN_NAME = _dockernet.DRIVER            # the name overlay_network's docker: true asks Docker for
DEFAULT_SOCKET = _dockernet.PLUGIN_PATHS[0]  # where dockerd looks for it
DEFAULT_STATE_DIR = "/var/lib/overlay-vxlan"
POOL_PREFIX = PLUGIN_NAME + "/"
GATEWAY_TYPE = "com.docker.network.gateway"
NAME_OPTIONS = ("name", PLUGIN_NAME + ".name")


class Refused(Exception):
    """An answer Docker shows its user (``Err`` for the network driver, ``Error`` for IPAM)."""


def _message(exc):
    if isinstance(exc, OverlayError):
        return "overlay.vxlan: %s" % exc.message if exc.field is None else "overlay.vxlan: %s: %s" % (
            exc.field, exc.message)
    return "overlay.vxlan: %s" % exc


class NetworkMap:
    """This host's Docker NetworkID -> cluster network, persisted as JSON (0600, atomic rename)."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        try:
            with open(path) as f:
                self.data = json.load(f)
        except (OSError, ValueError):
            self.data = {}

    def get(self, docker_id):
        with self.lock:
            entry = self.data.get(docker_id)
            return dict(entry) if entry else None

    def put(self, docker_id, entry):
        with self.lock:
            self.data[docker_id] = entry
            self._save()

    def pop(self, docker_id):
        with self.lock:
            entry = self.data.pop(docker_id, None)
            if entry is not None:
                self._save()
            return entry

    def _save(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.rename(tmp, self.path)


def docker_network_name(docker_host, network_id, timeout=10.0):
    """The name Docker stored for ``network_id`` (asked after CreateNetwork returned), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _runtime.get_json(docker_host, "/networks/%s" % network_id)
        if isinstance(info, dict) and info.get("Name"):
            return info["Name"]
        time.sleep(0.05)
    return None


def docker_endpoint_names(docker_host, network_id, endpoint_id, timeout=15.0):
    """The container name and ``--network-alias`` values of ``endpoint_id``, read from Docker's
    API once Docker lists the endpoint (after Join returned), or [] when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _runtime.get_json(docker_host, "/networks/%s" % network_id) or {}
        for cid, c in (info.get("Containers") or {}).items():
            if isinstance(c, dict) and c.get("EndpointID") == endpoint_id and c.get("Name"):
                # The container's own view carries the aliases once its join is recorded there too.
                container = _runtime.get_json(docker_host, "/containers/%s/json" % cid) or {}
                ep = ((container.get("NetworkSettings") or {}).get("Networks") or {}).get(info.get("Name")) or {}
                if ep.get("EndpointID") != endpoint_id and time.monotonic() < deadline - 1:
                    break
                names = [c["Name"]] + (ep.get("Aliases") or [])
                return [n for n in names if isinstance(n, str) and n]
        time.sleep(0.05)
    return []


def _run_command(args, check_rc=False):
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Plugin:
    """The protocol's calls as methods; ``call(path, body)`` dispatches. Thread-safe: Docker calls
    concurrently, and the engine takes the host lock for every kernel change."""

    def __init__(self, params, state_dir=DEFAULT_STATE_DIR, docker_host="unix:///run/docker.sock", log=None, gc=True,
                 log_calls=False, peers=True):
        self.params = dict(params)
        self.gc = gc
        # With the agent's peers sync running, a CreateEndpoint secures its own port only and leaves
        # the whole-network repair to that sync (_endpoint.scoped); without it, it repairs everything.
        self.repair = "endpoint" if peers else "network"
        self.log_calls = log_calls
        self.settings = _consul.connection_settings(self.params)
        self.layout = _keys.Layout(self.settings["prefix"])
        self.networks = NetworkMap(os.path.join(state_dir, "docker-networks.json"))
        self.docker_host = docker_host
        self.log = log or (lambda text: None)
        with _netns.Netlink() as nl:
            self.host = _underlay.local(nl.get(_netns.resolve(None, None)), self.params, self.settings["host"]).host
        self.lock = threading.Lock()

    def store(self):
        return _consul.Consul(self.settings)

    def call(self, path, body):
        name = path.strip("/")
        method = name.replace(".", "_")
        handler = getattr(self, method, None)
        ipam = name.startswith("IpamDriver.")
        if handler is None or not (method.startswith(("Plugin_", "NetworkDriver_", "IpamDriver_"))):
            return 404, {"Err": "overlay.vxlan does not implement %s" % path}
        started = time.monotonic()
        try:
            reply = handler(body or {})
            if self.log_calls:  # where a `docker run` spends its time, call by call
                self.log("%s %.0f ms" % (name, (time.monotonic() - started) * 1000))
            return 200, reply
        except (Refused, OverlayError) as e:
            self.log("%s refused: %s" % (path, _message(e)))
            return 200, {"Error" if ipam else "Err": _message(e)}
        except Exception as e:  # noqa: BLE001 - Docker shows the message; the agent keeps serving
            self.log("%s failed: %s: %s" % (path, type(e).__name__, e))
            return 200, {"Error" if ipam else "Err": "overlay.vxlan: %s: %s" % (type(e).__name__, e)}

    # ------------------------------------------------------------------ activation, capabilities
    def Plugin_Activate(self, body):
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    def NetworkDriver_GetCapabilities(self, body):
        # "global" fails on 20.10 and 23.0 without swarm; the cluster-wide part is ours.
        return {"Scope": "local", "ConnectivityScope": "global"}

    def IpamDriver_GetCapabilities(self, body):
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def IpamDriver_GetDefaultAddressSpaces(self, body):
        return {"LocalDefaultAddressSpace": PLUGIN_NAME, "GlobalDefaultAddressSpace": PLUGIN_NAME}

    # ------------------------------------------------------------------ IPAM
    def _by_subnet(self, store, subnet, field="subnet"):
        """The overlay network holding exactly ``subnet``, or None; refuses an overlap."""
        exact = None
        for record in _records.all_networks(store, self.layout).values():
            other = ipaddress.ip_network(record["subnet"])
            if other == subnet:
                exact = record
            elif other.overlaps(subnet):
                raise OverlayError("%s overlaps %s of overlay network %s" % (subnet, other, record["name"]), field)
        return exact

    @staticmethod
    def _pool_subnet(pool_id):
        if not isinstance(pool_id, str) or not pool_id.startswith(POOL_PREFIX):
            raise Refused("pool %r is not one of overlay.vxlan's" % (pool_id,))
        return ipaddress.ip_network(pool_id[len(POOL_PREFIX):])

    def IpamDriver_RequestPool(self, body):
        if body.get("V6"):
            raise Refused("IPv6 pools are not supported; create the network without --ipv6")
        if not body.get("Pool"):
            raise Refused("give the network a subnet (docker network create --subnet ...): it names the "
                          "overlay network every host shares")
        if body.get("SubPool"):
            raise Refused("--ip-range is not supported: addresses come from the whole subnet, cluster-wide")
        subnet = _validate.overlay_subnet(body["Pool"], "subnet")
        record = self._by_subnet(self.store(), subnet)
        gateway = record["gateway"] if record else str(next(subnet.hosts()))
        return {"PoolID": POOL_PREFIX + str(subnet), "Pool": str(subnet),
                "Data": {GATEWAY_TYPE: "%s/%d" % (gateway, subnet.prefixlen)}}

    def IpamDriver_ReleasePool(self, body):
        return {}  # the network stays in Consul while any host uses it: removal is overlay_network's

    def IpamDriver_RequestAddress(self, body):
        subnet = self._pool_subnet(body.get("PoolID"))
        wanted = body.get("Address") or None
        store = self.store()
        record = self._by_subnet(store, subnet)
        if (body.get("Options") or {}).get("RequestAddressType") == GATEWAY_TYPE:  # --gateway
            if record is not None and wanted and wanted != record["gateway"]:
                raise Refused("gateway: overlay network %s has gateway %s, not %s"
                              % (record["name"], record["gateway"], wanted))
            gateway = wanted or (record["gateway"] if record else str(next(subnet.hosts())))
            return {"Address": "%s/%d" % (gateway, subnet.prefixlen), "Data": {}}
        if record is None:
            raise Refused("no overlay network holds %s yet" % subnet)
        index = store.get(self.layout.network(record["name"]))[1]
        try:
            ip, _key, _index = _records.claim_address(store, self.layout, record, index, self.host, wanted)
        except OverlayError:
            if not (wanted and self.gc):
                raise
            # --ip held by an endpoint of this host whose delete never arrived (the agent was down when
            # dockerd cleaned up): the collection releases what is provably dead; ask again after it (a
            # pass whose batch met a change meanwhile is run again, a few times).
            for attempt in range(3):
                released, again = self._collect()
                if not released:
                    raise
                try:
                    ip, _key, _index = _records.claim_address(store, self.layout, record, index, self.host, wanted)
                    break
                except OverlayError:
                    if not again or attempt == 2:
                        raise
        return {"Address": "%s/%d" % (ip, subnet.prefixlen), "Data": {}}

    def _collect(self):
        """One garbage-collection pass of this host (dead runtime endpoints go at once): (whether it
        found anything to release, whether a batch met a change and was not applied)."""
        with _hostlock.HostLock(), _netns.Netlink() as nl:
            underlay = _underlay.local(nl.get(_netns.resolve(None, None)), self.params, self.host)
            findings = _gc.collect(nl, self.store(), self.layout, underlay, self.layout.prefix,
                                   grace=self.params.get("gc_grace", _gc.DEFAULT_GRACE))
        for f in findings:
            self.log("gc: %s %s: %s (%s)" % (f["kind"], f.get("key") or f.get("device"), f["reason"], f["action"]))
        return (any(f["action"] == "release" for f in findings), any(f["action"] == "look again" for f in findings))

    def IpamDriver_ReleaseAddress(self, body):
        try:
            subnet = self._pool_subnet(body.get("PoolID"))
        except (Refused, ValueError):
            return {}
        store = self.store()
        record = self._by_subnet(store, subnet)
        ip = body.get("Address")
        if record is not None and ip and ip != record["gateway"]:
            _records.release_pending(store, self.layout, record, ip, self.host)
        return {}

    # ------------------------------------------------------------------ networks
    def _engine_params(self, **extra):
        return dict(self.params, **extra)

    def NetworkDriver_CreateNetwork(self, body):
        docker_id = body.get("NetworkID")
        options = body.get("Options") or {}
        generic = options.get("com.docker.network.generic") or {}
        v4 = body.get("IPv4Data") or []
        if body.get("IPv6Data"):
            raise Refused("IPv6 is not supported")
        if len(v4) != 1 or not v4[0].get("Pool"):
            raise Refused("give exactly one IPv4 subnet (--subnet) and --ipam-driver overlay.vxlan")
        subnet = _validate.overlay_subnet(v4[0]["Pool"], "subnet")
        gateway = (v4[0].get("Gateway") or "").split("/")[0] or None
        name = next((generic[k] for k in NAME_OPTIONS if generic.get(k)), None)
        internal = bool(options.get("com.docker.network.internal") or generic.get("internal") in ("true", True))
        mtu = generic.get("com.docker.network.driver.mtu")
        store = self.store()
        record = self._by_subnet(store, subnet)
        if record is not None and name and name != record["name"]:
            raise Refused("name: %s belongs to overlay network %s, not %s" % (subnet, record["name"], name))
        if record is None and name:
            existing = _records.read_network(store, self.layout, name)[0]
            if existing is not None:
                raise Refused("subnet: overlay network %s has subnet %s, not %s" % (name, existing["subnet"], subnet))
        entry = {"subnet": str(subnet), "gateway": gateway, "internal": internal, "mtu": mtu,
                 "name": record["name"] if record else name, "at": _keys.now()}
        if entry["name"]:
            self._ensure_cluster_network(docker_id, entry)
            self.networks.put(docker_id, entry)
        else:  # Docker stores the name after this call returns: read it then, and create the network
            self.networks.put(docker_id, entry)
            threading.Thread(target=self._name_later, args=(docker_id,), daemon=True).start()
        return {}

    def _ensure_cluster_network(self, docker_id, entry):
        """The overlay network in Consul (created when missing, ``origin: docker``), this host's part
        of it, and this Docker network registered as one of its users (the last user's
        ``docker network rm`` removes a network Docker created). A removal by another host racing
        this one (its last user leaving) is waited for, then the network is created again."""
        params = self._engine_params(name=entry["name"], state="present", subnet=entry["subnet"],
                                     gateway=entry.get("gateway"), internal=entry.get("internal") or None,
                                     mtu=int(entry["mtu"]) if entry.get("mtu") else None, gc=False, origin="docker")
        deadline = time.monotonic() + _network.REMOVE_WAIT
        while True:
            try:
                network = _network.run(params, False)["network"]
                store = self.store()
                record, index = _records.read_network(store, self.layout, network["name"])
                if record is None or record.get("id") != network["id"]:
                    raise _records.RemovalConflict("network %s was removed meanwhile" % network["name"], "name")
                _records.add_user(store, self.layout, record, index, self.host, docker_id, "docker")
                break
            except _records.RemovalConflict:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        entry["id"] = network["id"]
        # An internal overlay stays internal whatever Docker was told: no docker_gwbridge at Join.
        entry["internal"] = bool(network.get("internal") or entry.get("internal"))
        return network

    def _name_later(self, docker_id):
        entry = self.networks.get(docker_id)
        name = docker_network_name(self.docker_host, docker_id)
        if entry is None or name is None:
            self.log("docker network %s: its name could not be read from Docker; the first endpoint tries again"
                     % docker_id[:12])
            return
        self._resolve(docker_id, entry, name)

    def _resolve(self, docker_id, entry, name):
        with self.lock:
            current = self.networks.get(docker_id)
            if current is None or current.get("id"):
                return current
            current["name"] = name
            try:
                self._ensure_cluster_network(docker_id, current)
            except OverlayError as e:
                current["error"] = _message(e)
                self.log("docker network %s (%s): %s" % (name, docker_id[:12], current["error"]))
                current["name"] = None
            self.networks.put(docker_id, current)
            return current

    def _mapped(self, docker_id):
        entry = self.networks.get(docker_id)
        if entry is None:
            return None
        if not entry.get("id"):
            name = docker_network_name(self.docker_host, docker_id, timeout=2.0)
            entry = self._resolve(docker_id, entry, name) if name else entry
            if not entry.get("id"):
                raise Refused(entry.get("error") or "docker network %s is not mapped to an overlay network yet"
                              % docker_id[:12])
        return entry

    def _record(self, store, entry):
        """The overlay network of a map entry: read by its name (one request) and checked by id, or
        found by id (a listing of every network) when that name no longer holds this one."""
        if entry.get("name"):
            record = _records.read_network(store, self.layout, entry["name"])[0]
            if isinstance(record, dict) and record.get("id") == entry["id"]:
                return record
        return _records.lookup(store, self.layout, entry["id"])[0]

    def NetworkDriver_DeleteNetwork(self, body):
        docker_id = body.get("NetworkID")
        entry = self.networks.pop(docker_id)
        if not entry or not entry.get("id"):
            return {}
        try:
            store = self.store()
            try:
                record = self._record(store, entry)
            except OverlayError:  # removed from Consul already: this host's part may still be here
                record = {"id": entry["id"], "name": entry.get("name")}
            outcome = _network.leave_runtime_network(store, self.layout, entry["id"], self.host, docker_id)
            self.log("docker network %s removed: overlay network %s %s" % (docker_id[:12], record["name"], outcome))
            if any(e.get("id") == entry["id"] for e in self.networks.data.values()):
                return {}  # another Docker network of this host still maps to it
            # This host's part goes when no endpoint of this host is left (or the network is gone).
            local = outcome == "kept" and [e for e in store.values(self.layout.endpoints(record["id"]))
                                           if isinstance(e, dict) and e.get("host") == self.host]
            if not local:
                with _hostlock.HostLock(), _netns.Netlink() as nl:
                    _overlay_ns.remove(nl, record, apply=True)
        except OverlayError as e:
            self.log("docker network %s removed; its overlay network: %s" % (docker_id[:12], _message(e)))
        return {}

    def reconcile(self):
        """DeleteNetwork calls that never arrived: ``docker network rm`` while the agent was down
        (dockerd logs the driver's error and removes the network all the same). Every Docker
        NetworkID this host maps (its state file) or registered as a user in Consul (a state file
        lost) that Docker no longer lists is removed as DeleteNetwork would have. Only ids older
        than the garbage collection's grace: Docker calls CreateNetwork before it stores the network,
        so a new one is missing from its list for a moment. Nothing when Docker does not answer.
        Returns the NetworkIDs removed."""
        listed = _runtime.get_json(self.docker_host, "/networks", timeout=5)
        if not isinstance(listed, list):
            return []
        present = {n.get("Id") for n in listed if isinstance(n, dict)}
        grace = self.params.get("gc_grace", _gc.DEFAULT_GRACE)
        gone = [docker_id for docker_id, entry in sorted(self.networks.data.items())
                if docker_id not in present and _keys.age((entry or {}).get("at")) >= grace]
        for docker_id in gone:
            self.log("docker network %s: Docker no longer has it (its DeleteNetwork was lost)" % docker_id[:12])
            self.NetworkDriver_DeleteNetwork({"NetworkID": docker_id})
        store = self.store()
        for key, user in sorted(store.get_tree(self.layout.root + "users/").items()):
            value = user[0]
            if not (isinstance(value, dict) and value.get("host") == self.host and value.get("runtime") == "docker"):
                continue
            ref = value.get("ref")
            if ref in present or ref in self.networks.data or _keys.age(value.get("at")) < grace:
                continue
            network_id = key[len(self.layout.root + "users/"):].split("/")[0]
            outcome = _network.leave_runtime_network(store, self.layout, network_id, self.host, ref)
            self.log("docker network %s: Docker no longer has it; its use of overlay network %s ends (%s)"
                     % (str(ref)[:12], network_id[:12], outcome))
            gone.append(ref)
        return gone

    def reconcile_forever(self, stop, every):
        """``reconcile`` every ``every`` seconds until ``stop`` is set (the agent's thread)."""
        while not stop.wait(every):
            try:
                self.reconcile()
            except (OverlayError, OSError) as e:
                self.log("docker networks: reconcile failed: %s" % _message(e))

    # ------------------------------------------------------------------ endpoints
    def NetworkDriver_CreateEndpoint(self, body):
        entry = self._mapped(body.get("NetworkID"))
        if entry is None:
            raise Refused("network %s is unknown to this host's agent" % str(body.get("NetworkID"))[:12])
        endpoint_id = body.get("EndpointID")
        iface = body.get("Interface") or {}
        if not iface.get("Address"):
            raise Refused("the endpoint has no IPv4 address: use --ipam-driver overlay.vxlan")
        ip = iface["Address"].split("/")[0]
        mac = iface.get("MacAddress") or None
        store = self.store()
        record = self._record(store, entry)
        pending = _records.pending_claim(store, self.layout, record, ip, self.host)
        params = self._engine_params(network=record["name"], name=endpoint_id, endpoint_id=endpoint_id, ip=ip,
                                     mac=mac, handoff=True, pending=pending, ifname=_endpoint.HANDOFF_END % endpoint_id[:10],
                                     egress="runtime", state="present", repair=self.repair)
        _endpoint.run(params, False, _run_command)
        return {} if mac else {"Interface": {"MacAddress": _keys.mac_for(ip)}}

    def NetworkDriver_EndpointOperInfo(self, body):
        return {"Value": {}}

    def NetworkDriver_DeleteEndpoint(self, body):
        entry = self.networks.get(body.get("NetworkID"))
        if entry is None or not entry.get("id"):
            return {}
        try:
            record = self._record(self.store(), entry)
        except OverlayError:
            return {}  # the network is gone from Consul: nothing of this endpoint is left there
        _endpoint.run(self._engine_params(network=record["name"], name=body.get("EndpointID"), state="absent"),
                      False, _run_command)
        return {}

    def NetworkDriver_Join(self, body):
        entry = self._mapped(body.get("NetworkID"))
        if entry is None:
            raise Refused("network %s is unknown to this host's agent" % str(body.get("NetworkID"))[:12])
        endpoint_id = body.get("EndpointID") or ""
        threading.Thread(target=self._alias_later, args=(body.get("NetworkID"), endpoint_id, entry),
                         daemon=True).start()
        return {"InterfaceName": {"SrcName": _endpoint.HANDOFF_END % endpoint_id[:10], "DstPrefix": "eth"},
                "DisableGatewayService": bool(entry.get("internal"))}

    def _alias_later(self, docker_id, endpoint_id, entry):
        """Drivers are never told a container's name: once the container has joined, read its name
        (and ``--network-alias`` values) from Docker's API and give the endpoint record them as
        aliases, which the names service answers on every host."""
        names = docker_endpoint_names(self.docker_host, docker_id, endpoint_id)
        if not names:
            self.log("endpoint %s: Docker listed no container for it; it has no name across hosts" % endpoint_id[:12])
            return
        try:
            store = self.store()
            record = self._record(store, entry)
            _records.set_aliases(store, self.layout, record, endpoint_id, names)
        except OverlayError as e:
            self.log("endpoint %s: its names %s were not stored: %s" % (endpoint_id[:12], names, _message(e)))

    def NetworkDriver_Leave(self, body):
        return {}

    def NetworkDriver_DiscoverNew(self, body):
        return {}

    def NetworkDriver_DiscoverDelete(self, body):
        return {}

    def NetworkDriver_ProgramExternalConnectivity(self, body):
        return {}

    def NetworkDriver_RevokeExternalConnectivity(self, body):
        return {}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}  # Activate and GetCapabilities come EMPTY
        except ValueError:
            body = None
        if not isinstance(body, dict) and body is not None:
            body = None
        if body is None:
            status, reply = 400, {"Err": "overlay.vxlan: the request body is not a JSON object"}
        else:
            status, reply = self.server.plugin.call(self.path, body)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self):
        return "docker"

    def log_message(self, fmt, *args):
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(plugin, path=DEFAULT_SOCKET):
    """Listen on ``path`` (a stale socket from a crash is replaced) until shutdown(); returns the server."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = _Server(path, _Handler)
    os.chmod(path, 0o660)
    server.plugin = plugin
    threading.Thread(target=server.serve_forever, daemon=True, name="docker-plugin").start()
    return server


def close(server, path=DEFAULT_SOCKET):
    server.shutdown()
    server.server_close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
