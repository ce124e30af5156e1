"""Peer sync at scale (issue 9): how the agent's peers service follows one change in a big network.

    benchmarks/run.sh --only peers        (or: PYTHONPATH=tests/integration .venv/bin/python benchmarks/bench_peers.py)

10 simulated hosts (h0..h9, network+mount+uts namespaces with sshd) and a real Consul; ONE network
on all of them; the agent's peers service (``python -m ansible_collections.overlay.vxlan.agent``) on
the 9 receiving hosts h1..h9. Endpoints are real: ``overlay_endpoint``'s main() run in-process on
each host (benchmarks/module_driver.py), veths in pre-created namespaces. Two sizes: 10 endpoints
per host (100 in the network), then 100 per host (1000). At each size, endpoint X is attached on h0
and detached again CHANGES times, and for each:

- latency: from the instant Consul holds X's record (a blocking query of this process on the key
  wakes) to the instant each of the 9 receivers' vxlan0 has X's FDB entry (netlink notifications,
  RTMGRP_NEIGH, read by this process from a socket in each overlay namespace); the detach likewise
  from the record's deletion to the entry's removal;
- CPU: utime+stime of each agent process and of the helpers it forked and waited for (/proc/PID/stat) from before the module run to after
  every agent went back to waiting, summed over the 9 and divided by 9 (per agent per change);
- Consul's load: the dev agent logs every HTTP request it answers ("Request finished ... from=");
  requests from the 9 receivers' addresses in the window, divided by the changes; the health probes
  (/v1/status/leader, once a second per agent while it waits) are counted apart, per second.

Then the agents' memory (VmHWM, VmRSS from /proc/PID/status) after the 1000, and VmRSS after each
of CHURN rounds of attaching and detaching CHURN_SIZE endpoints on h0.
A benchmark, not a test: nothing is asserted about the figures.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import re
import select
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

from lab import Lab  # tests/integration/lab
from lab.nsutil import socket_in_netns

PEER_HOSTS = {"consul": "10.0.0.5", **{"h%d" % i: "10.0.0.%d" % (10 + i) for i in range(10)}}
SOURCE = "h0"
RECEIVERS = ["h%d" % i for i in range(1, 10)]
NET = {"name": "scale", "subnet": "10.96.0.0/20"}
SIZES = (10, 100)                   # endpoints per host
CHANGES = 8                         # attach + detach of X per size
CHURN, CHURN_SIZE = 4, 20
IDLE_S = 6.0                        # seconds of no change: the services' idle CPU rate
MICRO_HOST = "h9"                   # micro_peers.py runs there (its service stopped meanwhile)
X_IP = "10.96.15.200"
Y_IP = "10.96.15.201"
DIRECT = 40                         # record changes written straight into Consul, per size
AGENT_WAIT = 600                    # the agents' --wait: no periodic full resync inside a measurement
CLK_TCK = os.sysconf("SC_CLK_TCK")
RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
AF_BRIDGE = 7
NDA_DST, NDA_LLADDR = 1, 2
REQUEST = re.compile(r"^\s*(\S+) \[DEBUG\] agent\.http: Request finished: method=(\S+) url=(\S+) from=([\d.]+):")


def log(msg):
    from bench_overlay import log as _log
    _log(msg)


def mac_for(ip):
    return "02:42:" + ":".join("%02x" % int(b) for b in ip.split("."))


# ------------------------------------------------------------------------------ observation

def proc_cpu(pid):
    """utime + stime of a process (its threads, live and gone) and of the children it waited for
    (forked helpers such as iptables, or nft where libnftables is missing), seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def proc_mem(pid):
    """{VmRSS, VmHWM} in MiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


class FdbWatch:
    """Netlink FDB notifications of vxlan0 in the overlay namespace of each receiver: when each saw
    ``mac`` with a remote dst (RTM_NEWNEIGH) or lost it (RTM_DELNEIGH)."""

    def __init__(self, paths):
        self.socks = {}
        for host, path in paths.items():
            s = socket_in_netns(path, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind((0, RTMGRP_NEIGH))
            s.setblocking(False)
            self.socks[s] = host

    def drain(self):
        for s in self.socks:
            try:
                while s.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

    @staticmethod
    def _events(data):
        """(type, lladdr, has_dst) of each AF_BRIDGE neighbour message in a netlink datagram."""
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if kind in (RTM_NEWNEIGH, RTM_DELNEIGH) and data[off + 16] == AF_BRIDGE:
                attrs, lladdr, dst = off + 16 + 12, None, False
                while attrs + 4 <= off + length:
                    alen, atype = struct.unpack_from("=HH", data, attrs)
                    if alen < 4:
                        break
                    if atype == NDA_LLADDR:
                        lladdr = data[attrs + 4:attrs + alen]
                    elif atype == NDA_DST:
                        dst = True
                    attrs += (alen + 3) & ~3
                yield kind, lladdr, dst
            off += (length + 3) & ~3

    def wait(self, mac, kind, timeout=20.0):
        """{host: monotonic time} at which each receiver's vxlan0 got (or lost) mac's dst entry."""
        want = bytes(int(x, 16) for x in mac.split(":"))
        seen = {}
        deadline = time.monotonic() + timeout
        while len(seen) < len(self.socks) and time.monotonic() < deadline:
            ready, _w, _x = select.select(list(self.socks), [], [], 0.2)
            now = time.monotonic()
            for s in ready:
                try:
                    while True:
                        data = s.recv(1 << 20)
                        for k, lladdr, dst in self._events(data):
                            if k == kind and lladdr == want and dst:
                                seen.setdefault(self.socks[s], now)
                except BlockingIOError:
                    pass
        return seen

    def close(self):
        for s in self.socks:
            s.close()


class KeyWatch(threading.Thread):
    """A blocking query (this process, through the lab's forwarder) on one key: the monotonic time
    at which Consul holds a value (``present``) or none for it."""

    def __init__(self, lab, key, present):
        super().__init__(daemon=True)
        self.client = lab.consul_client()
        self.key, self.present = key, present
        self.index, value = self.client.kv.get(key)
        self.at = time.monotonic() if (value is not None) == present else None
        self.start()

    def run(self):
        index = self.index
        while self.at is None:
            index, value = self.client.kv.get(self.key, index=index, wait="60s")
            if (value is not None) == self.present:
                self.at = time.monotonic()


def consul_requests(log_path, since, until, sources):
    """Requests Consul's dev agent logged as finished between two time.time() instants, by source ip:
    {"kv": {url-shape: n}, "leader": n} over ``sources``."""
    kv, leader, total = {}, 0, 0
    with open(log_path, errors="replace") as f:
        for line in f:
            m = REQUEST.match(line)
            if not m or m.group(4) not in sources:
                continue
            stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            if not since <= stamp <= until:
                continue
            url = m.group(3)
            if url.startswith("/v1/status/leader"):
                leader += 1
                continue
            total += 1
            shape = re.sub(r"index=\d+", "index=N", re.sub(r"wait=\d+ms", "wait=W", url))
            shape = re.sub(r"/v1/kv/overlay/v1/(\w[\w-]*)/[^?]*", r"/v1/kv/overlay/v1/\1/...", shape)
            kv[shape] = kv.get(shape, 0) + 1
    return {"total": total, "by_url": kv, "leader": leader}


# ------------------------------------------------------------------------------ the benchmark

class PeersBench:
    def __init__(self, lab, bench):
        self.lab, self.bench = lab, bench
        self.agents = {}
        self.net_id = None
        self.consul_log = lab.workdir / "logs" / ("%s.consul.log" % lab.consul_host)
        self.sources = {PEER_HOSTS[h] for h in RECEIVERS}

    def args(self, host, **kw):
        return dict(self.bench.common_args(host), **kw)

    def start_agents(self):
        py = str(self.lab.venv / "bin" / "python")
        for name in RECEIVERS:
            h = self.lab.hosts[name]
            self.agents[name] = self.lab._spawn("peers", name, h.nsenter_cmd() + [
                "env", "PYTHONPATH=" + self.bench.collections_path, py, "-m", "ansible_collections.overlay.vxlan.agent",
                "--host", name, "--vtep", "eth0", "--consul-host", PEER_HOSTS["consul"], "--wait", str(AGENT_WAIT)])

    def cpu(self):
        return {n: proc_cpu(p.pid) for n, p in self.agents.items()}

    def settle(self, quiet=0.4, timeout=60.0):
        """Until no agent used CPU for ``quiet`` seconds (all back in their blocking query)."""
        deadline = time.monotonic() + timeout
        last = self.cpu()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu()
            if now == last:
                return now
            last = now
        return last

    def remote_entries(self, host):
        ns = "ovl-" + self.net_id[:12]
        out = self.lab.hosts[host].run(["ip", "netns", "exec", ns, "bridge", "fdb", "show", "dev", "vxlan0"]).stdout
        return sum(1 for line in out.splitlines() if " dst " in line)

    def populate(self, per_host, start):
        """Endpoints start..per_host-1 on every host (real veths), then wait for the agents."""
        for host in [SOURCE] + RECEIVERS:
            names = ["%s-%d" % (host, i) for i in range(start, per_host)]
            self.lab.hosts[host].run("for n in %s; do ip netns add $n && ip -n $n link set lo up; done" % " ".join(names),
                                     timeout=300)
            eps = [{"name": n, "namespace": n} for n in names]
            self.bench.module_direct(host, "overlay_endpoint", self.args(host, network=NET["name"], endpoints=eps))
        expect = 10 * per_host - per_host
        deadline = time.monotonic() + 120
        for host in RECEIVERS:
            while self.remote_entries(host) != expect:
                if time.monotonic() > deadline:
                    raise RuntimeError("%s: vxlan0 has %d remote entries, not %d" % (host, self.remote_entries(host), expect))
                time.sleep(0.2)
        self.settle()

    def changes(self, per_host):
        ns = "ovl-" + self.net_id[:12]
        paths = {h: self.lab.hosts[h].netns_path(ns) for h in RECEIVERS}
        watch = FdbWatch(paths)
        key = "overlay/v1/endpoints/%s/X" % self.net_id
        mac = mac_for(X_IP)
        if "x" not in self.lab.hosts[SOURCE].list_netns():
            self.lab.hosts[SOURCE].add_netns("x")
        runs = []
        # The services' CPU while nothing changes (their health probe of Consul, once a second while
        # they wait): subtracted from each change's window.
        c0, t0 = self.settle(), time.monotonic()
        time.sleep(IDLE_S)
        c1, t1 = self.cpu(), time.monotonic()
        idle_rate = sum(c1[h] - c0[h] for h in RECEIVERS) / len(RECEIVERS) / (t1 - t0)
        try:
            for i in range(CHANGES):
                for op in ("attach", "detach"):
                    cpu0 = self.settle()
                    watch.drain()
                    kw = KeyWatch(self.lab, key, present=(op == "attach"))
                    w0 = time.time()
                    args = self.args(SOURCE, network=NET["name"], name="X")
                    if op == "attach":
                        args.update(namespace="x", ip=X_IP)
                    else:
                        args.update(state="absent")
                    box = {}
                    listener = threading.Thread(target=lambda: box.update(
                        seen=watch.wait(mac, RTM_NEWNEIGH if op == "attach" else RTM_DELNEIGH, timeout=60)))
                    listener.start()  # timestamps each notification as it comes, while the module runs
                    t0 = time.monotonic()
                    direct = self.bench.module_direct(SOURCE, "overlay_endpoint", args)
                    listener.join()
                    seen = box.get("seen", {})
                    kw.join(30)
                    cpu1 = self.settle()
                    w1 = time.time()
                    if len(seen) < len(RECEIVERS) or kw.at is None:
                        raise RuntimeError("%s %d: only %s saw it (record at %s)" % (op, i, sorted(seen), kw.at))
                    lat = sorted(t - kw.at for t in seen.values())
                    runs.append({"op": op, "latency_all_s": lat[-1], "latency_first_s": lat[0],
                                 "latency_median_s": statistics.median(lat),
                                 "module_to_record_s": kw.at - t0, "module_main_s": direct["main_s"],
                                 "agent_cpu_s": {h: cpu1[h] - cpu0[h] for h in RECEIVERS},
                                 "window": (w0, w1)})
        finally:
            watch.close()
        out = {"endpoints_in_network": 10 * per_host, "changes": len(runs), "agent_idle_cpu_s_per_s": idle_rate}
        for op in ("attach", "detach"):
            rs = [r for r in runs if r["op"] == op]
            raw = [sum(r["agent_cpu_s"].values()) / len(RECEIVERS) for r in rs]
            cpu = [c - idle_rate * (r["window"][1] - r["window"][0]) for c, r in zip(raw, rs)]
            reqs = [consul_requests(self.consul_log, r["window"][0], r["window"][1] + 0.5, self.sources) for r in rs]
            out[op] = {
                "latency_all_9_s_median": statistics.median(r["latency_all_s"] for r in rs),
                "latency_all_9_s_best": min(r["latency_all_s"] for r in rs),
                "latency_first_s_median": statistics.median(r["latency_first_s"] for r in rs),
                "latency_median_host_s_median": statistics.median(r["latency_median_s"] for r in rs),
                "module_start_to_record_s_median": statistics.median(r["module_to_record_s"] for r in rs),
                "agent_cpu_per_change_s_mean": statistics.mean(cpu),
                "agent_cpu_per_change_s_runs": cpu,
                "agent_cpu_per_change_s_raw_mean": statistics.mean(raw),
                "consul_requests_per_change_all_hosts": statistics.mean(q["total"] for q in reqs),
                "consul_requests_by_url": _merge([q["by_url"] for q in reqs], len(reqs)),
                "runs": [{k: v for k, v in r.items() if k != "window"} for r in rs],
            }
        w0, w1 = runs[0]["window"][0], runs[-1]["window"][1]
        leader = consul_requests(self.consul_log, w0, w1, self.sources)["leader"]
        out["health_probes_per_s_all_hosts"] = leader / (w1 - w0)
        out["direct"] = self.direct_changes(idle_rate)
        out["agent_mem_mib"] = {h: proc_mem(p.pid) for h, p in self.agents.items()}
        return out

    def direct_changes(self, idle_rate):
        """DIRECT changes written by this process (Y's record on h0's VTEP, put then deleted), each
        waited for on the 9 receivers (netlink), back to back: the services' CPU per change with
        short windows (the module runs above make long ones, where the idle rate weighs)."""
        ns = "ovl-" + self.net_id[:12]
        watch = FdbWatch({h: self.lab.hosts[h].netns_path(ns) for h in RECEIVERS})
        client = self.lab.consul_client()
        key = "overlay/v1/endpoints/%s/Y" % self.net_id
        record = {"schema": 1, "id": "e" * 64, "name": "Y", "network_id": self.net_id, "network": NET["name"],
                  "ip": Y_IP, "prefixlen": 20, "mac": mac_for(Y_IP), "host": SOURCE, "vtep": PEER_HOSTS[SOURCE],
                  "ifname": "eth0", "gateway_ip": None, "namespace": "y"}
        latencies = []
        consul_pid = self.lab._consul_proc().pid
        try:
            c0, t0, w0 = self.settle(), time.monotonic(), time.time()
            k0 = proc_cpu(consul_pid)
            for i in range(DIRECT):
                watch.drain()
                t = time.monotonic()
                op = {"Verb": "set", "Key": key, "Value": base64.b64encode(json.dumps(record).encode()).decode()} \
                    if i % 2 == 0 else {"Verb": "delete", "Key": key}
                client.txn.put([{"KV": op}] + self.change_marks(op))  # as the collection's writers do
                seen = watch.wait(record["mac"], RTM_NEWNEIGH if i % 2 == 0 else RTM_DELNEIGH)
                if len(seen) < len(RECEIVERS):
                    raise RuntimeError("direct change %d: only %s saw it" % (i, sorted(seen)))
                latencies.append(max(seen.values()) - t)
            c1 = self.settle()
            t1, w1 = time.monotonic(), time.time()
            k1 = proc_cpu(consul_pid)
        finally:
            watch.close()
            client.kv.delete(key)
        total = sum(c1[h] - c0[h] for h in RECEIVERS) / len(RECEIVERS)
        reqs = consul_requests(self.consul_log, w0, w1, self.sources)
        return {"changes": DIRECT, "agent_cpu_per_change_s": (total - idle_rate * (t1 - t0)) / DIRECT,
                "agent_cpu_per_change_s_raw": total / DIRECT, "window_s": t1 - t0,
                "latency_all_9_s_median": statistics.median(latencies),
                "consul_requests_per_change_all_hosts": reqs["total"] / DIRECT,
                "consul_cpu_per_change_s": (k1 - k0) / DIRECT}

    def change_marks(self, op):
        """The change-mark ops the collection under test adds to a transaction writing ``op``
        (none for a collection older than the marks)."""
        import sys
        if self.bench.collections_path not in sys.path:
            sys.path.insert(0, self.bench.collections_path)
        from ansible_collections.overlay.vxlan.plugins.module_utils import _keys
        layout = _keys.Layout("overlay")
        return layout.change_marks([{"KV": op}]) if hasattr(layout, "change_marks") else []

    def micro(self, endpoints):
        """micro_peers.py on MICRO_HOST in-process (its service stopped, then started again)."""
        from bench_overlay import BENCH, PY, RESULTS
        self.lab._stop_procs([self.agents.pop(MICRO_HOST)])
        prof = RESULTS / ("peers-change-%d.prof" % endpoints)
        try:
            r = self.lab.hosts[MICRO_HOST].run([str(PY), str(BENCH / "micro_peers.py"), self.bench.collections_path,
                                                "--host", MICRO_HOST, "--consul-host", PEER_HOSTS["consul"],
                                                "--network-id", self.net_id, "--profile", str(prof)], timeout=300)
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except Exception as e:  # e.g. an older agent without sync_pass (--collections-path of another commit)
            log("   micro_peers on %s failed: %s" % (MICRO_HOST, str(e)[-300:]))
            return None
        finally:
            h = self.lab.hosts[MICRO_HOST]
            self.agents[MICRO_HOST] = self.lab._spawn("peers", MICRO_HOST, h.nsenter_cmd() + [
                "env", "PYTHONPATH=" + self.bench.collections_path, str(self.lab.venv / "bin" / "python"), "-m",
                "ansible_collections.overlay.vxlan.agent", "--host", MICRO_HOST, "--vtep", "eth0",
                "--consul-host", PEER_HOSTS["consul"], "--wait", str(AGENT_WAIT)])
            time.sleep(1.0)
            self.settle()
        log("   micro_peers on %s: change pass %.1f ms CPU (read %.1f ms), full pass %.0f ms, blocking query request "
            "%.1f ms, health probe %.1f ms" % (MICRO_HOST, out["change_pass_cpu_s"] * 1000, out["read_cpu_s"] * 1000,
                                               out["full_pass_cpu_s"] * 1000, out["wait_request_cpu_s"] * 1000,
                                               out["health_probe_cpu_s"] * 1000))
        out["profile_file"] = prof.name
        return out

    def churn(self):
        rounds = []
        names = ["churn%d" % i for i in range(CHURN_SIZE)]
        self.lab.hosts[SOURCE].run("for n in %s; do ip netns add $n && ip -n $n link set lo up; done" % " ".join(names))
        eps = [{"name": n.upper(), "namespace": n} for n in names]
        for i in range(CHURN):
            for state in ("present", "absent"):
                self.bench.module_direct(SOURCE, "overlay_endpoint",
                                         self.args(SOURCE, network=NET["name"], endpoints=eps, state=state))
                time.sleep(0.5)
                self.settle()
            mem = {h: proc_mem(p.pid) for h, p in self.agents.items()}
            rounds.append({"rss_mib_median": statistics.median(m["VmRSS"] for m in mem.values()),
                           "rss_mib_max": max(m["VmRSS"] for m in mem.values()),
                           "hwm_mib_max": max(m["VmHWM"] for m in mem.values())})
            log("   churn round %d: agents' RSS median %.1f MiB, max %.1f"
                % (i + 1, rounds[-1]["rss_mib_median"], rounds[-1]["rss_mib_max"]))
        return rounds

    def run(self):
        res = {"hosts": 10, "receivers": len(RECEIVERS), "network": NET, "changes_per_size": CHANGES,
               "agent_wait_s": AGENT_WAIT}
        for host in [SOURCE] + RECEIVERS:
            self.bench.module_direct(host, "overlay_network", self.args(host, **NET))
        self.net_id = _net_id(self.lab, NET["name"])
        self.start_agents()
        time.sleep(1.0)
        self.settle()
        res["agent_mem_idle_mib"] = {h: proc_mem(p.pid) for h, p in self.agents.items()}
        start = 0
        res["sizes"] = []
        for per_host in SIZES:
            log("   peers: %d endpoints per host on 10 hosts (%d in the network)" % (per_host, 10 * per_host))
            t0 = time.monotonic()
            self.populate(per_host, start)
            setup = time.monotonic() - t0
            start = per_host
            log("   peers: %d endpoints ready in %.1fs; %d attach/detach of X on %s" % (
                10 * per_host, setup, CHANGES, SOURCE))
            size = self.changes(per_host)
            size["setup_s"] = setup
            size["micro"] = self.micro(10 * per_host)
            res["sizes"].append(size)
            a = size["attach"]
            log("   peers @%d: FDB on all 9 after %.3fs (median), agent CPU %.1f ms/attach, %.1f ms/record change, "
                "%.1f Consul requests/change" % (10 * per_host, a["latency_all_9_s_median"], a["agent_cpu_per_change_s_mean"] * 1000,
                                                 size["direct"]["agent_cpu_per_change_s"] * 1000,
                                                 a["consul_requests_per_change_all_hosts"]))
        mem = {h: proc_mem(p.pid) for h, p in self.agents.items()}
        res["agent_mem_after_1000_mib"] = {"rss_median": statistics.median(m["VmRSS"] for m in mem.values()),
                                           "hwm_max": max(m["VmHWM"] for m in mem.values()),
                                           "by_host": mem}
        log("   peers: churn, %d rounds of attach+detach of %d endpoints on %s" % (CHURN, CHURN_SIZE, SOURCE))
        res["churn"] = self.churn()
        small, big = res["sizes"][0], res["sizes"][-1]
        res["cpu_ratio_1000_vs_100"] = {
            "direct": big["direct"]["agent_cpu_per_change_s"] / small["direct"]["agent_cpu_per_change_s"],
            "attach": big["attach"]["agent_cpu_per_change_s_mean"] / small["attach"]["agent_cpu_per_change_s_mean"],
            "micro_change_pass": big["micro"]["change_pass_cpu_s"] / small["micro"]["change_pass_cpu_s"]
            if big.get("micro") and small.get("micro") else None}
        return res


def _merge(dicts, n):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return {k: v / n for k, v in sorted(out.items())}


def _net_id(lab, name):
    _index, item = lab.consul_client().kv.get("overlay/v1/networks/%s" % name)
    return json.loads(item["Value"])["id"]


def bench(workdir, collections_path):
    """The whole part on a lab of its own (10 hosts); returns the figures."""
    from bench_overlay import Bench
    lab = Lab(Path(workdir) / "peers-lab", PEER_HOSTS, collections_path=collections_path)
    try:
        t0 = time.monotonic()
        lab.start()
        log("peers lab (10 hosts + consul) up in %.1fs" % (time.monotonic() - t0))
        b = Bench(lab, Path(workdir), collections_path, profile=False)
        b.consul_ip = PEER_HOSTS["consul"]
        return PeersBench(lab, b).run()
    finally:
        lab.stop()


def report_lines(p):
    L = ["5. Peer sync at scale: 10 hosts, ONE network, the agent's peers service on the 9 receivers; endpoint X "
         "attached/detached on %s (module main()), %d times each per size" % (SOURCE, p["changes_per_size"])]
    for s in p["sizes"]:
        a, d = s["attach"], s["detach"]
        L.append("   %4d endpoints: X's FDB entry on all 9 hosts %.0f ms after Consul held its record (median; best %.0f, "
                 "first host %.0f, median host %.0f); removal on all 9 %.0f ms" % (
                     s["endpoints_in_network"], a["latency_all_9_s_median"] * 1000, a["latency_all_9_s_best"] * 1000,
                     a["latency_first_s_median"] * 1000, a["latency_median_host_s_median"] * 1000,
                     d["latency_all_9_s_median"] * 1000))
        L.append("         agent CPU per change (per agent): attach %.1f ms, detach %.1f ms; Consul requests per change from "
                 "the 9: attach %.1f, detach %.1f (+ %.1f health probes/s in all)" % (
                     a["agent_cpu_per_change_s_mean"] * 1000, d["agent_cpu_per_change_s_mean"] * 1000,
                     a["consul_requests_per_change_all_hosts"], d["consul_requests_per_change_all_hosts"],
                     s["health_probes_per_s_all_hosts"]))
        L.append("         requests by kind per attach: " + ", ".join("%s %.1f" % kv for kv in a["consul_requests_by_url"].items()))
        L.append("         (CPU per change net of the services' idle rate, %.1f ms/s each: their health probe; raw %.1f ms)"
                 % (s["agent_idle_cpu_s_per_s"] * 1000, a["agent_cpu_per_change_s_raw_mean"] * 1000))
        di = s.get("direct")
        if di:
            L.append("         %d record changes written straight into Consul, back to back: %.1f ms CPU per change per service "
                     "(raw %.1f), all 9 updated %.0f ms after the write (median), %.1f Consul requests per change, "
                     "Consul's own CPU %.1f ms per change" % (
                         di["changes"], di["agent_cpu_per_change_s"] * 1000, di["agent_cpu_per_change_s_raw"] * 1000,
                         di["latency_all_9_s_median"] * 1000, di["consul_requests_per_change_all_hosts"],
                         di.get("consul_cpu_per_change_s", 0) * 1000))
        mi = s.get("micro")
        if mi:
            L.append("         in-process on %s (micro_peers.py, process_time): change pass %.1f ms (its read of the store "
                     "%.1f ms), full pass %.0f ms; blocking query request %.1f ms, health probe %.1f ms" % (
                         MICRO_HOST, mi["change_pass_cpu_s"] * 1000, mi["read_cpu_s"] * 1000, mi["full_pass_cpu_s"] * 1000,
                         mi["wait_request_cpu_s"] * 1000, mi["health_probe_cpu_s"] * 1000))
    ratio = p.get("cpu_ratio_1000_vs_100") or {}
    L.append("   CPU per change, 1000 vs 100 endpoints: %s" % ", ".join(
        "%s %.2fx" % (k, v) for k, v in (("record changes (per service)", ratio.get("direct")),
                                         ("module attaches (per service)", ratio.get("attach")),
                                         ("in-process change pass", ratio.get("micro_change_pass"))) if v))
    m = p["agent_mem_after_1000_mib"]
    L.append("   agent memory after the 1000: RSS %.1f MiB (median of 9), peak (VmHWM) %.1f MiB max" % (
        m["rss_median"], m["hwm_max"]))
    L.append("   churn (%d endpoints attached and detached on %s per round), agents' RSS median after each round: %s MiB"
             % (CHURN_SIZE, SOURCE, ", ".join("%.1f" % r["rss_mib_median"] for r in p["churn"])))
    return L


def main():
    import argparse
    import shutil
    import tempfile
    global SIZES, CHANGES, CHURN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 and 5 endpoints per host, 2 changes, 1 churn round (a trial)")
    ap.add_argument("--collections-path", help="use this installed collections path instead of building one "
                                               "(e.g. another commit's, for before/after figures)")
    ap.add_argument("--out", default="peers.json", help="file name under benchmarks/results (default %(default)s)")
    a = ap.parse_args()
    if a.quick:
        SIZES, CHANGES, CHURN = (2, 5), 2, 1
    from bench_overlay import RESULTS, build_collection, cpu_share, machine_info
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    r = {"machine": machine_info()}
    r["collection_path"] = a.collections_path or build_collection(work / "collection")
    r["peers"] = bench(work, r["collection_path"])
    r["cpu_share_end"] = round(cpu_share(), 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / a.out).write_text(json.dumps(r, indent=1) + "\n")
    print("\n".join(report_lines(r["peers"])))
    print("busy-loop share of a CPU: %s at start, %s at end" % (r["machine"]["cpu_share_start"], r["cpu_share_end"]))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
