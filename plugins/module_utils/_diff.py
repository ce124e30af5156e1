# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Before/after bookkeeping for diff mode, in the manner of community.docker's DifferenceTracker."""
from __future__ import annotations


class DifferenceTracker:
    def __init__(self):
        self._items = []

    def add(self, name, before, after):
        """Record one item; only items whose values differ count as changes."""
        self._items.append((name, before, after))

    def record(self, name, before, after, apply=None):
        """Record ``name`` and, when it differs and ``apply`` is given, call it. Returns True if it differed."""
        self.add(name, before, after)
        if before != after:
            if apply is not None:
                apply()
            return True
        return False

    @property
    def has_changes(self):
        return any(before != after for name, before, after in self._items)

    def changes(self):
        return [name for name, before, after in self._items if before != after]

    def diff(self):
        before = {}
        after = {}
        for name, b, a in self._items:
            if b != a:
                before[name] = b
                after[name] = a
        return {"before": before, "after": after}
