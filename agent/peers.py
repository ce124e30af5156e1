# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's peers sync: vxlan0's peers follow Consul between Ansible runs (Docker's serf events).

A long-running loop holds a Consul blocking query on the store; whenever it changes, every network
that has a namespace on this host gets its FDB and neighbour entries synced with the same engine
code the modules use (``_peers``, ``_antispoof``, ``_firewall``, ``_overlay_ns``). Full passes (the
first, and each periodic resync) also run the garbage collection (``_gc``) unless it is switched off.
Started by ``python -m ansible_collections.overlay.vxlan.agent`` (agent/__main__.py).
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time

from ansible_collections.overlay.vxlan.plugins.module_utils import (
    _antispoof, _consul, _firewall, _gc, _hostlock, _keys, _netns, _overlay_ns, _peers, _underlay)
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


def sync_once(nl, store, layout, underlay, once=None, gc=False, gc_grace=_gc.DEFAULT_GRACE, synced=None,
              full=True):
    """Sync every network present on this host with one read of the store. Returns the actions taken.

    A value under the prefix that is not what this collection writes is skipped (and, with ``once``,
    logged once); so is a network whose sync fails: the rest still syncs. Overlay namespaces of
    networks that Consul no longer holds get their peers removed.

    ``synced`` (a dict the caller keeps between passes) remembers what each network's last sync
    enforced. With ``full=False`` (a pass woken by a change of the store) a network whose record
    and devices are the same as then gets only the difference, with point requests: its cost
    follows the change, not the number of endpoints. Kernel drift (an entry deleted by hand) is
    found by the full passes: the first, the periodic resync and every pass after an error.
    """
    once = once or Once(lambda text: None)
    synced = {} if synced is None else synced

    def bad(key, raw):
        once(key, "skipping %s: its value %r is not the JSON this collection writes" % (key, raw[:80]))

    actions = []
    tree = store.get_tree(layout.root, on_bad=bad)
    networks = []
    for key, (value, _index) in sorted(tree.items()):
        if key.startswith(layout.networks()) and value is not None:
            if _valid_network(value):
                networks.append(value)
            else:
                once(key, "skipping %s: not a network record (%r)" % (key, str(value)[:80]))
    registered = _firewall.registered_tree(tree, layout, underlay.vtep)
    if full or synced.get("firewall") != registered:
        synced.pop("firewall", None)
        actions += _firewall.sync_tree(tree, layout, underlay.vtep)
        synced["firewall"] = registered
    for network in networks:
        prefix = layout.endpoints(network["id"])
        try:
            vx_index = _overlay_ns.vxlan_index(nl, network)
            if vx_index is None:
                synced.pop(network["id"], None)
                continue  # not on this host (yet): overlay_network builds it
            endpoints = []
            for key, (value, _index) in sorted(tree.items()):
                if key.startswith(prefix) and value is not None:
                    if _valid_endpoint(value):
                        endpoints.append(value)
                    else:
                        once(key, "skipping %s: not an endpoint record (%r)" % (key, str(value)[:80]))
            ns = _overlay_ns.namespace(network)
            ipr = nl.get(ns)
            # The same record on the same devices (a namespace built again gets a new identity).
            where = (json.dumps(network, sort_keys=True), _netns.identity(ns), vx_index)
            before = synced.pop(network["id"], None)
            before = before[1] if before is not None and not full and before[0] == where else None
            want = _peers.desired(endpoints, underlay.vtep)
            done = _peers.sync(ipr, vx_index, want, apply=True,
                               have=None if before is None else _peers.desired(before, underlay.vtep))
            anti = None if before is None else _antispoof.follow(nl, network, before, endpoints, underlay.vtep,
                                                                 apply=True)
            done += _antispoof.reconcile(nl, network, endpoints, underlay.vtep, apply=True) if anti is None else anti
            actions += ["%s: %s" % (network["name"], a) for a in done]
            synced[network["id"]] = (where, endpoints)
        except Exception as e:  # one network's trouble (a vanished device, a netlink error) stops only it
            once(network["id"], "network %s: sync failed: %s" % (network["name"], _describe(e)))
    try:
        # Namespaces of networks Consul no longer holds (removed during a partition, Consul rebuilt):
        # torn down, as every module run does. The read above was taken under the host lock, so
        # it is never older than the run that built a namespace.
        actions += _overlay_ns.reconcile(nl, {n["id"]: n for n in networks}, layout.prefix, apply=True)
    except Exception as e:
        once("reconcile", "tearing down stale overlay namespaces failed: %s" % _describe(e))
    if gc:
        try:
            found = [f for f in _gc.collect(nl, store, layout, underlay, layout.prefix, grace=gc_grace)
                     if f["kind"] != "value"]  # unreadable values: logged once by the sync above
            actions += ["gc: %s %s: %s (%s)" % (f["kind"], f.get("key") or f.get("device"), f["reason"], f["action"])
                        for f in found]
            if found:  # it changed what the networks' syncs above left: the next pass starts afresh
                for key in [k for k in synced if k != "mark"]:
                    del synced[key]
        except Exception as e:
            once("gc", "garbage collection failed: %s" % _describe(e))
    return actions


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


def _wait_or_heal(settings, store, root, index, wait):
    """The blocking query, run in a thread of its own while this one checks every second that
    Consul still answers: a connection that went silent (a partition) is abandoned as soon as the
    health check fails, instead of after the query's own timeout."""
    box = queue.Queue()
    watcher = _consul.Consul(settings)  # its own connections: the abandoned thread keeps them

    def query():
        try:
            box.put((True, watcher.wait(root, index, wait)))
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
            return value
        raise value


def run(params, log=_log, once=False, wait="30s", clock=time.monotonic, gc=True):
    """Sync, then wait for a change (or ``wait``: a periodic full resync), forever.

    Consul going away is logged once; the service then checks every BACKOFF_MAX seconds at most,
    logs "reconnected, resyncing" once when Consul answers again and resyncs everything.
    Nothing but ``once`` mode ends the loop: every exception is logged and retried.
    """
    settings = _consul.connection_settings(params)
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    problems = Once(log)
    index = 0
    down_since, announced = None, False
    full_pass = True
    synced = {}  # what each network's last sync enforced (sync_once): change passes apply differences
    _hostlock.write_mark()  # a mark to compare with from the start (none readable: every pass is full)
    while True:
        try:
            if down_since is not None and not announced:
                log("reconnected to Consul at %s after %.1fs, resyncing" % (store.url, clock() - down_since))
                announced = True
            with _hostlock.HostLock(marks=False), _netns.Netlink() as nl:
                underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, settings["host"])
                # Another writer held the lock since the last pass (a module run, a detach): the
                # kernel is no longer what that pass left, so this one is full.
                mark = _hostlock.read_mark()
                full = full_pass or mark is None or mark != synced.get("mark")
                synced["mark"] = mark
                # Garbage collection on the first pass and on every periodic resync, not on every change.
                for action in sync_once(nl, store, layout, underlay, once=problems, gc=gc and full_pass,
                                        gc_grace=params.get("gc_grace", _gc.DEFAULT_GRACE), synced=synced,
                                        full=full):
                    log(action)
            if down_since is not None:
                down_since, announced = None, False
                problems.seen.clear()  # a problem that persists after the outage is worth a line again
            if once:
                return 0
            new_index = _wait_or_heal(settings, store, layout.root, index, wait)
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
