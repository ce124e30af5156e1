"""Micro-benchmarks behind the suggestions in benchmarks/README.md (pyroute2 costs the modules pay).

    .venv/bin/python benchmarks/micro_netlink.py      (bench_overlay.py runs it inside a lab host)

Everything happens in network namespaces this script creates (named bq<pid>-*) and removes at the
end; no packet is sent. Prints JSON and a short table:

1. opening a netlink socket in another namespace: pyroute2's IPRoute(netns=path, flags=0) (it forks a
   child that enters the namespace and passes the socket back) vs entering the namespace in-process
   with setns(2), creating IPRoute() and going back (safe in a single-threaded module);
2. ipr.brport("show", index=i) (what _gateway.isolate_port calls per endpoint) against the number of
   ports on the bridge: pyroute2 dumps every link and filters in Python, so it grows with the host;
3. ipr.link("get", ifname=...) (what _links.find calls ~19 times per endpoint);
4. the transport (with the collection's path as argument: bench_overlay.py passes it): CPU time per
   call of pyroute2's IPRoute and of the collection's own socket (module_utils/_rtnl.py: the same
   messages, no asyncio, answers decoded on demand) for a link get by name, a link set, a dump of the
   links of a namespace with 2 links and of one with 401, and an address dump.
"""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
PREFIX = f"bq{os.getpid()}-"


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def setns_iproute(path):
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            ipr = IPRoute()
            ipr.link("get", ifname="lo")   # make sure the socket exists before going back
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(fd)
        os.close(own)
    return ipr


def timed(fn, n):
    out = []
    for _run in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def cpu_per_call(fn, n):
    """Median over 5 rounds of the CPU time of n calls, per call."""
    out = []
    for _round in range(5):
        t = time.process_time()
        for _call in range(n):
            fn()
        out.append((time.process_time() - t) / n)
    return statistics.median(out)


def transport(small, big):
    """4. IPRoute against _rtnl.Socket in the same namespaces (``small``: 2 links; ``big``: 401)."""
    from ansible_collections.overlay.vxlan.plugins.module_utils import _netns
    res = {}
    for label, opener in (("pyroute2 IPRoute", lambda p: _netns._in_namespace(p, IPRoute)),
                          ("_rtnl.Socket", _netns._open)):
        s, b = opener(small), opener(big)
        idx = b.link("get", ifname="p0")[0]["index"]
        mtu = b.link("get", index=idx)[0].get("IFLA_MTU")
        calls = {
            "link get by name": (lambda: b.link("get", ifname="p0")[0].get("IFLA_MTU"), 200),
            "link set mtu": (lambda: b.link("set", index=idx, mtu=mtu), 200),
            "dump 2 links": (lambda: [m.get("IFLA_IFNAME") for m in s.get_links()], 200),
            "dump 401 links": (lambda: [m.get("IFLA_IFNAME") for m in b.get_links()], 5),
            "address dump": (lambda: [m.get("IFA_LOCAL") for m in s.get_addr()], 200),
        }
        for name, (fn, n) in calls.items():
            res.setdefault(name, {})[label] = round(cpu_per_call(fn, n) * 1000, 3)
        s.close()
        b.close()
    return res


def main():
    if os.geteuid() != 0:
        sys.exit("needs root")
    names = []
    res = {}
    try:
        # 1. sockets in 20 namespaces, each marked with a bridge named after it
        for i in range(20):
            n = f"{PREFIX}{i}"
            sh("ip", "netns", "add", n)
            names.append(n)
            sh("ip", "-n", n, "link", "add", f"mark{i}", "type", "bridge")
        paths = [f"/run/netns/{n}" for n in names[:20]]
        for label, opener in (("fork (IPRoute(netns=..., flags=0))", lambda p: IPRoute(netns=p, flags=0)),
                              ("in-process setns + IPRoute()", setns_iproute)):
            times, socks = [], []
            for i, p in enumerate(paths):
                t = time.perf_counter()
                ipr = opener(p)
                times.append(time.perf_counter() - t)
                assert ipr.link("get", ifname=f"mark{i}"), "socket in the wrong namespace"
                socks.append(ipr)
            for s in socks:
                s.close()
            res.setdefault("open_socket_ms", {})[label] = round(statistics.median(times) * 1000, 2)

        # 2. brport show vs ports on a bridge; 3. link get
        n = f"{PREFIX}br"
        sh("ip", "netns", "add", n)
        names.append(n)
        sh("ip", "-n", n, "link", "add", "qbr", "type", "bridge")
        ipr = IPRoute(netns=f"/run/netns/{n}", flags=0)
        have = 0
        res["brport_show_ms"], res["link_get_ms"] = {}, {}
        for ports in (10, 50, 200):
            batch = "".join(f"link add p{k} type veth peer name q{k}\nlink set p{k} master qbr\n"
                            for k in range(have, ports))
            subprocess.run(["ip", "-n", n, "-batch", "-"], input=batch, check=True, capture_output=True, text=True)
            have = ports
            idx = ipr.link("get", ifname="p0")[0]["index"]
            res["brport_show_ms"][ports] = round(timed(lambda: ipr.brport("show", index=idx), 10) * 1000, 2)
            res["link_get_ms"][ports] = round(timed(lambda: ipr.link("get", ifname="p0"), 20) * 1000, 2)
        ipr.close()
        if len(sys.argv) > 1:
            sys.path.insert(0, sys.argv[1])
            res["transport_cpu_ms"] = transport(paths[0], f"/run/netns/{n}")
    finally:
        for n in reversed(names):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
