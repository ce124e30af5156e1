"""The Docker plugin's own cost per container, without dockerd: the agent's Plugin object driven
in-process on a simulated host (real Consul, real netlink), call by call, as dockerd calls it for a
``docker run``: RequestAddress, CreateEndpoint, Join, then dockerd's part (the handed-off end moved
into a fresh namespace). Prints the median milliseconds of each call per block of containers, so
growth with the number of endpoints on the host shows; ``--profile N`` prints a cProfile of the
CreateEndpoint of container N.

    .venv/bin/python benchmarks/micro_plugin.py [--count 200] [--block 50] [--profile 150]

Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBNET = "192.168.0.0/22"


def inner(args):
    """Runs inside the simulated host (nsenter), with the built collection on sys.path."""
    import cProfile
    import io
    import pstats

    from pyroute2 import IPRoute, netns

    from ansible_collections.overlay.vxlan.agent import docker

    params = {"host": args.host, "vtep": "eth0", "consul_host": "10.0.0.5", "consul_port": None,
              "consul_scheme": None, "consul_token": None, "consul_ca_cert": None, "consul_validate_certs": None,
              "consul_timeout": 3, "consul_prefix": "overlay", "gc_grace": 60}
    plugin = docker.Plugin(params, state_dir=args.state_dir, docker_host="unix:///nonexistent", gc=False)
    engine_run = docker._endpoint.run
    seen = {}

    def recording_run(*a, **kw):  # the engine's actions of the latest call, for --actions
        out = engine_run(*a, **kw)
        seen["actions"] = out.get("actions")
        return out

    docker._endpoint.run = recording_run

    def call(name, body):
        started = time.perf_counter()
        status, reply = plugin.call("/" + name, body)
        took = (time.perf_counter() - started) * 1000
        if status != 200 or reply.get("Err") or reply.get("Error"):
            raise SystemExit("%s: %s" % (name, reply))
        return reply, took

    network_id = "f" * 64
    pool = call("IpamDriver.RequestPool",
                {"AddressSpace": "overlay.vxlan", "Pool": SUBNET, "Options": {}, "V6": False})[0]
    call("NetworkDriver.CreateNetwork", {
        "NetworkID": network_id, "Options": {"com.docker.network.generic": {"name": "benchnet"}},
        "IPv4Data": [{"AddressSpace": "overlay.vxlan", "Pool": SUBNET, "Gateway": pool["Data"][
            "com.docker.network.gateway"]}], "IPv6Data": []})
    times = {"RequestAddress": [], "CreateEndpoint": [], "Join": [], "move": []}
    ipr = IPRoute()
    report = []
    for n in range(1, args.count + 1):
        endpoint_id = os.urandom(32).hex()  # Docker's EndpointIDs are random: ports are named by their start
        addr, t = call("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "", "Options": {}})
        times["RequestAddress"].append(t)
        body = {"NetworkID": network_id, "EndpointID": endpoint_id, "Options": {},
                "Interface": {"Address": addr["Address"], "AddressIPv6": "", "MacAddress": ""}}
        if n == args.profile:
            prof = cProfile.Profile()
            prof.enable()
        ep, t = call("NetworkDriver.CreateEndpoint", body)
        if n == args.profile:
            prof.disable()
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats("cumulative").print_stats(45)
            stats.print_callers(r"_consul.py.*\((get|get_tree|_read|values|keys|commit|get_trees)\)")  # who asks Consul
            stats.print_callers(r"_links.py.*\(find\)")  # and netlink, by name
            sys.stderr.write(out.getvalue())
        times["CreateEndpoint"].append(t)
        if n == args.profile:
            sys.stderr.write("actions of CreateEndpoint %d:\n  %s\n" % (n, "\n  ".join(seen["actions"])))
        join, t = call("NetworkDriver.Join", {"NetworkID": network_id, "EndpointID": endpoint_id,
                                              "SandboxKey": "/var/run/docker/netns/x", "Options": {}})
        times["Join"].append(t)
        started = time.perf_counter()
        name = "bc%d" % n
        netns.create(name)
        fd = os.open("/run/netns/" + name, os.O_RDONLY)
        index = ipr.link_lookup(ifname=join["InterfaceName"]["SrcName"])[0]
        ipr.link("set", index=index, net_ns_fd=fd)
        os.close(fd)
        times["move"].append((time.perf_counter() - started) * 1000)
        if n % args.block == 0:
            report.append({"endpoints": n, **{k: round(statistics.median(v[-args.block:]), 1)
                                              for k, v in times.items()}})
    print(json.dumps(report))


def outer(args):
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_docker import build_collection
    from lab import Lab

    with tempfile.TemporaryDirectory(prefix="ovx-microplugin-") as tmp:
        coll = build_collection(Path(tmp))
        with Lab(Path(tmp) / "lab", {"consul": "10.0.0.5", "docker0": "10.0.0.10"}, internet=False) as lab:
            host = lab.hosts["docker0"]
            argv = host.nsenter_cmd() + ["env", "PYTHONPATH=" + coll, str(lab.venv / "bin" / "python"),
                                         str(Path(__file__).resolve()), "--inner", "--host", "docker0",
                                         "--state-dir", str(Path(tmp) / "state"), "--count", str(args.count),
                                         "--block", str(args.block), "--profile", str(args.profile)]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
            sys.stderr.write(r.stderr)
            if r.returncode:
                print(r.stdout)
                return r.returncode
            rows = json.loads(r.stdout.strip().splitlines()[-1])
    print("median ms per call, by block of %d containers (one host, one network)" % args.block)
    print("%10s %15s %15s %8s %8s" % ("endpoints", "RequestAddress", "CreateEndpoint", "Join", "move"))
    for row in rows:
        print("%10d %15.1f %15.1f %8.1f %8.1f" % (row["endpoints"], row["RequestAddress"], row["CreateEndpoint"],
                                                  row["Join"], row["move"]))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--profile", type=int, default=0, help="profile the CreateEndpoint of container N")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    raise SystemExit(main())
