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
    ``field`` is the option an exhausted pool is reported against (ip, gateway_subnet)."""
    if count == 0:
        return []
    net = ipaddress.ip_network(net)
    reserved = set(ipaddress.ip_address(str(r)) for r in reserved)
    hosts = (ip for ip in net.hosts() if ip not in reserved)
    if not randomize:
        chosen = []
        for ip in hosts:
            chosen.append(ip)
            if len(chosen) == count:
                return chosen
        raise OverlayError("subnet %s has %d free addresses; %d are needed" % (net, len(chosen), count), field)
    pool = list(hosts)
    if len(pool) < count:
        raise OverlayError("subnet %s has %d free addresses; %d are needed" % (net, len(pool), count), field)
    return sorted(random.sample(pool, count))


def spread(attempt):
    """Whether this attempt should pick randomly: the lowest free values are what users expect,
    and a writer that lost a race simply takes the next ones; only one that keeps losing
    (many writers at once) spreads out."""
    return attempt >= RANDOM_AFTER


def claim(store, read, build, what):
    """Run ``build(state, attempt)`` -> (ops, result) against fresh ``read()`` state until ``store``
    commits the ops as one transaction.

    ``build`` returns (ops, result) or raises OverlayError when the request itself is impossible
    (e.g. an explicit address already taken). Returns ``result`` of the committed attempt.
    """
    for attempt in range(ATTEMPTS):
        state = read()
        ops, result = build(state, attempt)
        if not ops:
            return result
        failed = store.txn(ops)
        if failed is None:
            return result
        # Lost a race: someone claimed the same key between our read and our write.
        time.sleep(random.uniform(0, 0.02 * min(attempt + 1, 10)))
    raise OverlayError("gave up claiming %s after %d attempts: too many concurrent writers" % (what, ATTEMPTS))
