# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's peers sync: vxlan0's peers follow Consul between Ansible runs (Docker's serf events).

A long-running loop holds a Consul blocking query on the store; whenever it changes, every network
that has a namespace on this host gets its FDB and neighbour entries synced with the same engine
code the modules use (``_peers``, ``_antispoof``, ``_firewall``, ``_overlay_ns``). A full pass (the
first, each periodic resync, the first after another writer held the host lock or after an error)
reads and enforces everything, and also runs the garbage collection (``_gc``) unless it is switched
off; a pass woken by a change reads only what the change marks name (``_changes.View``) and applies
the endpoint records that changed since the last pass (``State``), so that its cost follows the
change, not the size of the network.
Started by ``python -m ansible_collections.overlay.vxlan.agent`` (agent/__main__.py).
"""
from __future__ import annotations

import collections
import queue
import sys
import threading
import time

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _antispoof, _changes, _consul, _firewall, _gc, _hostlock, _keys, _netns, _overlay_ns, _peers, _underlay)
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

BACKOFF_FIRST = 0.05  # seconds; doubling while Consul does not answer ...
BACKOFF_MAX = 1.0     # ... capped, so the service resumes within a second or two of Consul's return
ENDPOINT_FIELDS = ("mac", "ip", "vtep")


class Once:
    """Logs each distinct problem once (a bad key, a failing network), not on every sync."""

    def __init__(self, log):
        self.log = log
        self.seen = set()

    def __call__(self, key, text):
        if (key, text) not in self.seen:
            self.seen.add((key, text))
            self.log(text)


def _valid_network(value):
    return isinstance(value, dict) and isinstance(value.get("id"), str) and len(value["id"]) >= 12 and \
        isinstance(value.get("name"), str)


def _valid_endpoint(value):
    return isinstance(value, dict) and all(isinstance(value.get(f), str) for f in ENDPOINT_FIELDS)


class Synced:
    """What the last sync of one network enforced: the network's record (its ModifyIndex) on the
    same namespace (its identity) with that vxlan0, and the remote endpoints (``_peers.Index``)."""

    def __init__(self, where, vx_index, index):
        self.where, self.vx_index, self.index = where, vx_index, index


class State:
    """What the passes read and enforced, kept between them (``run`` holds one).

    The store is read through a ``_changes.View``: a full pass reads everything, a change pass only
    the endpoint records whose change mark moved (docs/key-layout.md, "Change marks"). Each network
    then applies only the records that changed: the cost of a change pass follows the change, not
    the number of endpoints. A writer that does not set the marks (another tool writing records
    straight into Consul) is seen by the next full pass (the periodic resync, ``--wait``)."""

    def __init__(self):
        self.view = _changes.View()  # the store as last read
        self.endpoints = {}   # network id -> {key: endpoint record}, the valid records as last read
        self.vteps = collections.Counter()  # the vtep of every endpoint record (the firewall's set)
        self.synced = {}      # network id -> Synced
        self.firewall = None  # what the firewall's sets last got from Consul
        self.network_ids = None  # the network ids the last stale-namespace check saw
        self.mark = None      # the host lock's mark at the last pass
        self.underlay = None  # this host's underlay, found by the last full pass

    def forget(self):
        """Something else changed the kernel: the next pass syncs every network in full."""
        self.synced.clear()
        self.firewall = self.network_ids = None

    @property
    def parts(self):
        return self.view.parts

    def read(self, store, layout, once, full):
        """Read the store (``_changes.View``); returns {network id: {key: (record before, record
        after)}}: the endpoint records that changed since the last read (every one after a full
        read); {} for none. Values that are not endpoint records are logged once and left out."""
        def bad(key, raw):
            once(key, "skipping %s: its value %r is not the JSON this collection writes" % (key, raw[:80]))

        moved = self.view.read(store, layout, bad, full)
        if full:
            self.endpoints, self.vteps = {}, collections.Counter()
        changes = {}
        for network_id, pairs in moved.items():
            records = self.endpoints.setdefault(network_id, {})
            for key, (before, after) in pairs.items():
                for value, step in ((before, -1), (after, 1)):
                    if isinstance(value, dict) and isinstance(value.get("vtep"), str) and value["vtep"]:
                        self.vteps[value["vtep"]] += step
                before = records.pop(key, None)
                if after is not None and not _valid_endpoint(after):
                    once(key, "skipping %s: not an endpoint record (%r)" % (key, str(after)[:80]))
                    after = None
                if after is not None:
                    records[key] = after
                if before is not None or after is not None:
                    changes.setdefault(network_id, {})[key] = (before, after)
            if not records:
                del self.endpoints[network_id]
        self.vteps += collections.Counter()  # drops the vteps no record has any more
        return changes


def sync_once(nl, store, layout, underlay, once=None, gc=False, gc_grace=_gc.DEFAULT_GRACE, state=None,
              full=True):
    """Sync every network present on this host from a read of the store. Returns the actions taken.

    A value under the prefix that is not what this collection writes is skipped (and, with ``once``,
    logged once); so is a network whose sync fails: the rest still syncs. Overlay namespaces of
    networks that Consul no longer holds get their peers removed.

    ``state`` (a State the caller keeps between passes) remembers what was read and what each
    network's last sync enforced. With ``full=False`` (a pass woken by a change of the store) a
    network whose record and namespace are the same as then gets only the endpoint records that
    changed, with point requests, and a network without changes costs nothing. Kernel drift (an
    entry deleted by hand) is found by the full passes: the first, the periodic resync and every
    pass after an error.
    """
    once = once or Once(lambda text: None)
    state = State() if state is None else state
    if full:
        state.forget()
    actions = []
    changes = state.read(store, layout, once, full)
    networks = []
    for key, (value, index) in sorted(state.parts["networks/"].items()):
        if value is None:
            continue
        if _valid_network(value):
            networks.append((value, index))
        else:
            once(key, "skipping %s: not a network record (%r)" % (key, str(value)[:80]))
    hosts = [value for value, _index in state.parts["hosts/"].values()]
    registered = _firewall.registered([v for v, _i in state.parts["networks/"].values()], hosts,
                                      [{"vtep": v} for v in state.vteps], underlay.vtep)
    if state.firewall != registered:
        state.firewall = None
        actions += _firewall.sync(*registered, apply=True)
        state.firewall = registered
    for network, net_index in networks:
        before = state.synced.pop(network["id"], None)
        try:
            done = _sync_network(nl, network, net_index, state, before, changes.get(network["id"]), underlay)
            actions += ["%s: %s" % (network["name"], a) for a in done]
        except Exception as e:  # one network's trouble (a vanished device, a netlink error) stops only it
            state.synced.pop(network["id"], None)
            once(network["id"], "network %s: sync failed: %s" % (network["name"], _describe(e)))
    ids = frozenset(n["id"] for n, _i in networks)
    for gone in set(state.synced) - ids:
        del state.synced[gone]
    if ids != state.network_ids:
        state.network_ids = None
        try:
            # Namespaces of networks Consul no longer holds (removed during a partition, Consul rebuilt):
            # torn down, as every module run does. The read above was taken under the host lock, so
            # it is never older than the run that built a namespace. Only namespaces change that
            # (module runs: the pass after them is full) and the networks in Consul: checked then.
            actions += _overlay_ns.reconcile(nl, {n["id"]: n for n, _i in networks}, layout.prefix, apply=True)
            state.network_ids = ids
        except Exception as e:
            once("reconcile", "tearing down stale overlay namespaces failed: %s" % _describe(e))
    if gc:
        try:
            found = [f for f in _gc.collect(nl, store, layout, underlay, layout.prefix, grace=gc_grace)
                     if f["kind"] != "value"]  # unreadable values: logged once by the sync above
            actions += ["gc: %s %s: %s (%s)" % (f["kind"], f.get("key") or f.get("device"), f["reason"], f["action"])
                        for f in found]
            if found:  # it changed what the networks' syncs above left: the next pass starts afresh
                state.forget()
        except Exception as e:
            once("gc", "garbage collection failed: %s" % _describe(e))
    return actions


def _sync_network(nl, network, net_index, state, before, changes, underlay):
    """One network: only ``changes`` when ``before`` (its last sync) still holds, else in full."""
    ns = _overlay_ns.namespace(network)
    where = (net_index, _netns.identity(ns))
    records = state.endpoints.get(network["id"], {})
    if before is not None and before.where == where:
        if changes:
            have, want = before.index.apply(changes)
            ipr = nl.get(ns)
            done = _peers.sync(ipr, before.vx_index, want, apply=True, have=have)
            anti = [] if not _antispoof.enabled(network) else _antispoof.follow(
                nl, network, [b for b, _a in changes.values() if b is not None],
                [a for _b, a in changes.values() if a is not None], underlay.vtep, apply=True)
            if anti is None:  # a local endpoint went or changed: the anti-spoofing part in full
                anti = _antispoof.reconcile(nl, network, [r for _k, r in sorted(records.items())], underlay.vtep,
                                            apply=True)
            done += anti
        else:
            done = []
        state.synced[network["id"]] = before
        return done
    vx_index = _overlay_ns.vxlan_index(nl, network)
    if vx_index is None:
        return []  # not on this host (yet): overlay_network builds it
    endpoints = [r for _k, r in sorted(records.items())]
    done = _peers.sync(nl.get(ns), vx_index, _peers.desired(endpoints, underlay.vtep), apply=True)
    done += _antispoof.reconcile(nl, network, endpoints, underlay.vtep, apply=True)
    state.synced[network["id"]] = Synced(where, vx_index, _peers.Index(records, underlay.vtep))
    return done


def _describe(exc):
    if isinstance(exc, OverlayError):
        return exc.message
    return "%s: %s" % (type(exc).__name__, exc)


def _log(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _outage(exc):
    """True when exc means Consul is unreachable or silent (rather than a problem with the data)."""
    return isinstance(exc, OverlayError) and exc.field == "consul_host"


def _wait_or_heal(settings, store, root, index, wait, kept=None):
    """The blocking query, run in a thread of its own while this one checks every second that
    Consul still answers: a connection that went silent (a partition) is abandoned as soon as the
    health check fails, instead of after the query's own timeout.

    It asks for the keys up to the first "/" under ``root`` only: a handful of names, whatever the
    number of endpoints, with the index of the whole tree. ``kept`` (a dict the caller keeps) holds
    the client of a query that ended well, for the next one: its connection is used again."""
    box = queue.Queue()
    kept = {} if kept is None else kept
    watcher = kept.pop("watcher", None) or _consul.Consul(settings)  # abandoned: the thread keeps its connections

    def query():
        try:
            box.put((True, watcher.wait(root, index, wait, separator="/")))
        except Exception as e:
            box.put((False, e))

    threading.Thread(target=query, daemon=True, name="consul-wait").start()
    while True:
        try:
            ok, value = box.get(timeout=1.0)
        except queue.Empty:
            if not store.alive():
                raise OverlayError("Consul at %s stopped answering while watching %s" % (store.url, root),
                                   "consul_host")
            continue
        if ok:
            kept["watcher"] = watcher
            return value
        raise value


def open_store(settings):
    """The service's Consul client. Every change pass reads the networks' endpoint records: asked
    for uncompressed, explicitly (Consul gzips an answer for a client that accepts it, for every
    reader on every change, and each reader would gunzip it)."""
    store = _consul.Consul(settings)
    store.headers = dict(store.headers, **{"Accept-Encoding": "identity"})
    return store


def sync_pass(params, store, layout, state, problems, full_pass, gc):
    """One pass of the service under the host lock (``run``'s loop body): full when ``full_pass``
    (the first, a periodic resync, after an error) or when another writer held the lock since the
    last pass; a change pass otherwise. Returns the actions."""
    with _hostlock.HostLock(marks=False), _netns.Netlink() as nl:
        # Another writer held the lock since the last pass (a module run, a detach): the
        # kernel is no longer what that pass left, so this one is full.
        mark = _hostlock.read_mark()
        full = full_pass or mark is None or mark != state.mark or state.underlay is None
        state.mark = mark
        if full:
            state.underlay = None
            state.underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, store.settings["host"])
        else:
            nl.snapshots = False  # a change pass reads a few links by name: point requests, not dumps
        # Garbage collection on the first pass and on every periodic resync, not on every change.
        return sync_once(nl, store, layout, state.underlay, once=problems, gc=gc and full_pass,
                         gc_grace=params.get("gc_grace", _gc.DEFAULT_GRACE), state=state, full=full)


def run(params, log=_log, once=False, wait="30s", clock=time.monotonic, gc=True):
    """Sync, then wait for a change (or ``wait``: a periodic full resync), forever.

    Consul going away is logged once; the service then checks every BACKOFF_MAX seconds at most,
    logs "reconnected, resyncing" once when Consul answers again and resyncs everything.
    Nothing but ``once`` mode ends the loop: every exception is logged and retried.
    """
    settings = _consul.connection_settings(params)
    store = open_store(settings)
    layout = _keys.Layout(settings["prefix"])
    problems = Once(log)
    index = 0
    down_since, announced = None, False
    full_pass = True
    state = State()  # what was read and enforced: change passes apply differences
    kept = {}
    _hostlock.write_mark()  # a mark to compare with from the start (none readable: every pass is full)
    while True:
        try:
            if down_since is not None and not announced:
                log("reconnected to Consul at %s after %.1fs, resyncing" % (store.url, clock() - down_since))
                announced = True
            for action in sync_pass(params, store, layout, state, problems, full_pass, gc):
                log(action)
            if down_since is not None:
                down_since, announced = None, False
                problems.seen.clear()  # a problem that persists after the outage is worth a line again
            if once:
                return 0
            new_index = _wait_or_heal(settings, store, layout.root, index, wait, kept)
            full_pass = new_index == index
            if new_index < index:
                log("Consul's index went back from %d to %d (rebuilt?): resyncing everything" % (index, new_index))
                new_index = 0
            index = new_index
        except Exception as e:  # nothing may end the service: NetlinkError is not an OSError
            if once:
                raise
            index = 0
            full_pass = True
            if _outage(e):
                if down_since is None:
                    down_since, announced = clock(), False
                    log("lost contact with Consul (retrying every %.0fs at most, logged once): %s"
                        % (BACKOFF_MAX, _describe(e)))
                _until_alive(store)
            else:
                problems("run", "error (retrying): %s" % _describe(e))
                time.sleep(BACKOFF_MAX)


def _until_alive(store):
    store.reset()
    delay = BACKOFF_FIRST
    while True:
        time.sleep(delay)
        if store.alive():
            return
        delay = min(delay * 2, BACKOFF_MAX)
