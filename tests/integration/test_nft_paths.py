"""_nft's two ways to nftables, on the real kernel in a throwaway namespace: libnftables in-process
(ctypes), and the ``nft`` command where the library cannot be loaded. Both must apply a script as one
transaction, list a table as nft's JSON ([] when it does not exist) and report a refused script with
what failed and nft's reason, without changing anything."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("way", ["library", "command"])
def test_apply_list_and_refuse_the_same_way(netns, collection_path, way):
    name = netns("nft")
    code = r'''
import json, sys
from ansible_collections.overlay.vxlan.plugins.module_utils import _nft, _netns
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError
if sys.argv[2] == "command":
    _nft._LIB["lib"] = None
else:
    assert _nft._library() is not None, "libnftables.so.1 did not load"
ns = _netns.resolve(sys.argv[1], "name")
_nft.apply(ns, "table bridge t {}\ndelete table bridge t\ntable bridge t {\n"
               "  set s { type ifname . ether_addr . ipv4_addr; }\n}\n", "the table")
_nft.apply(ns, 'add element bridge t s { "ve-1" . 02:42:0a:00:00:01 . 10.0.0.1 }\n', "an element")
listed = _nft.ruleset(ns, "bridge", "t")
try:
    _nft.apply(ns, 'add element bridge t s { "ve-2" . 02:42:0a:00:00:02 . 10.0.0.2 }\n'
                   'add element bridge nope s { "ve-3" . 02:42:0a:00:00:03 . 10.0.0.3 }\n', "the bad batch")
    refused = None
except OverlayError as e:
    refused = e.message
after = _nft.ruleset(ns, "bridge", "t")
print(json.dumps({"listed": listed, "missing": _nft.ruleset(ns, "bridge", "nope"), "refused": refused,
                  "after": after}))
'''
    r = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", code, name, way], capture_output=True,
                       text=True, env={"PYTHONPATH": collection_path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                       check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    sets = [o["set"] for o in out["listed"] if "set" in o]
    assert [s["name"] for s in sets] == ["s"] and sets[0]["elem"] == [{"concat": ["ve-1", "02:42:0a:00:00:01",
                                                                                  "10.0.0.1"]}], sets
    assert out["missing"] == []
    assert out["refused"] and "the bad batch" in out["refused"] and "No such file or directory" in out["refused"]
    # all or nothing: ve-2 of the refused batch is not there
    assert [o["set"]["elem"] for o in out["after"] if "set" in o] == [sets[0]["elem"]]
