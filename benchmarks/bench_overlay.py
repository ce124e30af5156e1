"""Benchmark of overlay.vxlan on the simulated multi-host lab (tests/integration/lab).

A benchmark, not a test: it prints figures (and writes them to benchmarks/results/latest.json)
next to Docker 20.10's reference figures, and asserts nothing about timings. It only fails when
something it needs to measure does not work at all (a playbook fails, no ping ever answers...).

    benchmarks/run.sh [--keep] [--collections-path DIR] [--no-profile] [--only attach|bringup|join|iperf|micro|peers]

1. attach 50 endpoints on one host in ONE overlay_endpoint task: ansible task time (from a timing
   callback, and as attach-playbook wall minus no-op-playbook wall), the module's own time on the
   host (its main() run in-process by benchmarks/module_driver.py), a cProfile of that run, and how
   many of the 50 answer a ping from a container on the other host after a peers sync;
2. bring-up: one seed-shaped playbook (network + one endpoint on each of two hosts + peers) until the
   first successful ping between the two containers, 3 times on fresh networks, median;
3. iperf3 single stream, 5 s, container on docker1 -> container on docker0 over the overlay, and
   docker1 -> docker0 on the underlay, 3 repeats each (interleaved), medians and ratio;
4. benchmarks/micro_netlink.py inside docker1: the pyroute2 costs behind the profile;
5. benchmarks/bench_peers.py on a lab of its own (10 hosts): the agent's peers service following one
   change in a network of 100 and of 1000 endpoints (FDB latency to the 9 other hosts, the service's
   CPU per change, Consul requests per change, its memory after the 1000 and over churn).

Order of a run: 2 (fresh hosts), 1, 3 (on the network of 1), 4, 5. See benchmarks/README.md.

Needs root (namespaces), the venv (scripts/setup.sh) and iperf3. PYTHONPATH must hold
tests/integration (run.sh sets it).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import REPO, Lab  # tests/integration/lab

BENCH = Path(__file__).resolve().parent
PLAYBOOKS = BENCH / "playbooks"
SEED = REPO / "tests" / "integration" / "playbooks" / "overlay_seed.yml"
LAB_CALLBACKS = REPO / "tests" / "integration" / "lab" / "callback"
VENV = REPO / ".venv"
PY = VENV / "bin" / "python"
RESULTS = BENCH / "results"

HOSTS = {"consul": "10.0.0.5", "docker0": "10.0.0.10", "docker1": "10.0.0.11"}
A, B = "docker0", "docker1"          # host A (servers, the 50 endpoints), host B (clients)
N_ENDPOINTS = 50
ATTACH_REPEATS = 3
BRINGUP_REPEATS = 3
IPERF_REPEATS = 3
IPERF_SECONDS = 5
PING_LOOP_LIMIT = 10.0              # seconds, bring-up ping loop

# Docker 20.10, measured on this kind of machine (given in the brief).
DOCKER = {
    "attach_per_endpoint_s": 0.49,   # starting 50 containers sequentially
    "attach_total_s": 24.47,
    "run_to_first_ping_s": 1.0,      # `docker run` to the first ping from the other host
    "overlay_underlay_ratio": 0.81,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------------------ setup

def build_collection(base: Path) -> str:
    """ansible-galaxy build + install of the working tree, as tests/integration/conftest.py does."""
    build, dest = base / "build", base / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    galaxy = str(VENV / "bin" / "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--output-path", str(build), str(REPO)],
                   check=True, capture_output=True, text=True, env=env)
    tarball = next(build.glob("*.tar.gz"))
    subprocess.run([galaxy, "collection", "install", "--offline", "--force", "-p", str(dest), str(tarball)],
                   check=True, capture_output=True, text=True, env=env)
    return str(dest)


def cpu_share(seconds: float = 0.5) -> float:
    """Fraction of one CPU a busy loop gets right now (1.0 = an idle core; <1 = other load competes)."""
    c0, t0 = time.process_time(), time.monotonic()
    while time.process_time() - c0 < seconds:
        sum(range(1000))
    return (time.process_time() - c0) / (time.monotonic() - t0)


def machine_info() -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return None

    git = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", "plugins"])
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), None),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "cpu_share_start": round(cpu_share(), 2),
        "python": platform.python_version(),
        "ansible_core": out([str(VENV / "bin" / "python"), "-c",
                             "import ansible.release as r; print(r.__version__)"]),
        "pyroute2": out([str(PY), "-c", "import pyroute2; print(pyroute2.__version__)"]),
        "iperf3": (out(["iperf3", "--version"]) or "").splitlines()[0] if shutil.which("iperf3") else None,
        "git_head": git,
        "plugins_modified_in_worktree": bool(dirty),
    }


class Bench:
    def __init__(self, lab: Lab, workdir: Path, collections_path: str, profile: bool):
        self.lab = lab
        self.workdir = workdir
        self.collections_path = collections_path
        self.profile = profile
        self.consul_ip = HOSTS["consul"]
        self.n = 0

    # -------------------------------------------------------------------- helpers
    def playbook(self, path, extra_vars=None, **kwargs):
        """Run a playbook with the timing callback; returns (result, wall seconds, timing records)."""
        self.n += 1
        timing = self.workdir / f"timing-{self.n:03d}.jsonl"
        env = {"ANSIBLE_CALLBACK_PLUGINS": f"{LAB_CALLBACKS}:{BENCH / 'callback'}",
               "ANSIBLE_CALLBACKS_ENABLED": "lab_results,bench_timing",
               "BENCH_TIMING_FILE": str(timing)}
        t0 = time.monotonic()
        result = self.lab.ansible_playbook(str(path), extra_vars=extra_vars, env=env, **kwargs)
        wall = time.monotonic() - t0
        result.assert_ok()
        records = [json.loads(x) for x in timing.read_text().splitlines()] if timing.exists() else []
        return result, wall, records

    @staticmethod
    def task_time(records, task, host):
        found = [r for r in records if r["type"] == "task" and r["task"] == task and r["host"] == host]
        return found[-1]["duration"] if found else None

    def module_direct(self, host, module, args, profile_to=None):
        """main() of a module in-process on a simulated host; returns the driver's JSON + process wall."""
        self.n += 1
        args_file = self.workdir / f"direct-{self.n:03d}.json"
        args_file.write_text(json.dumps(args))
        cmd = [str(PY), str(BENCH / "module_driver.py"), self.collections_path, module, str(args_file)]
        if profile_to:
            cmd += ["--profile", str(profile_to)]
        t0 = time.monotonic()
        r = self.lab.hosts[host].run(cmd, check=True, timeout=300)
        wall = time.monotonic() - t0
        out = json.loads(r.stdout.strip().splitlines()[-1])
        if out["rc"] != 0 or out["result"].get("failed"):
            raise RuntimeError(f"{module} failed on {host}: {json.dumps(out['result'])[:2000]}")
        out["process_wall_s"] = wall
        return out

    @staticmethod
    def last_result(result, host, task):
        try:
            return result.results(host, task).get("changed")
        except KeyError:
            return None

    def remove_leftovers(self) -> dict:
        """Delete ovl-* namespaces still present on the overlay hosts; wait until no vxlan socket is left."""
        leaked = {}
        for name in (A, B):
            h = self.lab.hosts[name]
            left = [n for n in h.list_netns() if n.startswith("ovl-")]
            for n in left:
                h.del_netns(n)
            if left:
                leaked[name] = left
            deadline = time.monotonic() + 10   # namespaces are torn down asynchronously by the kernel
            while h.run(["ss", "-Huln", "sport = :4789"], check=False).stdout.strip():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: a vxlan socket on 4789 outlived its namespace")
                time.sleep(0.05)
        return leaked

    def common_args(self, host):
        return {"consul_host": self.consul_ip, "host": host, "vtep": "eth0"}

    def ping_once(self, host, ns, ip, wait="0.2"):
        r = self.lab.hosts[host].run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c1", "-W", wait, ip],
                                     check=False, timeout=30)
        return r.returncode == 0

    def ping_sweep(self, host, ns, ips, wait=1, count=1):
        """Ping every ip from ns in parallel (one ping process each); returns the set that answered."""
        script = "\n".join(
            f"(ip netns exec {ns} ping -n -q -c{count} -W{wait} {ip} >/dev/null 2>&1 && echo {ip}) &"
            for ip in ips) + "\nwait\n"
        r = self.lab.hosts[host].run(["sh", "-c", script], check=False, timeout=120)
        return set(r.stdout.split())

    def endpoint_records(self, network):
        client = self.lab.consul_client()
        _index, net = client.kv.get(f"overlay/v1/networks/{network}")
        net_id = json.loads(net["Value"])["id"]
        _index, items = client.kv.get(f"overlay/v1/endpoints/{net_id}/", recurse=True)
        return {json.loads(i["Value"])["name"]: json.loads(i["Value"]) for i in items or ()}

    # -------------------------------------------------------------------- 1. attach 50
    def bench_attach(self) -> dict:
        log(f"1. attach {N_ENDPOINTS} endpoints on {A} in one task")
        net = {"name": "bench50", "subnet": "10.50.0.0/24"}
        res = {"network": net, "endpoints": N_ENDPOINTS, "host": A}
        # The network on both hosts, and the pinging container P1 on docker1 (seed shape).
        self.lab.hosts[B].add_netns("p1")
        self.playbook(SEED, {"networks": [net],
                             "endpoints": {B: [{"network": "bench50",
                                                "endpoints": [{"name": "P1", "namespace": "p1"}]}]}})
        names = [f"e{i}" for i in range(N_ENDPOINTS)]
        t0 = time.monotonic()
        self.lab.hosts[A].run("for n in %s; do ip netns add $n && ip -n $n link set lo up; done" % " ".join(names))
        res["netns_precreate_s"] = time.monotonic() - t0
        endpoints = [{"name": n.upper(), "namespace": n} for n in names]
        ev = {"target": A, "network": "bench50", "endpoints": endpoints}

        # Fixed costs, right before the real runs (SSH ControlPersist master is warm from the seed run).
        noop_walls = [self.playbook(PLAYBOOKS / "noop.yml", ev)[1] for _run in range(3)]
        _result, _wall, ping_rec = self.playbook(PLAYBOOKS / "ping_module.yml", {"target": A})
        res["noop_playbook_wall_s"] = median(noop_walls)
        res["noop_playbook_walls_s"] = noop_walls
        res["trivial_module_task_s"] = self.task_time(ping_rec, "Ping module", A)

        # ATTACH_REPEATS ansible attaches, each but the last followed by an ansible detach.
        runs = []
        for i in range(ATTACH_REPEATS):
            log(f"   ansible-playbook attach.yml ({N_ENDPOINTS} endpoints), run {i + 1}/{ATTACH_REPEATS}")
            result, wall, rec = self.playbook(PLAYBOOKS / "attach.yml", ev)
            out = result.results(A, "Attach")
            runs.append({"playbook_wall_s": wall, "task_s": self.task_time(rec, "Attach", A),
                         "changed": out.get("changed"), "actions": len(out.get("actions") or [])})
            if i == 0:
                res["ping"] = self.reachability(names)
            if i < ATTACH_REPEATS - 1:
                _result, _wall, drec = self.playbook(PLAYBOOKS / "attach.yml", dict(ev, state="absent"))
                runs[-1]["detach_task_s"] = self.task_time(drec, "Attach", A)
        tasks = [r["task_s"] for r in runs]
        res["ansible"] = {
            "runs": runs,
            "task_s_callback": median(tasks),
            "task_s_callback_best": min(tasks),
            "task_s_wall_minus_noop": median([r["playbook_wall_s"] for r in runs]) - res["noop_playbook_wall_s"],
            "per_endpoint_s_callback": median(tasks) / N_ENDPOINTS,
            "per_endpoint_s_callback_best": min(tasks) / N_ENDPOINTS,
            "detach_task_s": median([r["detach_task_s"] for r in runs if "detach_task_s" in r]),
        }

        # The module on its own, on the host: main() in-process (no SSH, no AnsiballZ).
        log("   module_driver: (detach, attach) x3, idempotent re-run, profiled attach")
        direct_args = dict(self.common_args(A), network="bench50", endpoints=endpoints)
        det, att = [], []
        for _run in range(ATTACH_REPEATS):
            det.append(self.module_direct(A, "overlay_endpoint", dict(direct_args, state="absent")))
            att.append(self.module_direct(A, "overlay_endpoint", direct_args))
        again = self.module_direct(A, "overlay_endpoint", direct_args)

        def med(runs, key):
            return median([r[key] for r in runs])

        d = {"attach_main_s": med(att, "main_s"), "attach_main_s_best": min(r["main_s"] for r in att),
             "attach_main_cpu_s": med(att, "main_cpu_s"), "attach_import_s": med(att, "import_s"),
             "attach_process_wall_s": med(att, "process_wall_s"),
             "attach_main_s_runs": [r["main_s"] for r in att],
             "attach_maxrss_mib": max(r.get("maxrss_mib", 0) for r in att),
             "per_endpoint_main_s": med(att, "main_s") / N_ENDPOINTS,
             "per_endpoint_main_cpu_s": med(att, "main_cpu_s") / N_ENDPOINTS,
             "attach_changed": all(r["result"].get("changed") for r in att),
             "attach_children_cpu_s": med(att, "main_children_cpu_s") if "main_children_cpu_s" in att[0] else None,
             "detach_main_s": med(det, "main_s"), "detach_main_cpu_s": med(det, "main_cpu_s"),
             "rerun_unchanged_main_s": again["main_s"], "rerun_unchanged_main_cpu_s": again["main_cpu_s"],
             "rerun_unchanged_children_cpu_s": again.get("main_children_cpu_s"),
             "rerun_changed": again["result"].get("changed")}
        if self.profile:
            det_prof = RESULTS / "detach50.prof"
            self.module_direct(A, "overlay_endpoint", dict(direct_args, state="absent"), profile_to=det_prof)
            res["detach_profile"] = summarize_profile(det_prof, keys=DETACH_KEYS)
            prof_path = RESULTS / "attach50.prof"
            prof = self.module_direct(A, "overlay_endpoint", direct_args, profile_to=prof_path)
            d["profiled_attach_main_s"] = prof["main_s"]
            d["profile_file"] = str(prof_path.relative_to(REPO))
            res["profile"] = summarize_profile(prof_path)
            rerun_path = RESULTS / "rerun50.prof"   # the same again: nothing to change
            self.module_direct(A, "overlay_endpoint", direct_args, profile_to=rerun_path)
            res["rerun_profile"] = summarize_profile(rerun_path)
        res["module_direct"] = d
        # The direct re-attach gave the same addresses and MACs (lowest free) on new veths: iperf uses them.
        records = self.endpoint_records("bench50")
        res["server_ip"] = records["E0"]["ip"]
        res["client_ip"] = records["P1"]["ip"]
        return res

    def reachability(self, names) -> dict:
        """Peers sync on docker1, then ping every endpoint from P1 there."""
        _result, _wall, peers_rec = self.playbook(PLAYBOOKS / "peers.yml", {"target": B, "network": "bench50"})
        records = self.endpoint_records("bench50")
        ips = [records[n.upper()]["ip"] for n in names]
        t0 = time.monotonic()
        first = self.ping_sweep(B, "p1", ips, wait=1)
        retry = self.ping_sweep(B, "p1", [ip for ip in ips if ip not in first], wait=1, count=3) \
            if len(first) < len(ips) else set()
        log(f"   ping from {B}: {len(first)}/{len(ips)} at the first try, {len(first | retry)} with retries")
        return {"from": f"P1 on {B}", "answered_first_try": len(first),
                "answered_with_retries": len(first | retry), "of": len(ips),
                "sweep_s": time.monotonic() - t0, "peer_sync_task_s": self.task_time(peers_rec, "Peers", B)}

    # -------------------------------------------------------------------- 2. bring-up
    def bench_bringup(self) -> dict:
        log(f"2. bring-up to first ping, {BRINGUP_REPEATS} fresh networks")
        runs = []
        for i in range(1, BRINGUP_REPEATS + 1):
            name, subnet = f"up{i}", f"10.7{i}.0.0/24"
            ip_a, ip_b = f"10.7{i}.0.10", f"10.7{i}.0.20"
            ns_a, ns_b = f"ua{i}", f"ub{i}"
            self.lab.hosts[A].add_netns(ns_a)
            self.lab.hosts[B].add_netns(ns_b)
            ev = {"networks": [{"name": name, "subnet": subnet}],
                  "endpoints": {A: [{"network": name, "endpoints": [{"name": f"A{i}", "namespace": ns_a, "ip": ip_a}]}],
                                B: [{"network": name, "endpoints": [{"name": f"B{i}", "namespace": ns_b, "ip": ip_b}]}]}}
            # The same playbook shape with a trivial module, right before: ansible's own share.
            _result, floor_wall, _rec = self.playbook(PLAYBOOKS / "floor3.yml", ev)
            t0 = time.monotonic()
            _result, wall, rec = self.playbook(SEED, ev)
            t1 = time.monotonic()
            attempts, ok = 0, False
            while True:
                attempts += 1
                if self.ping_once(B, ns_b, ip_a, wait="0.2"):
                    ok = True
                    break
                if time.monotonic() - t1 > PING_LOOP_LIMIT:
                    break
            t2 = time.monotonic()
            if not ok:
                raise RuntimeError(f"bring-up {i}: no ping answered within {PING_LOOP_LIMIT}s")
            run = {"network": name, "subnet": subnet, "total_s": t2 - t0, "playbook_s": t1 - t0,
                   "ping_s": t2 - t1, "ping_attempts": attempts, "floor_playbook_s": floor_wall,
                   "tasks": {f"{r['host']}:{r['task']}": round(r["duration"], 3)
                             for r in rec if r["type"] == "task"}}
            runs.append(run)
            log(f"   {name}: total {run['total_s']:.2f}s = playbook {run['playbook_s']:.2f}s + "
                f"ping {run['ping_s']:.3f}s ({attempts} attempt(s))")
            t3 = time.monotonic()
            td, _wall, _rec = self.playbook(PLAYBOOKS / "teardown.yml", ev)
            run["teardown_s"] = time.monotonic() - t3
            run["teardown_network_absent_changed"] = {
                h: self.last_result(td, h, "Networks absent") for h in (A, B)}
            # overlay_network state=absent leaves a host's namespace behind when another host deleted the
            # record first (see README): record it, then clean up by hand so the next repeat starts clean.
            run["leaked_overlay_namespaces"] = self.remove_leftovers()
            self.lab.hosts[A].del_netns(ns_a)
            self.lab.hosts[B].del_netns(ns_b)
        keys = sorted({k for r in runs for k in r["tasks"]})
        return {"runs": runs,
                "median": {k: median([r[k] for r in runs])
                           for k in ("total_s", "playbook_s", "ping_s", "floor_playbook_s")},
                "median_task_s": {k: median([r["tasks"][k] for r in runs if k in r["tasks"]]) for k in keys}}

    # -------------------------------------------------------------------- 2b. join with the peers service
    def bench_join(self) -> dict:
        """Docker's `docker run` -> first ping from the other host, with the peers service running on B.

        The network already exists on both hosts (as Docker's does before `docker run`); one endpoint is
        attached on A, and B learns it from Consul through the peers service, without an Ansible run."""
        log(f"2b. join: attach one endpoint on {A}, ping it from {B} (peers service on {B}), {BRINGUP_REPEATS}x")
        net = {"name": "join", "subnet": "10.80.0.0/24"}
        self.lab.hosts[B].add_netns("jb")
        self.playbook(SEED, {"networks": [net],
                             "endpoints": {B: [{"network": "join", "endpoints": [{"name": "JB", "namespace": "jb"}]}]}})
        hb = self.lab.hosts[B]
        watcher = self.lab._spawn("peers", hb.name, hb.nsenter_cmd() + [
            "env", "PYTHONPATH=" + self.collections_path, str(PY), "-m",
            "ansible_collections.overlay.vxlan.agent",
            "--host", B, "--vtep", "eth0", "--consul-host", self.consul_ip])
        runs = []
        try:
            for i in range(1, BRINGUP_REPEATS + 1):
                ns, ip = f"ja{i}", f"10.80.0.{10 + i}"
                self.lab.hosts[A].add_netns(ns)
                args = dict(self.common_args(A), network="join", name=f"JA{i}", namespace=ns, ip=ip)
                t0 = time.monotonic()
                direct = self.module_direct(A, "overlay_endpoint", args)
                t1 = time.monotonic()
                attempts = 0
                while not self.ping_once(B, "jb", ip, wait="0.2"):
                    attempts += 1
                    if time.monotonic() - t1 > PING_LOOP_LIMIT:
                        raise RuntimeError(f"join {i}: no ping answered within {PING_LOOP_LIMIT}s")
                t2 = time.monotonic()
                runs.append({"total_s": t2 - t0, "attach_s": t1 - t0, "module_main_s": direct.get("main_s"),
                             "ping_s": t2 - t1, "failed_pings": attempts})
                log(f"   JA{i}: attach {t1 - t0:.2f}s + first ping from {B} after {t2 - t1:.3f}s "
                    f"({attempts} failed) = {t2 - t0:.2f}s")
        finally:
            self.lab._stop_procs([watcher])
        return {"runs": runs, "median": {k: median([r[k] for r in runs]) for k in ("total_s", "attach_s", "ping_s")}}

    # -------------------------------------------------------------------- micro-benchmarks
    def micro(self) -> dict:
        """benchmarks/micro_netlink.py inside docker1 (its private /run/netns, namespaces it removes)."""
        log("4. pyroute2 micro-benchmarks (inside docker1)")
        r = self.lab.hosts[B].run([str(PY), str(BENCH / "micro_netlink.py"), self.collections_path], check=True,
                                  timeout=300)
        return json.loads(r.stdout)

    # -------------------------------------------------------------------- 3. iperf3
    def iperf_once(self, server_ns, server_ip, client_ns, port) -> float:
        """One iperf3 run, client on B -> server on A; returns receiver bits/s."""
        ha, hb = self.lab.hosts[A], self.lab.hosts[B]
        prefix = ["ip", "netns", "exec", server_ns] if server_ns else []
        # nsenter (no -p) and `ip netns exec` both exec: the PID we record is iperf3's own.
        argv = ha.nsenter_cmd() + prefix + ["iperf3", "-s", "-1", "-B", server_ip, "-p", str(port)]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            check = (["ip", "netns", "exec", server_ns] if server_ns else []) + ["ss", "-Htln", f"sport = :{port}"]
            deadline = time.monotonic() + 10
            while not ha.run(check, check=False).stdout.strip():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"iperf3 server did not start: {server.stderr.read()}")
                time.sleep(0.05)
            cprefix = ["ip", "netns", "exec", client_ns] if client_ns else []
            r = hb.run(cprefix + ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(IPERF_SECONDS), "-J"],
                       check=False, timeout=IPERF_SECONDS + 30)
            data = json.loads(r.stdout)
            if "error" in data:
                raise RuntimeError(f"iperf3 client: {data['error']}")
            return data["end"]["sum_received"]["bits_per_second"]
        finally:
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(server.pid, signal.SIGKILL)   # by PID, the one we started
                server.wait(timeout=5)

    HANDBUILT = {A: ("10.99.0.10", "02:42:0a:63:00:0a"), B: ("10.99.0.20", "02:42:0a:63:00:14")}

    def handbuilt_path(self, mtu):
        """The kernel path the collection builds, made by hand with ip and bridge commands and no
        collection code (issue 9's yardstick): per host an overlay namespace hbo with br0 and
        vxlan0 (VNI 999, port 4789, proxy, l2miss, l3miss, learning off; created in the host namespace,
        then moved in), a container namespace hbc with eth0 (MTU, MAC 02:42 + IP) whose peer is on br0,
        and the other host's static FDB and permanent neighbour entries on vxlan0. No filter."""
        for name, (ip, mac) in self.HANDBUILT.items():
            other = B if name == A else A
            oip, omac = self.HANDBUILT[other]
            self.lab.hosts[name].run(" && ".join([
                "ip netns add hbo", "ip netns add hbc",
                "ip -n hbo link add br0 type bridge", "ip -n hbo link set br0 mtu %d up" % mtu,
                "ip link add hbvx type vxlan id 999 dstport 4789 nolearning proxy l2miss l3miss",
                "ip link set hbvx netns hbo", "ip -n hbo link set hbvx name vxlan0",
                "ip -n hbo link set vxlan0 mtu %d master br0 up" % mtu,
                "ip -n hbo link add hbv0 mtu %d type veth peer name eth0 netns hbc" % mtu,
                "ip -n hbo link set hbv0 master br0 up",
                "ip -n hbc link set eth0 address %s up" % mac, "ip -n hbc link set lo up",
                "ip -n hbc addr add %s/24 dev eth0" % ip,
                "bridge -n hbo fdb add %s dev vxlan0 dst %s self permanent" % (omac, HOSTS[other]),
                "ip -n hbo neigh add %s lladdr %s dev vxlan0 nud permanent" % (oip, omac)]))

    def bench_iperf(self, server_ip, client_ip) -> dict:
        # The same path on a network with anti_spoofing: false (Docker's data plane: a learning br0,
        # no per-port filter, no neighbour suppression), interleaved, so the filter's cost shows.
        open_net = {"name": "benchopen", "subnet": "10.52.0.0/24", "anti_spoofing": False}
        self.lab.hosts[A].add_netns("oa")
        self.lab.hosts[B].add_netns("ob")
        self.playbook(SEED, {"networks": [open_net], "endpoints": {
            A: [{"network": "benchopen", "endpoints": [{"name": "OA", "namespace": "oa", "ip": "10.52.0.10"}]}],
            B: [{"network": "benchopen", "endpoints": [{"name": "OB", "namespace": "ob", "ip": "10.52.0.20"}]}]}})
        self.playbook(SEED, {"networks": [open_net], "endpoints": {}})  # peers: each host learns the other's
        log(f"3. iperf3 {IPERF_REPEATS}x{IPERF_SECONDS}s overlay (P1@{B} -> E0@{A}), the same without "
            f"anti-spoofing (OB -> OA) and underlay ({B} -> {A})")
        mtu = json.loads(self.lab.hosts[A].run(["ip", "-j", "-n", "e0", "link", "show", "eth0"]).stdout)[0]["mtu"]
        self.handbuilt_path(mtu)   # E0's MTU: the network's
        overlay, unfiltered, underlay, handbuilt = [], [], [], []
        for i in range(IPERF_REPEATS):   # interleaved, so drifting machine load hits all alike
            overlay.append(self.iperf_once("e0", server_ip, "p1", 5201))
            handbuilt.append(self.iperf_once("hbc", self.HANDBUILT[A][0], "hbc", 5204))
            unfiltered.append(self.iperf_once("oa", "10.52.0.10", "ob", 5203))
            underlay.append(self.iperf_once(None, HOSTS[A], None, 5202))
            log(f"   run {i + 1}: overlay {overlay[-1] / 1e9:.2f} Gbit/s, hand-built {handbuilt[-1] / 1e9:.2f} Gbit/s, "
                f"without anti-spoofing {unfiltered[-1] / 1e9:.2f} Gbit/s, underlay {underlay[-1] / 1e9:.2f} Gbit/s")
        mo, mf, mu, mh = median(overlay), median(unfiltered), median(underlay), median(handbuilt)
        return {"overlay_bps": overlay, "unfiltered_bps": unfiltered, "underlay_bps": underlay,
                "handbuilt_bps": handbuilt, "handbuilt_median_bps": mh,
                "handbuilt_ratio": mo / mh if mh else None, "unfiltered_handbuilt_ratio": mf / mh if mh else None,
                "handbuilt": f"{self.HANDBUILT[B][0]} (hbc, {B}) -> {self.HANDBUILT[A][0]} (hbc, {A}), ip/bridge "
                             f"commands, MTU {mtu}, no filter",
                "overlay_median_bps": mo, "unfiltered_median_bps": mf, "underlay_median_bps": mu,
                "ratio": mo / mu if mu else None, "unfiltered_ratio": mf / mu if mu else None,
                "anti_spoofing_cost": 1 - mo / mf if mf else None,
                "overlay": f"{client_ip} (P1, {B}) -> {server_ip} (E0, {A})",
                "unfiltered": f"10.52.0.20 (OB, {B}) -> 10.52.0.10 (OA, {A}), network anti_spoofing: false",
                "underlay": f"{HOSTS[B]} -> {HOSTS[A]}"}


