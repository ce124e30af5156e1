"""Run one overlay.vxlan module in-process on a (simulated) host and time it; optionally profile it.

    <venv>/bin/python module_driver.py COLLECTIONS_PATH MODULE ARGS_JSON_FILE [--profile OUT.prof]

The module's own main() is called exactly as AnsiballZ would call it (arguments through
ansible.module_utils.basic._ANSIBLE_ARGS), minus SSH and the AnsiballZ zip. Prints one JSON
object: import and main() times (seconds; main() also as CPU time of this process), the process's peak
RSS (getrusage ru_maxrss), the module's rc and its JSON result.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import resource
import sys
import time

T_START = time.perf_counter()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("collections_path")
    ap.add_argument("module")
    ap.add_argument("args_file")
    ap.add_argument("--profile")
    a = ap.parse_args()
    sys.path.insert(0, a.collections_path)
    with open(a.args_file) as f:
        args = json.load(f)

    t0 = time.perf_counter()
    from ansible.module_utils import basic
    mod = importlib.import_module("ansible_collections.overlay.vxlan.plugins.modules." + a.module)
    # What the module imports is its import time; what a run imports later (pyroute2's IPRoute for a
    # call _rtnl does not serve, say) is part of main()'s time, as it is of a real run.
    t1 = time.perf_counter()

    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    if hasattr(basic, "_ANSIBLE_PROFILE"):   # ansible-core >= 2.19: how the arguments are serialized
        basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    prof = None
    if a.profile:
        import cProfile
        prof = cProfile.Profile()
    rc = 0
    k2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c2 = time.process_time()
    t2 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        try:
            if prof is not None:
                prof.runcall(mod.main)
            else:
                mod.main()
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    t3 = time.perf_counter()
    c3 = time.process_time()
    k3 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the helpers main() forked and waited for (iptables; nft where libnftables is missing):
    # not in process_time(), so reported next to it.
    children = (k3.ru_utime + k3.ru_stime) - (k2.ru_utime + k2.ru_stime)
    if prof is not None:
        prof.dump_stats(a.profile)
    try:
        result = json.loads(out.getvalue())
    except ValueError:
        result = {"raw": out.getvalue()[-4000:]}
    # Peak RSS of this process (imports, main() and its result): what the module costs a host in memory.
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"startup_to_main_s": t0 - T_START, "import_s": t1 - t0, "main_s": t3 - t2, "main_cpu_s": c3 - c2,
                      "main_children_cpu_s": children,
                      "maxrss_mib": maxrss_kib / 1024, "rc": rc, "result": result}))


if __name__ == "__main__":
    main()
