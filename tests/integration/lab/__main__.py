"""Command line for a long-lived lab (meant for scripts/lab.sh):

    PYTHONPATH=tests/integration .venv/bin/python -m lab up --workdir lab/work/ns
    ... -m lab status
    ... -m lab exec --workdir lab/work/ns docker0 -- ip -br addr
    ... -m lab playbook --workdir lab/work/ns site.yml -e '{"x": 1}'
    ... -m lab down --workdir lab/work/ns

`up` prints the lab's state as JSON (ips, inventory, ansible.cfg, PIDs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .core import Lab, destroy_state, find_state, list_states

DEFAULT_HOSTS = "consul=10.0.0.5,docker0=10.0.0.10,docker1=10.0.0.11"


def _state_or_die(workdir: str) -> dict:
    state = find_state(workdir)
    if state is None:
        sys.exit(f"no running lab with workdir {workdir}")
    return state


def _pid_of(state: dict, host: str) -> int:
    for role, name, pid, _starttime in state["procs"]:
        if role == "holder" and name == host:
            return pid
    sys.exit(f"no host {host!r} in lab {state['tag']}")


def _nsenter(state: dict, host: str) -> list[str]:
    # The controller only has its own netns; simulated hosts also mount+uts.
    flags = ["-n"] if host in ("controller", "internet", "underlay") else ["-m", "-n", "-u"]
    return ["nsenter", "-t", str(_pid_of(state, host)), *flags, "--"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a detached lab")
    up.add_argument("--workdir", required=True)
    up.add_argument("--hosts", default=DEFAULT_HOSTS, help="name=ip,name=ip,...")
    up.add_argument("--consul", default="consul", help="consul host name, '' for none")
    up.add_argument("--no-internet", action="store_true")
    up.add_argument("--prefix", default="10.0.0.0/24")
    up.add_argument("--collections-path")
    down = sub.add_parser("down", help="stop a lab started with up")
    down.add_argument("--workdir", required=True)
    sub.add_parser("status", help="list labs (JSON)")
    ex = sub.add_parser("exec", help="run a command inside a host (or 'controller')")
    ex.add_argument("--workdir", required=True)
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    pb = sub.add_parser("playbook", help="ansible-playbook in the controller netns")
    pb.add_argument("--workdir", required=True)
    pb.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)

    if a.cmd == "up":
        if find_state(a.workdir):
            sys.exit(f"a lab is already running in {a.workdir}")
        hosts = dict(item.split("=", 1) for item in a.hosts.split(",") if item)
        lab = Lab(a.workdir, hosts, prefix=a.prefix, consul=a.consul or None,
                  internet=not a.no_internet, collections_path=a.collections_path)
        lab.start()
        print(json.dumps(lab.detach(), indent=1))
    elif a.cmd == "down":
        state = find_state(a.workdir)
        if state:
            destroy_state(state)
    elif a.cmd == "status":
        print(json.dumps(list_states(), indent=1))
    elif a.cmd == "exec":
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        os.execvp("nsenter", _nsenter(_state_or_die(a.workdir), a.host) + (cmd or ["bash"]))
    elif a.cmd == "playbook":
        state = _state_or_die(a.workdir)
        args = a.args[1:] if a.args[:1] == ["--"] else a.args
        venv_bin = os.path.dirname(sys.executable)
        os.environ["ANSIBLE_CONFIG"] = state["ansible_cfg"]
        os.execvp("nsenter", _nsenter(state, "controller") +
                  [os.path.join(venv_bin, "ansible-playbook"), *args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
