"""Simulated multi-host lab (network/mount/uts namespaces + sshd + consul).

    from lab import Lab
    with Lab(tmpdir, {"consul": "10.0.0.5", "docker0": "10.0.0.10"}) as lab:
        lab.hosts["docker0"].run(["ip", "addr"])
        lab.ansible_playbook("site.yml", extra_vars={...}).assert_ok()

See core.py for the topology and its limits, __main__.py for the CLI.
"""
from .core import (CONSUL_BIN, INTERNET_IP, REPO, CommandError, Lab, LabError, SimHost,
                   cleanup_stale, destroy_state, find_state, list_states)
from .playbook import PlaybookResult

__all__ = ["CONSUL_BIN", "INTERNET_IP", "REPO", "CommandError", "Lab", "LabError", "PlaybookResult",
           "SimHost", "cleanup_stale", "destroy_state", "find_state", "list_states"]
