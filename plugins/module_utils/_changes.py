# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The read side of the change marks: the store as a long-running reader last saw it, kept up to
date by reads that cost what changed (docs/key-layout.md, "Change marks").

Every transaction that writes an endpoint record also sets the mark of the record's shard
(``_keys.Layout.change_marks``, added by ``_consul.Consul.commit``). A change read (``View.read``
with ``full=False``) reads the networks, the hosts and the marks in one read-only transaction, and
for each network whose marks moved: the names of its records (a key listing), then the records
of the moved shards and any name not seen before (one read-only transaction per 64 keys).

Why that is sound: a record cannot change without its mark moving in the same raft index, and the
marks are read before the records, so a record read can only be newer than the marks read with it;
a write after the marks were read moves a mark again, past the index the caller's blocking query
returned, and wakes the next read. A record deleted and created again under the same name moves
its mark twice. A network whose record went is read whole: its removal deleted its marks, maybe
before this reader saw them. A writer that sets no marks is seen by the next full read.

The readers: the agent's peers service (agent/peers.py) and names service (agent/names.py).
"""
from __future__ import annotations

from ansible_collections.overlay.vxlan.plugins.module_utils import _keys

MARKED = ("networks/", "hosts/", "changes/")  # what a change read reads whole (a few keys each)
WHOLE = _keys.SHARDS // 4  # more shards of a network moved than this: its records are read whole
ALL = frozenset(("*",))  # every shard of a network


class View:
    """The networks, hosts and change marks ({key: (value, modify_index)} each) and every endpoint
    key's entry, per network, as last read."""

    def __init__(self):
        self.parts = {}    # part (MARKED) -> {key: (value, modify_index)}
        self.raw = {}      # network id -> {key: (value, modify_index)}: its endpoint keys
        self.sharded = {}  # network id -> {shard: {key}} of those keys

    def tree(self):
        """{key: (value, modify_index)} of the networks and of every endpoint key."""
        tree = dict(self.parts.get("networks/", {}))
        for entries in self.raw.values():
            tree.update(entries)
        return tree

    def read(self, store, layout, bad, full):
        """Read the store: everything with ``full``, else what the moved marks name. Returns
        {network id: {key: (value before or None, value after or None)}} of the endpoint keys
        whose entry changed since the last read (every one after a full read). ``bad(key, raw)``
        is called for a value that is not JSON (left out)."""
        if full:
            parts = {part: {} for part in MARKED}
            raw = {}
            skip = len(layout.root + "endpoints/")
            for key, entry in store.get_tree(layout.root, on_bad=bad).items():
                part = key[len(layout.root):].split("/", 1)[0] + "/"
                if part in parts:
                    parts[part][key] = entry
                elif part == "endpoints/":
                    raw.setdefault(key[skip:].split("/", 1)[0], {})[key] = entry
            self.parts, self.raw, self.sharded = parts, {}, {}
            diffs = [(network_id, {}, tree, tree.keys()) for network_id, tree in sorted(raw.items())]
        else:
            trees = store.get_trees([layout.root + part for part in MARKED], on_bad=bad,
                                    known={layout.root + part: self.parts.get(part) for part in MARKED})
            moved = _moved(layout, self.parts.get("changes/", {}), trees[layout.root + "changes/"])
            for network_id in _ids(self.parts.get("networks/", {})) - _ids(trees[layout.root + "networks/"]):
                moved[network_id] = ALL
            diffs = []
            for network_id, shards in sorted(moved.items()):
                before = self.raw.get(network_id, {})
                after, touched = _read_shards(store, layout, layout.endpoints(network_id), shards, before,
                                              self.sharded.get(network_id, {}), bad)
                diffs.append((network_id, before, after, touched))
            # Only now: a read that failed part-way leaves the view as it was, and the next read
            # sees the same marks move again.
            self.parts = {part: trees[layout.root + part] for part in MARKED}
        changes = {}
        for network_id, old, new, touched in diffs:
            if new:
                self.raw[network_id] = new
            else:
                self.raw.pop(network_id, None)
            index = self.sharded.setdefault(network_id, {})
            for key in touched:
                if old.get(key) is new.get(key):
                    continue
                if (key in old) != (key in new):
                    shard = index.setdefault(layout.shard_of(key), set())
                    if key in new:
                        shard.add(key)
                    else:
                        shard.discard(key)
                changes.setdefault(network_id, {})[key] = (old.get(key, (None, 0))[0], new.get(key, (None, 0))[0])
            if not new:
                del self.sharded[network_id]
        return changes


def _moved(layout, old, new):
    """{network id: {shard}} of the change marks whose ModifyIndex differs between two reads."""
    moved = {}
    skip = len(layout.root + "changes/")
    for key in old.keys() | new.keys():
        if old.get(key, (None, 0))[1] != new.get(key, (None, 0))[1]:
            network_id, _sep, shard = key[skip:].partition("/")
            if network_id and shard:
                moved.setdefault(network_id, set()).add(shard)
    return moved


def _ids(networks):
    return {value["id"] for value, _index in networks.values() if isinstance(value, dict) and isinstance(value.get("id"), str)}


def _read_shards(store, layout, prefix, shards, before, sharded, bad):
    """A network's endpoint keys read again where ``shards`` moved: (entries, the keys that may
    differ from ``before``). ``before``: {key: (value, index)} of the last read, kept as they are
    outside those shards; ``sharded``: {shard: {key}} of ``before``. Costs what the shards hold
    and the key listing, not a walk of every record."""
    if not before or shards is ALL or len(shards) > WHOLE:
        after = store.get_tree(prefix, on_bad=bad, known=before)
        return after, before.keys() | after.keys()
    listed = set(store.keys(prefix))
    wanted = listed - before.keys()  # names not seen before (or whose value could not be read)
    for shard in shards:
        wanted |= sharded.get(shard, set()) & listed
    gone = before.keys() - listed
    after = dict(before)
    for key in gone:
        del after[key]
    got = store.get_many(sorted(wanted), on_bad=bad, known=before) if wanted else {}
    for key in wanted:
        if key in got:
            after[key] = got[key]
        else:  # deleted since the listing, or unreadable
            after.pop(key, None)
    return after, wanted | gone
