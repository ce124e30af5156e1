# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nftables rulesets, applied atomically inside a given network namespace.

nftables has no stable netlink API in pyroute2 0.9. Its own library, libnftables (what the ``nft``
command is a front end to, shipped with it), takes the same text in-process through ctypes: about
0.15 ms a call against 3 ms or more for a fork and exec of ``nft``, and a ``docker run`` or a module
run makes several. Where the library cannot be loaded, the ``nft`` command does the same work.

The namespace is entered on this thread (setns) around the call: the library opens its netlink
socket in the namespace of the thread that runs it, and a forked ``nft`` inherits it too.
Callers hold the host lock, so no two threads of a process are in here at once.
"""
from __future__ import annotations

import contextlib
import ctypes
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


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


_LIB = {}
OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON (nftables.h)


def _library():
    """libnftables through ctypes, or None where it cannot be loaded (then the ``nft`` command)."""
    if "lib" not in _LIB:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            _LIB["lib"] = None
            return None
        vp = ctypes.c_void_p
        for name, restype, argtypes in (
                ("nft_ctx_new", vp, [ctypes.c_uint32]), ("nft_ctx_free", None, [vp]),
                ("nft_ctx_buffer_output", ctypes.c_int, [vp]), ("nft_ctx_buffer_error", ctypes.c_int, [vp]),
                ("nft_ctx_get_output_buffer", ctypes.c_char_p, [vp]), ("nft_ctx_get_error_buffer", ctypes.c_char_p, [vp]),
                ("nft_ctx_output_get_flags", ctypes.c_uint, [vp]), ("nft_ctx_output_set_flags", None, [vp, ctypes.c_uint]),
                ("nft_run_cmd_from_buffer", ctypes.c_int, [vp, ctypes.c_char_p])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        _LIB["lib"] = lib
    return _LIB["lib"]


def _in_library(lib, text, json_output):
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise OverlayError("libnftables could not make a context (out of memory?)")
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if json_output:
            lib.nft_ctx_output_set_flags(ctx, lib.nft_ctx_output_get_flags(ctx) | OUTPUT_JSON)
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode("utf-8", "replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode("utf-8", "replace")
        return _Result(0 if rc == 0 else 1, out, err)
    finally:
        lib.nft_ctx_free(ctx)


def _execute(text, json_output):
    lib = _library()
    if lib is not None:
        return _in_library(lib, text, json_output)
    if json_output:  # `nft -j -f -` reads JSON and prints nothing: a list command goes on the command line
        return subprocess.run([binary(), "-j"] + text.split(), capture_output=True, text=True, check=False)
    return subprocess.run([binary(), "-f", "-"], input=text, capture_output=True, text=True, check=False)


def _run(ns, text, json_output=False):
    """``text`` (nft's syntax: a script, or with ``json_output`` one list command, its output as
    JSON) in namespace ``ns`` (None: the host)."""
    from ansible_collections.overlay.vxlan.plugins.module_utils import _netns
    if ns is None or ns.is_host:
        return _execute(text, json_output)
    return _netns._in_namespace(ns.path, lambda: _execute(text, json_output))


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
    r = _run(ns, script)
    if r.returncode != 0:
        raise OverlayError("nftables refused %s in %s: %s" % (
            what, "the host namespace" if ns is None or ns.is_host else ns.describe(), r.stderr.strip()))


def ruleset(ns, family=None, table=None):
    """The ruleset (or one table) as nft's JSON list of objects; [] when the table does not exist."""
    key = (None if ns is None else ns.path, family, table)
    if _READS["depth"] and table and key in _READS["tables"]:
        return _READS["tables"][key]
    r = _run(ns, "list table %s %s\n" % (family, table) if table else "list ruleset\n", json_output=True)
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
