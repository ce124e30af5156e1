"""The seed's walkthrough on three simulated hosts (network namespaces + sshd), driven by site.yml.

Used by scripts/lab.sh --namespaces: fast (seconds), no VM image needed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from lab import Lab  # noqa: E402

SEED_HOSTS = {"consul": "10.0.0.5", "docker0": "10.0.0.10", "docker1": "10.0.0.11"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=str(REPO / "lab" / "work" / "namespaces"))
    parser.add_argument("--collections-path", required=True)
    parser.add_argument("--keep", action="store_true", help="leave the lab running (stop it with --down)")
    parser.add_argument("--json", action="store_true", help="the report as JSON instead of the walkthrough")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    report = workdir.parent / "walkthrough.json"
    workdir.mkdir(parents=True, exist_ok=True)
    lab = Lab(workdir / ("lab-%d" % int(time.time())), SEED_HOSTS, collections_path=args.collections_path,
              private_dirs=["/etc/sysctl.d"])
    log = sys.stderr if args.json else sys.stdout  # --json: stdout carries only the JSON
    rc = 1
    try:
        t0 = time.monotonic()
        lab.start()
        print("lab: 3 simulated hosts up in %.1f s (consul 10.0.0.5, docker0 10.0.0.10, docker1 10.0.0.11)"
              % (time.monotonic() - t0), file=log, flush=True)
        common = ["-i", str(REPO / "playbooks" / "inventory" / "seed.yml"),
                  "-e", "@" + str(REPO / "playbooks" / "inventory" / "namespace-lab.yml"),
                  "-e", "overlay_python=" + str(REPO / ".venv" / "bin" / "python")]
        steps = (("site.yml converged", "site.yml", []), ("site.yml again (idempotence)", "site.yml", []),
                 ("walkthrough gathered", "walkthrough.yml", ["-e", "walkthrough_out=" + str(report)]))
        for name, playbook, extra in steps:
            t0 = time.monotonic()
            result = lab.ansible_playbook(str(REPO / "playbooks" / playbook), args=common + extra)
            took = time.monotonic() - t0
            print("lab: %s: rc=%d, %d changed, %.1f s" % (name, result.rc, result.changed_count(), took),
                  file=log, flush=True)
            if result.rc != 0:
                print(result.stdout[-4000:])
                print(result.stderr[-3000:], file=sys.stderr)
                return 1
        cmd = [sys.executable, str(REPO / "scripts" / "lab_report.py"), str(report),
               "--collections-path", args.collections_path] + (["--json"] if args.json else [])
        if subprocess.run(cmd, check=False).returncode != 0:
            return 1
        rc = 0
    finally:
        if args.keep and rc == 0:
            print("\nlab kept running in %s; stop it with: scripts/lab.sh --down" % lab.workdir, file=log)
            lab.detach()
        else:
            lab.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
