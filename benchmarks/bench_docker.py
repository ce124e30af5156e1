"""Docker with the overlay.vxlan plugin on two simulated hosts (real dockerd 20.10, real Consul):

- ``docker run`` on docker0 -> first answered ping from a container on docker1, timed from the
  instant ``docker run`` is issued (the ping starts as soon as it returns, every 10 ms, so the
  figure is not quantised by ARP's 1 s retry); Docker classic's overlay: 1.0 s;
- 50 sequential ``docker run -d`` on the overlay; Docker classic: 24.5 s.

Figures are printed, never asserted.  Run: ``benchmarks/run-docker.sh [--rounds N]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from lab import Lab  # noqa: E402
from lab.containers import Dockerd  # noqa: E402

SUBNET = "192.168.0.0/24"


def build_collection(dest: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    galaxy = str(REPO / ".venv" / "bin" / "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--force", "--output-path", str(dest / "build"), str(REPO)],
                   check=True, capture_output=True, env=env)
    tarball = next((dest / "build").glob("*.tar.gz"))
    subprocess.run([galaxy, "collection", "install", "--offline", "--force", "-p", str(dest / "collections"),
                    str(tarball)], check=True, capture_output=True, env=env)
    return str(dest / "collections")


def start_agent(lab, host, coll, dockerd):
    lab._spawn("agent", host.name, host.nsenter_cmd() + [
        "env", "PYTHONPATH=" + coll, str(lab.venv / "bin" / "python"), "-m", "ansible_collections.overlay.vxlan.agent",
        "--host", host.name, "--vtep", "eth0", "--consul-host", "10.0.0.5", "--docker-plugin",
        "--docker-host", dockerd.url, "--state-dir", str(dockerd.dir / "agent-state"), "--log-calls"])
    deadline = time.monotonic() + 20
    while host.run(["test", "-S", "/run/docker/plugins/overlay.vxlan.sock"], check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError("agent socket missing")
        time.sleep(0.05)


def call_times(lab, host):
    """The agent's --log-calls lines: {call: [ms, ...]}."""
    times = {}
    for line in lab._log_path("agent", host).read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "ms" and "Driver." in parts[-3]:
            times.setdefault(parts[-3].split(".", 1)[1], []).append(float(parts[-2]))
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="docker run -> first ping rounds (median printed)")
    ap.add_argument("--count", type=int, default=50, help="sequential docker runs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-docker-"))
    coll = build_collection(work)
    lab = Lab(work / "lab", {"consul": "10.0.0.5", "docker0": "10.0.0.10", "docker1": "10.0.0.11"},
              collections_path=coll)
    lab.start()
    try:
        d = {}
        for name in ("docker0", "docker1"):
            host = lab.hosts[name]
            d[name] = Dockerd(lab, host)
            start_agent(lab, host, coll, d[name])
            d[name].start()
            d[name].docker("network", "create", "-d", "overlay.vxlan", "--ipam-driver", "overlay.vxlan",
                           "--subnet", SUBNET, "demonet")
        d0, d1 = d["docker0"], d["docker1"]
        d1.docker("run", "-d", "--stop-timeout", "1", "--net", "demonet", "--name", "C1", "debian", "sleep", "3600")
        pid = d1.docker("inspect", "-f", "{{.State.Pid}}", "C1").stdout.strip()
        h1 = lab.hosts["docker1"]
        joins = []
        for r in range(args.rounds):
            ip = "192.168.0.%d" % (100 + r)
            t0 = time.monotonic()
            d0.docker("run", "-d", "--stop-timeout", "1", "--ip", ip, "--net", "demonet", "--name", "J%d" % r,
                      "debian", "sleep", "3600")
            ran = time.monotonic() - t0
            h1.run(["nsenter", "-t", pid, "-n", "ping", "-c", "1", "-i", "0.01", "-W", "0.05", "-w", "20", ip])
            joins.append((time.monotonic() - t0, ran))
            d0.docker("rm", "-f", "J%d" % r)

        def series(prefix, net):
            """``count`` sequential docker run -d on ``net`` from the same start (the containers of one
            series are removed before the next: runs get slower as containers accumulate)."""
            names = ["%s%d" % (prefix, n) for n in range(args.count)]
            t0 = time.monotonic()
            for name in names:
                d0.docker("run", "-d", "--stop-timeout", "1", "--net", net, "--name", name, "debian", "sleep", "3600")
            took = time.monotonic() - t0
            d0.docker("rm", "-f", *names)
            return took

        d0.docker("network", "create", "benchbr")  # Docker's own bridge driver, user-defined (embedded DNS too)
        fifty = series("S", "demonet")
        floor = series("N", "none")        # the same dockerd with no network driver at all: its own floor
        bridge = series("B", "benchbr")    # Docker's built-in driver: what dockerd itself costs per network
        print("docker run -> first ping from the other host: median %.2f s (docker run itself %.2f s; %s); "
              "Docker classic 1.0 s" % (statistics.median(j for j, _r in joins), statistics.median(r for _j, r in joins),
                                        ", ".join("%.2f" % j for j, _r in joins)))
        print("%d sequential docker run -d: %.1f s (%.2f s each); Docker classic 24.5 s for 50"
              % (args.count, fifty, fifty / args.count))
        print("%d sequential docker run -d --net none (dockerd alone, same lab): %.1f s (%.2f s each)"
              % (args.count, floor, floor / args.count))
        print("%d sequential docker run -d on a user-defined bridge network (Docker's own driver, same lab): "
              "%.1f s (%.2f s each)" % (args.count, bridge, bridge / args.count))
        print("plugin calls on docker0 (median ms, count): " + ", ".join(
            "%s %.0f (%d)" % (k, statistics.median(v), len(v)) for k, v in sorted(call_times(lab, "docker0").items())))
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
