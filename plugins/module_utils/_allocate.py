# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pick free VNIs and addresses (pure), and claim them with check-and-set so that concurrent runs
on many hosts never hand out the same one: a claim key is created only if it does not exist, and
a transaction that loses the race is retried with fresh data."""
from __future__ import annotations

import ipaddress
import random
import time

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

VNI_FIRST = 256
VNI_LAST = 16777215
ATTEMPTS = 60
RANDOM_AFTER = 3  # lost races before a writer stops taking the lowest free values


def free_vni(taken, first=VNI_FIRST, last=VNI_LAST):
    vni = first
    while vni in taken:
        vni += 1
    if vni > last:
        raise OverlayError("no free VNI left in %d..%d" % (first, last), "vni")
    return vni


def free_addresses(net, reserved, count, randomize=False, field="ip"):
    """``count`` free host addresses of ``net`` that are not in ``reserved``: the lowest ones,
    or a random choice (see ``spread``), so that racing writers stop picking the same ones.
    Addresses are walked lazily: memory does not grow with the size of the subnet."""
    if count == 0:
        return []
    net = ipaddress.ip_network(net)
    reserved = set(ipaddress.ip_address(str(r)) for r in reserved)
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    if net.prefixlen >= 31:
        first, last = int(net.network_address), int(net.broadcast_address)
    size = last - first + 1
    free = size - sum(1 for r in reserved if r in net and first <= int(r) <= last)
    if free < count:
        raise OverlayError("subnet %s has %d free addresses; %d are needed" % (net, max(free, 0), count), field)
    chosen = []
    if randomize and free > 4 * count:
        picked = set()
        while len(chosen) < count:
            ip = ipaddress.ip_address(first + random.randrange(size))
            if ip not in reserved and ip not in picked:
                picked.add(ip)
                chosen.append(ip)
        return sorted(chosen)
    start = first + (random.randrange(size) if randomize else 0)
    for offset in range(size):
        ip = ipaddress.ip_address(first + (start - first + offset) % size)
        if ip not in reserved:
            chosen.append(ip)
            if len(chosen) == count:
                return sorted(chosen)
    raise OverlayError("subnet %s has %d free addresses; %d are needed" % (net, len(chosen), count), field)


def spread(attempt):
    """Whether this attempt should pick randomly: the lowest free values are what users expect,
    and a writer that lost a race simply takes the next ones; only one that keeps losing
    (many writers at once) spreads out."""
    return attempt >= RANDOM_AFTER


def claim(store, read, build, what, settle=None):
    """Run ``build(state, attempt)`` -> (ops, result) against fresh ``read()`` state until ``store``
    commits the ops as one transaction. Returns (result, {key: ModifyIndex}).

    ``build`` raises OverlayError when the request itself is impossible (e.g. an explicit address
    already taken). A transaction whose checks fail lost a race and is retried with fresh data.
    When its answer was lost, ``settle(result)`` reads back what it wrote: the indexes if it
    committed (adopted), None if it did not (retried).
    """
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul
    for attempt in range(ATTEMPTS):
        state = read()
        ops, result = build(state, attempt)
        if not ops:
            return result, {}
        try:
            return result, store.commit(ops)
        except _consul.TxnConflict:
            pass  # someone claimed the same key between our read and our write
        except _consul.ConsulOutcomeUnknown:
            if settle is None:
                raise
            indexes = settle(result)
            if indexes is not None:
                return result, indexes
        time.sleep(random.uniform(0, 0.02 * min(attempt + 1, 10)))
    raise OverlayError("gave up claiming %s after %d attempts: too many concurrent writers" % (what, ATTEMPTS))
