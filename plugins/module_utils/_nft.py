# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nftables rulesets, applied atomically with ``nft -f -`` inside a given network namespace.

nftables has no stable netlink API in pyroute2 0.9, so this is one of the two places that run a
command (iptables for the gateway's NAT is the other). The namespace is entered in-process
(setns on this thread, then fork): a child inherits the namespace of the thread that forks it,
so no ``ip netns exec`` is needed. Modules and the peers service are single-threaded around it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft")


def binary():
    for path in NFT_PATHS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nft")
    if found:
        return found
    raise OverlayError("nft (the nftables package) is required on the target host for the overlay's "
                       "firewall rules; install it (the overlay_host role does)")


def _run(ns, argv, stdin=None):
    from ansible_collections.overlay.vxlan.plugins.module_utils import _netns
    if ns is None or ns.is_host:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    fd = os.open(ns.path, os.O_RDONLY)
    try:
        _netns._pyroute2_netns.pushns(fd)
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        finally:
            _netns._pyroute2_netns.popns()
    finally:
        os.close(fd)


# Tables read inside reads_once(), by (namespace path, family, table); emptied by every apply.
_READS = {"depth": 0, "tables": {}}


@contextlib.contextmanager
def reads_once():
    """Within this block each table is listed once until something is applied: a module run
    checks the VXLAN table three times (guard, gateway, VTEP sync), and a run with nothing to
    change needs one ``nft -j list`` per table. Only for one run under the host lock: a
    long-lived process must read again on its next pass."""
    _READS["depth"] += 1
    try:
        yield
    finally:
        _READS["depth"] -= 1
        if not _READS["depth"]:
            _READS["tables"].clear()


def apply(ns, script, what):
    """Load ``script`` (nft syntax) as one transaction in ``ns`` (None: the host). All or nothing:
    a script the kernel refuses changes nothing, and the error says ``what`` failed and why."""
    _READS["tables"].clear()
    r = _run(ns, [binary(), "-f", "-"], stdin=script)
    if r.returncode != 0:
        raise OverlayError("nftables refused %s in %s: %s" % (
            what, "the host namespace" if ns is None or ns.is_host else ns.describe(), r.stderr.strip()))


def ruleset(ns, family=None, table=None):
    """The ruleset (or one table) as nft's JSON list of objects; [] when the table does not exist."""
    key = (None if ns is None else ns.path, family, table)
    if _READS["depth"] and table and key in _READS["tables"]:
        return _READS["tables"][key]
    argv = [binary(), "-j", "list"] + (["table", family, table] if table else ["ruleset"])
    r = _run(ns, argv)
    if r.returncode != 0:
        if table and "No such file or directory" in r.stderr:
            objects = []
        else:
            raise OverlayError("nft could not list the ruleset: %s" % r.stderr.strip())
    else:
        objects = json.loads(r.stdout or "{}").get("nftables", [])
    if _READS["depth"] and table:
        _READS["tables"][key] = objects
    return objects