# ------------------------------------------------------------------------------ profile

KEY_FUNCTIONS = [   # (file suffix, function): where the 50-endpoint attach spends its time
    ("_endpoint.py", "run"),
    ("_records.py", "read_endpoint_state"),
    ("_endpoint.py", "validate_items"),
    ("_records.py", "claim_endpoints"),
    ("_overlay_ns.py", "ensure"),
    ("_gateway.py", "ensure"),
    ("_endpoint.py", "build_kernel"),
    ("_links.py", "ensure_veth"),
    ("_links.py", "veth_pair_state"),
    ("_links.py", "is_pair"),
    ("_links.py", "ensure_attributes"),
    ("_links.py", "find"),
    ("_links.py", "addresses"),
    ("_gateway.py", "isolate_port"),
    ("_endpoint.py", "ensure_default_route"),
    ("_endpoint.py", "describe"),
    ("_links.py", "view"),
    ("_peers.py", "sync"),
    ("_netns.py", "get"),
    ("_netns.py", "close"),
    ("_netns.py", "same_namespace"),
    ("_consul.py", "commit"),
    ("_consul.py", "get_tree"),
    ("_consul.py", "keys"),
    ("_consul.py", "get"),
]


DETACH_KEYS = [
    ("_endpoint.py", "detach"),
    ("_endpoint.py", "_remove_kernel"),
    ("_links.py", "find"),
    ("_links.py", "delete"),
    ("_records.py", "mark_detaching"),
    ("_records.py", "release"),
    ("_netns.py", "get"),
]


