"""The simulated hosts of the Molecule scenario "namespaces": up | down.

up starts consul, docker0 and docker1 (network namespaces with their own sshd and mount namespace,
tests/integration/lab; Consul runs on "consul", started by the lab) and leaves them running, then
writes lab/work/molecule/inventory.yml: each host's address, the lab's SSH key and a ProxyCommand
that enters the lab's network (the hosts are reachable only from the lab's controller namespace).
down stops them by their recorded PIDs. Both are idempotent.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from lab import Lab  # noqa: E402
from lab.core import destroy_state, find_state  # noqa: E402

WORKDIR = REPO / "lab" / "work" / "molecule"
INVENTORY = WORKDIR / "inventory.yml"
SEED_HOSTS = {"consul": "10.0.0.5", "docker0": "10.0.0.10", "docker1": "10.0.0.11"}


def _controller_pid(state):
    return next(pid for role, name, pid, _start in state["procs"] if role == "holder" and name == "controller")


def write_inventory(state, ssh_key):
    proxy = "nsenter --net=/proc/%d/ns/net nc %%h %%p" % _controller_pid(state)
    inventory = {"all": {
        "hosts": {name: {"ansible_host": ip} for name, ip in SEED_HOSTS.items()},
        "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": ssh_key,
            "ansible_ssh_common_args": "-o ProxyCommand=%s -o StrictHostKeyChecking=no "
                                       "-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR"
                                       % shlex.quote(proxy),
            "ansible_python_interpreter": str(REPO / ".venv" / "bin" / "python"),
        },
    }}
    INVENTORY.write_text(json.dumps(inventory, indent=2) + "\n")  # JSON is YAML


def up():
    state = find_state(WORKDIR / "lab")
    if state is None:
        WORKDIR.mkdir(parents=True, exist_ok=True)
        lab = Lab(WORKDIR / "lab", SEED_HOSTS, private_dirs=["/etc/sysctl.d"])
        lab.start()
        state = lab.detach()
        print("started the simulated hosts in %s" % lab.workdir)
    else:
        print("the simulated hosts were already running in %s" % state["workdir"])
    write_inventory(state, str(WORKDIR / "lab" / "ssh" / "id_ed25519"))
    return 0


def down():
    state = find_state(WORKDIR / "lab")
    if state is not None:
        destroy_state(state)
        print("stopped the simulated hosts in %s" % state["workdir"])
    INVENTORY.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    commands = {"up": up, "down": down}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: molecule_lab.py up|down")
    sys.exit(commands[sys.argv[1]]())
