# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store protocol: every read and write of network and endpoint records and their claims.

Every write is one Consul transaction whose checks make interleavings with other hosts safe
(docs/key-layout.md, "Transactions and their checks"):

- a network is created with check-and-set index 0 on its name and on its VNI; a run that loses
  the race gets the winner's record back and compares it with what it asked for;
- an endpoint claim (address, MAC, gateway address, record: each index 0) also checks the network
  record's ModifyIndex, so it cannot land under a network that is being removed;
- removing a network first marks its record ``removing`` (check-and-set), then re-reads: any
  endpoint that landed before the mark is seen and keeps the network; none can land after it.
  Every key is then deleted with delete-cas at the index that was read;
- detaching marks the records ``detaching`` (the write is refused before the kernel is touched),
  then the interfaces go, then the keys are deleted with delete-cas;
- a batch whose later transaction fails releases what its earlier ones committed;
- a transaction whose answer was lost (ConsulOutcomeUnknown) is settled by reading back the keys
  it wrote: adopted when they hold this run's values, retried or released otherwise.

Every transaction that writes an endpoint record also sets the record's change mark
(``_keys.Layout.change_marks``, added by ``_consul.Consul.commit``): what the agents' change passes
read instead of every record. Chunked writes go through ``store.batches`` to leave room for them.
"""
from __future__ import annotations

import ipaddress
import time

from ansible_collections.overlay.vxlan.plugins.module_utils import _allocate, _consul, _keys, _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

CLAIMS_PER_ENDPOINT = 5  # address, MAC, gateway address, record, and the record's change mark
CHUNK = (_consul.TXN_MAX_OPS - 1) // CLAIMS_PER_ENDPOINT  # one op checks the network record


class RemovalConflict(OverlayError):
    """A network's removal met another writer: a removal's check-and-set lost (another host removing
    the same network, an endpoint landing), or a write found the network marked for removal. The
    caller may read the record again and decide once more."""


SETTLE_ATTEMPTS = 5


class Entry:
    """A decoded value and the ModifyIndex it was read at."""

    __slots__ = ("key", "value", "index")

    def __init__(self, key, value, index):
        self.key, self.value, self.index = key, value, index


def _settle_wait(attempt):
    time.sleep(min(0.05 * (2 ** attempt), 1.0))


# ------------------------------------------------------------------------------------ networks

def read_network(store, layout, name):
    """(record, ModifyIndex) of network ``name``, or (None, 0)."""
    return store.get(layout.network(name))


def lookup(store, layout, spec, field="network"):
    """(record, index) by name, or by id (full, or a unique prefix of at least 12 hex digits)."""
    record, index = (None, 0)
    if _validate.is_key_segment(spec):
        record, index = read_network(store, layout, spec)
    if record is not None:
        return record, index
    if isinstance(spec, str) and len(spec) >= 12 and all(c in "0123456789abcdef" for c in spec):
        found = [(v, i) for k, (v, i) in store.get_tree(layout.networks()).items() if v and v["id"].startswith(spec)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise OverlayError("id prefix %s matches %d networks" % (spec, len(found)), field)
    raise OverlayError("no overlay network named %s exists in Consul (create it with overlay_network first)" % spec,
                       field)


def usable(record, field="network"):
    """Refuse to attach to a network another host is removing."""
    if record.get("removing"):
        raise RemovalConflict("network %s is being removed (by host %s); attach after it is gone or re-created"
                              % (record["name"], record["removing"].get("host", "?")), field)


def all_networks(store, layout):
    """{network id: record} of every network in the store."""
    return {v["id"]: v for v in store.values(layout.networks()) if isinstance(v, dict) and v.get("id")}


def create_network(store, layout, proposed):
    """Create ``proposed`` (its VNI given, or the lowest free from 256) with its name, in one
    transaction. Returns (record, index, created): the record another host created meanwhile
    comes back with created=False, for the caller to compare with what it asked for."""
    explicit = proposed["vni"] is not None
    key = layout.network(proposed["name"])

    def read():
        existing = read_network(store, layout, proposed["name"])
        if existing[0] is not None:
            return existing, None
        return existing, {int(_keys.Layout.last(k)) for k in store.keys(layout.vnis())
                          if _keys.Layout.last(k).isdigit()}

    def build(state, attempt):
        (existing, index), taken = state
        if existing is not None:
            return [], (existing, index, False)
        if explicit:
            if proposed["vni"] in taken:
                owner = store.value(layout.vni(proposed["vni"]))
                raise OverlayError("VNI %d is already used by network %s" % (
                    proposed["vni"], (owner or {}).get("network", "?")), "vni")
            vni = proposed["vni"]
        else:
            vni = _allocate.free_vni(taken)
        record = dict(proposed, vni=vni)
        ops = [_consul.op_create(layout.vni(vni), {"network": record["name"], "id": record["id"]}),
               _consul.op_create(key, record)]
        return ops, (record, None, True)

    def settle(result):
        have = _settled_value(store, key, result[0]["id"])
        return None if have is None else {key: have}

    (record, index, created), indexes = _allocate.claim(store, read, build, "a VNI for network %s"
                                                        % proposed["name"], settle)
    if created:
        index = indexes.get(key)
        if index is None:  # settled: the lost answer did commit, or another host won meanwhile
            record, index = read_network(store, layout, proposed["name"])
            created = record is not None and record.get("id") == proposed["id"]
    return record, index, created


def _settled_value(store, key, record_id):
    """After a lost answer: the index of ``key`` if it holds ``record_id`` (committed), None if it
    does not (not committed, or someone else's)."""
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            value, index = store.get(key)
        except OverlayError:
            _settle_wait(attempt)
            continue
        return index if value is not None and value.get("id") == record_id else None
    raise OverlayError("Consul did not answer whether %s was written; run again to settle it" % key, "consul_host")


def delete_created_network(store, layout, record, index):
    """Undo a creation of this run (its host part failed). Checked: only our record goes."""
    try:
        store.commit([_consul.op_delete_cas(layout.network(record["name"]), index),
                      _consul.op_delete_cas(layout.vni(record["vni"]), store.get(layout.vni(record["vni"]))[1])])
    except _consul.TxnConflict:
        pass  # someone else changed it meanwhile: it is theirs now


def network_tree(store, layout, record):
    """Every key that belongs to the network: endpoint records, address/MAC claims and users (Entries)."""
    out = {}
    for prefix in (layout.endpoints(record["id"]), layout.ipam(record["id"]), layout.macs(record["id"]),
                   layout.users(record["id"])):
        for key, (value, index) in store.get_tree(prefix).items():
            out[key] = Entry(key, value, index)
    return out


def endpoints_of(tree, layout, record):
    prefix = layout.endpoints(record["id"])
    return [e for k, e in tree.items() if k.startswith(prefix) and isinstance(e.value, dict)]


def users_of(tree, layout, record):
    prefix = layout.users(record["id"])
    return [e for k, e in tree.items() if k.startswith(prefix)]


def add_user(store, layout, record, index, host, ref, runtime):
    """Record that ``host``'s runtime network ``ref`` uses the network. Checked against the network
    record's index: a removal's mark fails it (the caller reads again), and a removal that marked
    after it sees the user and keeps the network."""
    key = layout.user(record["id"], host, ref)
    value, key_index = store.get(key)
    if isinstance(value, dict) and value.get("runtime") == runtime:
        ops = [_consul.op_check_index(layout.network(record["name"]), index)]
    else:
        ops = [_consul.op_check_index(layout.network(record["name"]), index),
               _consul.op_cas(key, {"host": host, "runtime": runtime, "ref": ref, "at": _keys.now()}, key_index)]
    try:
        store.commit(ops)
    except _consul.TxnConflict:
        raise RemovalConflict("network %s changed while this host registered its use of it" % record["name"],
                              "name")


def remove_user(store, layout, network_id, host, ref):
    """Forget ``host``'s runtime network ``ref``; True when the key was there."""
    key = layout.user(network_id, host, ref)
    value, index = store.get(key)
    if value is None and not index:
        return False
    try:
        store.commit([_consul.op_delete_cas(key, index)])
    except _consul.TxnConflict:
        pass  # gone meanwhile (a network removal took it)
    return True


def mark_removing(store, layout, record, index, host):
    """Step 1 of a removal: no endpoint can be claimed under the network after this."""
    marked = dict(record, removing={"host": host, "at": _keys.now()})
    try:
        indexes = store.commit([_consul.op_cas(layout.network(record["name"]), marked, index)])
    except _consul.TxnConflict:
        raise RemovalConflict("network %s changed while it was being removed; run again" % record["name"], "state")
    return marked, indexes[layout.network(record["name"])]


def unmark_removing(store, layout, marked, index):
    """The removal found endpoints after all: the network stays, usable again."""
    record = {k: v for k, v in marked.items() if k != "removing"}
    try:
        store.commit([_consul.op_cas(layout.network(record["name"]), record, index)])
    except _consul.TxnConflict:
        pass


def delete_network(store, layout, marked, index, tree):
    """Last step of a removal: every key it read (delete-cas at that index), then the record and
    its VNI claim. Keys are deleted in chunks; the record goes in the last one, so a failure
    part-way leaves the marked record for a re-run to finish."""
    ops = [_consul.op_delete_cas(key, e.index) for key, e in sorted(tree.items())]
    ops += _gateway_claim_deletes(store, layout, [e.value for e in endpoints_of(tree, layout, marked)])
    vni_key = layout.vni(marked["vni"])
    vni_value, vni_index = store.get(vni_key)
    final = [_consul.op_delete_cas(layout.network(marked["name"]), index)]
    if vni_value is not None and vni_value.get("id") == marked["id"]:
        final.append(_consul.op_delete_cas(vni_key, vni_index))
    # The change marks go last: the chunks above set those of the records they delete.
    final.append(_consul.op_delete_tree(layout.changes(marked["id"])))
    _commit_chunks(store, ops, "removing network %s" % marked["name"], RemovalConflict)
    try:
        store.commit(final)
    except _consul.TxnConflict as e:
        raise RemovalConflict("network %s changed while it was being removed (%s); run again" % (marked["name"], e),
                              "state")


def _gateway_claim_deletes(store, layout, records):
    ops = []
    for record in records:
        if record.get("gateway_ip"):
            key = layout.gateway_claim(record["host"], record["gateway_ip"])
            value, index = store.get(key)
            if value is not None and value.get("endpoint") == "%s/%s" % (record["network_id"], record["name"]):
                ops.append(_consul.op_delete_cas(key, index))
    return ops


def _commit_chunks(store, ops, what, conflict=OverlayError):
    for part in store.batches(ops):
        try:
            store.commit(part)
        except _consul.TxnConflict as e:
            raise conflict("%s: a key changed meanwhile (%s); run again" % (what, e), "state")


# ------------------------------------------------------------------------------------ endpoints

def endpoint_keys(layout, record):
    """The keys an endpoint record owns: its record and its claims."""
    keys = [layout.endpoint(record["network_id"], record["name"]),
            layout.ip_claim(record["network_id"], record["ip"]),
            layout.mac_claim(record["network_id"], record["mac"])]
    if record.get("gateway_ip"):
        keys.append(layout.gateway_claim(record["host"], record["gateway_ip"]))
    return keys


def _claim_ops(layout, network, record):
    owner = {"endpoint": record["name"], "id": record["id"], "at": _keys.now()}
    pending = record.pop("_pending", None)  # an address claimed ahead (claim_address): taken over here
    ops = [_consul.op_delete_cas(pending[0], pending[1])] if pending else []
    ops += [_consul.op_create(layout.ip_claim(network["id"], record["ip"]), owner),
            _consul.op_create(layout.mac_claim(network["id"], record["mac"]), owner)]
    if record.get("gateway_ip"):
        ops.append(_consul.op_create(layout.gateway_claim(record["host"], record["gateway_ip"]),
                                     dict(owner, endpoint="%s/%s" % (network["id"], record["name"]))))
    ops.append(_consul.op_create(layout.endpoint(network["id"], record["name"]), record))
    return ops


class Claimed:
    """What a batch attach committed: records with the indexes of every key they own."""

    def __init__(self):
        self.records = []
        self.indexes = {}

    def add(self, records, indexes):
        self.records += records
        self.indexes.update(indexes)


def read_endpoint_state(store, layout, network, host):
    """What an attach needs: existing records (Entries by name), address and MAC claims, and this
    host's gateway claims."""
    tree = network_tree(store, layout, network)
    existing = {e.value["name"]: e for e in endpoints_of(tree, layout, network)}
    ips = {_keys.Layout.last(k): (e.value or {}).get("endpoint") for k, e in tree.items()
           if k.startswith(layout.ipam(network["id"]))}
    macs = {_keys.Layout.last(k): (e.value or {}).get("endpoint") for k, e in tree.items()
            if k.startswith(layout.macs(network["id"]))}
    gw_claims = {_keys.Layout.last(k) for k in store.keys(layout.gateway_ipam(host))}
    return existing, ips, macs, gw_claims


def read_item_state(store, layout, network, wanted):
    """read_endpoint_state for known endpoints only: ``wanted`` is [(name, ip, mac)], each read with
    point requests (its record, the claims of its address and MAC), so the cost does not grow with
    the network. Enough for endpoints whose address is known (a runtime's, claimed ahead): the
    transaction that creates them still checks every key it creates, so a claim made after this
    read loses the race there, never silently. No gateway claims (a runtime gives egress)."""
    existing, ips, macs = {}, {}, {}
    # (No record key for a nameless claim, claim_address's: the endpoints directory is no record.)
    keys = [(name, ip, mac, layout.endpoint(network["id"], name) if name else None, layout.ip_claim(network["id"], ip),
             layout.mac_claim(network["id"], mac)) for name, ip, mac in wanted]
    found = store.get_many([k for item in keys for k in item[3:] if k])  # one request, not three per endpoint
    for name, ip, mac, key, ip_key, mac_key in keys:
        value, index = found.get(key, (None, 0))
        if isinstance(value, dict):
            existing[value.get("name", name)] = Entry(key, value, index)
        for claims, claim_key, item in ((ips, ip_key, ip), (macs, mac_key, mac)):
            value = found.get(claim_key, (None, 0))[0]
            if value is not None:
                claims[item] = value.get("endpoint") if isinstance(value, dict) else None
    return existing, ips, macs, set()


def claim_endpoints(store, layout, network, network_index, host, build, count, what, wanted=None):
    """Claim ``count`` new endpoints in transactions of CHUNK, each checking the network record.

    ``build(state, start, end, attempt)`` returns the records of items start..end from fresh state
    (raising OverlayError when a request is impossible). If a later chunk fails, the chunks
    committed before it are released, and the error still says what went wrong.
    """
    claimed = Claimed()
    try:
        for start in range(0, count, CHUNK):
            end = min(start + CHUNK, count)
            records, indexes = _claim_chunk(store, layout, network, network_index, host, build, start, end, what,
                                            wanted)
            claimed.add(records, indexes)
    except BaseException:
        release(store, layout, claimed.records, claimed.indexes)
        raise
    return claimed


def _claim_chunk(store, layout, network, network_index, host, build, start, end, what, wanted=None):
    net_key = layout.network(network["name"])

    def read():
        current, index = read_network(store, layout, network["name"])
        if current is None or current.get("id") != network["id"]:
            raise OverlayError("network %s was removed while endpoints were being attached" % network["name"],
                               "network")
        usable(current)
        if index != network_index:
            raise OverlayError("network %s changed while endpoints were being attached; run again"
                               % network["name"], "network")
        if wanted is not None:
            return read_item_state(store, layout, network, wanted[start:end])
        return read_endpoint_state(store, layout, network, host)

    def build_ops(state, attempt):
        records = build(state, start, end, attempt)
        ops = [_consul.op_check_index(net_key, network_index)]
        for record in records:
            ops += _claim_ops(layout, network, record)
        return ops, records

    return _allocate.claim(store, read, build_ops, what, lambda records: _settle_claim(store, layout, records))


def _settle_claim(store, layout, records):
    """After a lost answer: {key: index} when the chunk committed, None when it did not."""
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            found = {}
            for record in records:
                for key in endpoint_keys(layout, record):
                    value, index = store.get(key)
                    if value is not None and value.get("id") == record["id"]:
                        found[key] = index
            if not found:
                return None
            return found  # a transaction is atomic: found some means it committed
        except OverlayError:
            _settle_wait(attempt)
    raise OverlayError("Consul did not answer whether the endpoints were registered; their claims are released "
                       "by the garbage collection if they were", "consul_host")


def release(store, layout, records, indexes=None):
    """Delete records and their claims: delete-cas at the known index (what this run wrote), or
    at the index read now, and only keys still holding this record's id."""
    ops = []
    for record in records:
        for key in endpoint_keys(layout, record):
            index = (indexes or {}).get(key)
            if index is None:
                value, index = store.get(key)
                if value is None or value.get("id") not in (record["id"], None):
                    continue
            ops.append(_consul.op_delete_cas(key, index))
    errors = []
    for part in store.batches(ops):
        try:
            store.commit(part)
        except OverlayError as e:  # keep releasing the other chunks; GC takes what is left
            errors.append(e)
    if errors:
        raise errors[0]


def claim_address(store, layout, network, network_index, host, ip=None, field="ip"):
    """Claim one address ahead of its endpoint (Docker's IpamDriver.RequestAddress comes before
    CreateEndpoint and names no endpoint). The claim holds ``pending: host`` and no endpoint; the
    attach that follows takes it over in the transaction that creates the record (Item.pending),
    and one never taken over is released by ReleaseAddress or, after the grace period, by the
    garbage collection. Checks the network record like every endpoint claim. Returns
    (ip, claim key, ModifyIndex)."""
    net = ipaddress.ip_network(network["subnet"])
    if ip is not None:
        ip = _validate.ipv4_in(ip, net, field)
        if str(ip) == network["gateway"]:
            raise OverlayError("%s is the gateway address of network %s" % (ip, network["name"]), field)
    token = _keys.new_id()
    net_key = layout.network(network["name"])

    def read():
        current, index = read_network(store, layout, network["name"])
        if current is None or current.get("id") != network["id"]:
            raise OverlayError("network %s is gone" % network["name"], "network")
        usable(current)
        if index != network_index:
            raise OverlayError("network %s changed meanwhile; try again" % network["name"], "network")
        if ip is not None:  # the one key this claim creates; the transaction checks it again
            return read_item_state(store, layout, network, [("", str(ip), _keys.mac_for(ip))])
        return None, _claims(store, layout.ipam(network["id"])), _claims(store, layout.macs(network["id"]))

    def build(state, attempt):
        _existing, claims, macs = state[:3]
        if ip is not None:
            if str(ip) in claims:
                raise OverlayError("%s is already taken by endpoint %s of network %s"
                                   % (ip, claims[str(ip)] or "(an address being attached)", network["name"]), field)
            chosen = ip
        else:
            reserved = set(claims) | {network["gateway"]} | {a for a in map(_keys.ip_for, macs) if a is not None}
            chosen = _allocate.free_addresses(net, reserved, 1, randomize=_allocate.spread(attempt), field=field)[0]
        key = layout.ip_claim(network["id"], chosen)
        value = {"endpoint": None, "pending": host, "id": token, "at": _keys.now()}
        return [_consul.op_check_index(net_key, network_index), _consul.op_create(key, value)], (chosen, key)

    def settle(result):
        index = _settled_value(store, result[1], token)
        return None if index is None else {result[1]: index}

    (chosen, key), indexes = _allocate.claim(store, read, build, "an address in network %s" % network["name"],
                                             settle)
    return chosen, key, indexes[key]


def _claims(store, prefix):
    """{last key segment: owning endpoint or None} of one claim tree (not the endpoint records)."""
    return {_keys.Layout.last(k): (v or {}).get("endpoint") if isinstance(v, dict) else None
            for k, (v, _i) in store.get_tree(prefix).items()}


def pending_claim(store, layout, network, ip, host):
    """(key, index) of this host's claim_address claim on ``ip``, or None."""
    key = layout.ip_claim(network["id"], ip)
    value, index = store.get(key)
    if isinstance(value, dict) and value.get("endpoint") is None and value.get("pending") == host:
        return key, index
    return None


def release_pending(store, layout, network, ip, host):
    """Undo claim_address (ReleaseAddress): only this host's claim, and only while no endpoint took
    it over. Returns True when a claim was released."""
    found = pending_claim(store, layout, network, ip, host)
    if found is None:
        return False
    try:
        store.commit([_consul.op_delete_cas(found[0], found[1])])
    except _consul.TxnConflict:
        return False  # taken over or released meanwhile
    return True


def update_endpoint(store, layout, entry, record):
    """Rewrite one endpoint record (moved to a new namespace), checked against the read index."""
    try:
        return store.commit([_consul.op_cas(entry.key, record, entry.index)])[entry.key]
    except _consul.TxnConflict:
        raise OverlayError("endpoint %s changed while it was being updated; run again" % record["name"], "name")


def set_aliases(store, layout, network, name, aliases, attempts=5):
    """Give endpoint ``name`` the DNS ``aliases`` the names service answers besides its name (a
    runtime's container name, known only after the endpoint exists). A checked write against the
    index read: a record changed meanwhile is read again, a record removed meanwhile stays removed.
    Returns True when the record carries the aliases."""
    key = layout.endpoint(network["id"], name)
    aliases = sorted(set(aliases))
    for _attempt in range(attempts):
        value, index = store.get(key)
        if not isinstance(value, dict):
            return False
        if value.get("aliases") == aliases:
            return True
        try:
            store.commit([_consul.op_cas(key, dict(value, aliases=aliases), index)])
            return True
        except _consul.TxnConflict:
            continue
    return False


def mark_detaching(store, layout, entries):
    """Step 1 of a detach: proves the token may write and that the records are the ones read,
    before any interface is removed. Returns the new indexes by key."""
    ops = [_consul.op_cas(e.key, dict(e.value, detaching=_keys.now()), e.index) for e in entries]
    indexes = {}
    for part in store.batches(ops):
        try:
            indexes.update(store.commit(part))
        except _consul.TxnConflict:
            raise OverlayError("an endpoint changed while it was being detached; run again", "name")
    return indexes


def records_of_host(tree, layout, host):
    """Endpoint Entries of ``host`` in a whole-store tree ({key: (value, index)})."""
    prefix = layout.root + "endpoints/"
    return [Entry(k, v, i) for k, (v, i) in tree.items()
            if k.startswith(prefix) and isinstance(v, dict) and v.get("host") == host]


def prefixlen(network):
    return ipaddress.ip_network(network["subnet"]).prefixlen