def summarize_profile(path: Path, top: int = 15, keys=None) -> dict:
    keys = keys or KEY_FUNCTIONS
    st = pstats.Stats(str(path))
    total = st.total_tt
    key = []
    for (fname, _line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        for suffix, want in keys:
            if fname.endswith(suffix) and func == want:
                key.append({"function": f"{suffix[:-3]}.{func}", "calls": nc, "cumulative_s": round(ct, 4)})
    order = {f"{s[:-3]}.{f}": i for i, (s, f) in enumerate(keys)}
    key.sort(key=lambda k: order.get(k["function"], 999))

    def short(fname, line, func):
        if fname == "~":
            return func
        parts = Path(fname).parts
        for anchor in ("site-packages", "plugins", "lib"):
            if anchor in parts:
                parts = parts[parts.index(anchor) + 1:]
                break
        return f"{'/'.join(parts[-2:])}:{line}({func})"

    by_tt = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {"total_s": round(total, 4), "key_functions": key,
            "top_tottime": [{"function": short(*k), "calls": v[1], "tottime_s": round(v[2], 4),
                             "cumulative_s": round(v[3], 4)} for k, v in by_tt]}


# ------------------------------------------------------------------------------ report

def fmt_s(x):
    return "n/a" if x is None else f"{x:.2f} s"


def report(r: dict) -> str:
    m, a, b, t = r["machine"], r.get("attach50"), r.get("bringup"), r.get("throughput")
    L = []
    L.append("=" * 96)
    L.append(f"overlay.vxlan benchmark   {m['date']}   nproc={m['nproc']}   kernel {m['kernel']}")
    L.append(f"cpu: {m['cpu']}   load avg at start {' '.join(m['loadavg_start'])}, "
             f"at end {' '.join(r.get('loadavg_end', []))}")
    L.append(f"share of a CPU a busy loop got: {m['cpu_share_start']} at start, {r.get('cpu_share_end')} at end "
             f"(1.0 = idle core; lower = other load on the machine inflates every wall-clock figure)")
    L.append(f"ansible-core {m['ansible_core']}, pyroute2 {m['pyroute2']}, python {m['python']}, "
             f"git {m['git_head']}{' + uncommitted plugin changes' if m['plugins_modified_in_worktree'] else ''}")
    L.append("Docker 20.10 reference figures were measured on this kind of machine, not in this run.")
    L.append("-" * 96)
    if a:
        an, d = a["ansible"], a["module_direct"]
        L.append(f"1. Attach {a['endpoints']} endpoints on {a['host']} in ONE overlay_endpoint task "
                 f"(namespaces pre-created with ip netns add)")
        L.append(f"   ansible task (timing callback: task start -> result on the controller), median of "
                 f"{len(an['runs'])}: {fmt_s(an['task_s_callback'])} = {an['per_endpoint_s_callback'] * 1000:.1f} ms/endpoint "
                 f"(best {fmt_s(an['task_s_callback_best'])} = {an['per_endpoint_s_callback_best'] * 1000:.1f} ms)")
        L.append(f"       | Docker: {DOCKER['attach_total_s']:.2f} s = {DOCKER['attach_per_endpoint_s'] * 1000:.0f} ms/container "
                 f"(50 sequential docker run)")
        L.append("   runs: " + ", ".join(f"{r['task_s']:.2f} s" for r in an["runs"])
                 + f"; cross-check: median playbook wall - no-op playbook wall ({fmt_s(a['noop_playbook_wall_s'])}) = "
                 f"{fmt_s(an['task_s_wall_minus_noop'])}; a trivial ansible.builtin.ping task: "
                 f"{fmt_s(a['trivial_module_task_s'])}; detach 50 task: {fmt_s(an['detach_task_s'])}")
        L.append(f"   module's own time on the host, main() in-process (no SSH/AnsiballZ), median of "
                 f"{len(d['attach_main_s_runs'])}: {fmt_s(d['attach_main_s'])} = {d['per_endpoint_main_s'] * 1000:.1f} ms/endpoint "
                 f"(best {fmt_s(d['attach_main_s_best'])})")
        L.append(f"     CPU time of main() {fmt_s(d['attach_main_cpu_s'])} = {d['per_endpoint_main_cpu_s'] * 1000:.1f} ms/endpoint "
                 f"(the rest of the wall time: waiting for the CPU, forked helpers, Consul, iptables)"
                 + (f"; forked helpers (iptables, nft without libnftables) {fmt_s(d['attach_children_cpu_s'])} more"
                    if d.get("attach_children_cpu_s") is not None else ""))
        L.append(f"     + imports {fmt_s(d['attach_import_s'])}; whole python process {fmt_s(d['attach_process_wall_s'])}; "
                 f"re-run with nothing to change {fmt_s(d['rerun_unchanged_main_s'])} "
                 f"(CPU {fmt_s(d['rerun_unchanged_main_cpu_s'])}"
                 + (f" + {fmt_s(d['rerun_unchanged_children_cpu_s'])} in forked helpers"
                    if d.get("rerun_unchanged_children_cpu_s") is not None else "")
                 + f", changed={d['rerun_changed']}); "
                 f"detach 50 {fmt_s(d['detach_main_s'])} (CPU {fmt_s(d['detach_main_cpu_s'])})")
        if d.get("attach_maxrss_mib"):
            L.append(f"     peak RSS of the module process (module_driver.py, getrusage ru_maxrss) for the attach of "
                     f"{a['endpoints']}: {d['attach_maxrss_mib']:.1f} MiB")
        p = a["ping"]
        L.append(f"   reachability after a peers sync on {B} ({fmt_s(p['peer_sync_task_s'])} task): "
                 f"{p['answered_first_try']}/{p['of']} answered a ping from {p['from']} at the first try, "
                 f"{p['answered_with_retries']}/{p['of']} with retries")
        if a.get("profile"):
            pr = a["profile"]
            L.append(f"   cProfile of the module's attach (main() {fmt_s(d.get('profiled_attach_main_s'))} under the "
                     f"profiler; {d.get('profile_file')}):")
            for k in pr["key_functions"]:
                L.append(f"     {k['function']:<32} {k['calls']:>7} calls  {k['cumulative_s']:8.3f} s cumulative")
            L.append("     top by own time:")
            for k in pr["top_tottime"][:10]:
                L.append(f"     {k['function'][:70]:<70} {k['calls']:>7} {k['tottime_s']:8.3f} s")
        if a.get("detach_profile"):
            L.append("   cProfile of the module's detach of the 50 (results/detach50.prof): " + ", ".join(
                f"{k['function']} {k['calls']}x {k['cumulative_s']:.2f} s" for k in a["detach_profile"]["key_functions"]))
        L.append("-" * 96)
    if b:
        L.append(f"2. Bring-up: seed playbook (network + 1 endpoint on each of 2 hosts + peers) -> first ping "
                 f"(ping -c1 -W0.2 loop), {len(b['runs'])} fresh networks")
        for run in b["runs"]:
            L.append(f"   {run['network']:<5} total {run['total_s']:5.2f} s = playbook {run['playbook_s']:5.2f} s "
                     f"+ ping {run['ping_s']:5.3f} s ({run['ping_attempts']} attempt(s));   same playbook shape "
                     f"with ansible.builtin.ping instead: {run['floor_playbook_s']:5.2f} s")
        md = b["median"]
        L.append(f"   median total {fmt_s(md['total_s'])} (playbook {fmt_s(md['playbook_s'])}, ping "
                 f"{md['ping_s']:.3f} s)   | Docker: ~{DOCKER['run_to_first_ping_s']:.1f} s from docker run to first ping")
        L.append(f"   (median of the same playbook shape with a trivial module: {fmt_s(md['floor_playbook_s'])}, "
                 f"i.e. ansible's own cost; the rest is the modules)")
        L.append("   median task times (timing callback): " + ", ".join(
            f"{k} {v:.2f} s" for k, v in b["median_task_s"].items()))
        leaks = [(run["network"], run["leaked_overlay_namespaces"]) for run in b["runs"]
                 if run.get("leaked_overlay_namespaces")]
        if leaks:
            L.append("   NOTE: overlay_network state=absent left overlay namespaces behind (removed by hand): "
                     + "; ".join(f"{n}: {lk}" for n, lk in leaks))
        L.append("-" * 96)
    j = r.get("join")
    if j:
        L.append(f"2b. Join (Docker's docker run -> ping from the other host): network already on both hosts, peers "
                 f"service on {B}; attach one endpoint on {A} (module main(), no SSH), ping from {B}")
        for run in j["runs"]:
            L.append(f"   attach {run['attach_s']:.2f} s + first answer {run['ping_s']:.3f} s after it "
                     f"({run['failed_pings']} failed) = {run['total_s']:.2f} s")
        L.append(f"   median {fmt_s(j['median']['total_s'])} (attach {fmt_s(j['median']['attach_s'])}, then "
                 f"{j['median']['ping_s']:.3f} s to the first answer)   | Docker: ~{DOCKER['run_to_first_ping_s']:.1f} s")
        L.append("-" * 96)
    if t:
        L.append(f"3. TCP throughput, iperf3 single stream {IPERF_SECONDS} s, {IPERF_REPEATS} repeats, interleaved")
        L.append(f"   overlay  {t['overlay']}: " + ", ".join(f"{x / 1e9:.2f}" for x in t["overlay_bps"])
                 + f" Gbit/s -> median {t['overlay_median_bps'] / 1e9:.2f} Gbit/s")
        L.append(f"   underlay {t['underlay']}: " + ", ".join(f"{x / 1e9:.2f}" for x in t["underlay_bps"])
                 + f" Gbit/s -> median {t['underlay_median_bps'] / 1e9:.2f} Gbit/s")
        if t.get("unfiltered_bps"):
            L.append(f"   no anti-spoofing {t['unfiltered']}: " + ", ".join(
                f"{x / 1e9:.2f}" for x in t["unfiltered_bps"]) + f" Gbit/s -> median "
                f"{t['unfiltered_median_bps'] / 1e9:.2f} Gbit/s (ratio {t['unfiltered_ratio']:.2f})")
            L.append(f"   anti-spoofing costs {t['anti_spoofing_cost'] * 100:.1f} % of the overlay's throughput")
        if t.get("handbuilt_bps"):
            L.append(f"   hand-built kernel path {t['handbuilt']}: " + ", ".join(
                f"{x / 1e9:.2f}" for x in t["handbuilt_bps"]) + f" Gbit/s -> median "
                f"{t['handbuilt_median_bps'] / 1e9:.2f} Gbit/s")
            L.append(f"   overlay/hand-built ratio {t['handbuilt_ratio']:.2f} (goal >= 0.97), without anti-spoofing "
                     f"{t['unfiltered_handbuilt_ratio']:.2f}")
        L.append(f"   overlay/underlay ratio {t['ratio']:.2f}   | Docker: {DOCKER['overlay_underlay_ratio']:.2f}")
        L.append("-" * 96)
    mi = r.get("micro")
    if mi:
        L.append("4. pyroute2 costs behind the profile (benchmarks/micro_netlink.py, medians):")
        L.append("   open a netlink socket in another namespace: " + ", ".join(
            f"{k} {v:.1f} ms" for k, v in mi["open_socket_ms"].items()))
        L.append("   brport show (one port) vs ports on the bridge: " + ", ".join(
            f"{k} ports {v:.1f} ms" for k, v in mi["brport_show_ms"].items()))
        L.append("   link get by name vs links in the namespace: " + ", ".join(
            f"{k} links {v:.2f} ms" for k, v in mi["link_get_ms"].items()))
        for call, by in (mi.get("transport_cpu_ms") or {}).items():
            L.append(f"   CPU per call, {call}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in by.items()))
        L.append("-" * 96)
    if r.get("peers"):
        import bench_peers
        L += bench_peers.report_lines(r["peers"])
        L.append("-" * 96)
    L.append(f"benchmark wall time {r['bench_wall_s']:.1f} s (lab start {r['lab_start_s']:.1f} s, "
             f"collection build {r['collection_build_s']:.1f} s)")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--keep", action="store_true", help="keep the lab's work directory (logs, playbook runs)")
    ap.add_argument("--collections-path", help="use this installed collections path instead of building one")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile run of the 50-endpoint attach")
    ap.add_argument("--only", choices=["attach", "bringup", "join", "iperf", "micro", "peers"], action="append",
                    help="run only these parts (iperf needs attach); default: all")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    if not shutil.which("iperf3"):
        sys.exit("iperf3 missing: apt-get install -y iperf3 (scripts/setup.sh installs it)")
    only = set(a.only or ["attach", "bringup", "join", "iperf", "micro", "peers"])
    if "iperf" in only:
        only.add("attach")

    t_start = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    r = {"machine": machine_info(), "docker_reference": DOCKER, "methods": METHODS}
    t0 = time.monotonic()
    cpath = a.collections_path or build_collection(work / "collection")
    r["collection_build_s"] = time.monotonic() - t0
    lab = Lab(work / "lab", HOSTS, collections_path=cpath)
    ok = False
    try:
        t0 = time.monotonic()
        lab.start()
        r["lab_start_s"] = time.monotonic() - t0
        log(f"lab up in {r['lab_start_s']:.1f}s ({work})")
        bench = Bench(lab, work, cpath, profile=not a.no_profile)
        if "bringup" in only:
            r["bringup"] = bench.bench_bringup()      # first: hosts as fresh as docker run's
        if "join" in only:
            r["join"] = bench.bench_join()
        if "attach" in only:
            r["attach50"] = bench.bench_attach()
        if "iperf" in only:
            r["throughput"] = bench.bench_iperf(r["attach50"]["server_ip"], r["attach50"]["client_ip"])
        if "micro" in only:
            r["micro"] = bench.micro()
        if "peers" in only:  # a lab of its own (10 hosts)
            import bench_peers
            log("5. peers service at scale (bench_peers.py, 10 hosts)")
            r["peers"] = bench_peers.bench(work, cpath)
        ok = True
    finally:
        lab.stop()
        r["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        r["cpu_share_end"] = round(cpu_share(), 2)
        r["bench_wall_s"] = time.monotonic() - t_start
        r["complete"] = ok
        if ok or r.get("attach50") or r.get("bringup") or r.get("peers"):
            (RESULTS / "latest.json").write_text(json.dumps(r, indent=1) + "\n")
        if ok and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept: {work}")
    print(report(r))
    log(f"figures written to {(RESULTS / 'latest.json').relative_to(REPO)}")
    return 0


METHODS = {
    "ansible_task_time": "bench_timing callback (benchmarks/callback): controller-side time from the task's "
                         "runner start on the host to its result; cross-checked as attach-playbook wall minus the "
                         "median wall of the same play with a meta: noop task",
    "module_own_time": "benchmarks/module_driver.py run with the venv python on the simulated host (host.run): "
                       "the module's main() called in-process as AnsiballZ would, timed with perf_counter; "
                       "imports timed separately",
    "bringup": "tests/integration/playbooks/overlay_seed.yml (Networks, Endpoints, Peers on both hosts), wall clock "
               "from before ansible-playbook until the first ping -c1 -W0.2 from docker1's container to "
               "docker0's answers; namespaces pre-created; fresh network per repeat, removed afterwards",
    "join": "the network exists on both hosts and the agent's peers sync (agent/peers.py) runs on docker1; "
            "overlay_endpoint's main() runs on docker0 (module_driver.py, no SSH: like the docker CLI talking to "
            "dockerd), then ping -c1 -W0.2 from docker1's container until it answers; wall clock from before the "
            "attach to the first answer",
    "throughput": "iperf3 -c -t 5 -J (single stream); receiver-side bits/s; server iperf3 -s -1 started per run",
    "peers": "benchmarks/bench_peers.py: 10 simulated hosts, one network, real endpoints (module_driver.py), the "
             "agent's peers service on 9; X attached/detached on h0; latency from the instant a blocking query of "
             "the benchmark on X's key wakes to each receiver's netlink RTM_NEWNEIGH/RTM_DELNEIGH for X's vxlan0 "
             "entry; CPU = utime+stime of each service (/proc/PID/stat) around each change; Consul requests = the "
             "dev agent's 'Request finished' log lines from the 9 receivers' addresses",
}


if __name__ == "__main__":
    sys.exit(main())
