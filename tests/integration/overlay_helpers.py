"""Shared helpers for the overlay tests: the seed's variables, Consul and kernel snapshots."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
DEMONET = {"name": "demonet", "subnet": "192.168.0.0/24"}


def seed_vars(networks=None, endpoints=None):
    return {"networks": networks or [DEMONET], "endpoints": endpoints or {}}


def together(*calls):
    """Run each call in a thread of its own, all started before any is waited for (the races the
    tests provoke); returns their results in order and re-raises the first exception."""
    import threading
    results, errors = [None] * len(calls), [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results


def kv(lab, prefix="overlay/", marks=False):
    """Every key under prefix with its decoded JSON value. The change marks (``changes/``: set by
    every write of an endpoint record, whatever became of it: a log of writes, not state) only with
    ``marks``; test_store_protocol checks them."""
    _index, items = lab.consul_client().kv.get(prefix, recurse=True)
    return {i["Key"]: json.loads(i["Value"]) if i["Value"] else None for i in items or ()
            if marks or "/changes/" not in i["Key"]}


def ns_exec(host, ns, cmd, check=False):
    return host.run(["ip", "netns", "exec", ns] + cmd, check=check)


def ping(host, ns, target, count=1, wait=2):
    cmd = ["ping", "-c", str(count), "-W", str(wait), target]
    return (ns_exec(host, ns, cmd) if ns else host.run(cmd, check=False)).returncode == 0


def ping_eventually(host, ns, target, tries=5):
    # The very first packet may wait for ARP on a fresh bridge; a few tries are enough.
    return any(ping(host, ns, target, wait=1) for _try in range(tries))


def kernel_snapshot(host):
    """Links (with details), addresses, routes, FDB and neighbours of a host and all its namespaces."""
    script = ("for n in '' $(ip netns list | cut -d' ' -f1); do echo \"== $n\"; "
              "p=; [ -n \"$n\" ] && p=\"ip netns exec $n\"; "
              "$p ip -o -d link show | sed 's/ promiscuity [0-9]*//;s/ allmulti [0-9]*//'; $p ip -o -4 addr show; $p ip -o -6 addr show scope global; "
              "$p ip route show; $p bridge fdb show | grep -v 'master br0\\|master docker_gwbridge' ; "
              "$p ip neigh show nud permanent; done")
    # Bridge timers tick on their own, and a link's operational state ("state UP", next to the
    # <UP,LOWER_UP> flags, which stay) follows its ports' carrier through the kernel's link watch,
    # up to a second later: a snapshot right after an attach can catch a bridge still UNKNOWN.
    # Everything else must hold still.
    out = re.sub(r"\b\w+_timer +[\d.]+", "", host.run(["sh", "-c", script]).stdout)
    return re.sub(r" state (UP|DOWN|UNKNOWN|LOWERLAYERDOWN|DORMANT) mode ", " mode ", out)


def overlay_ns(host):
    names = [line.split()[0] for line in host.run(["ip", "netns", "list"]).stdout.splitlines()]
    return [n for n in names if n.startswith("ovl-")]


def collection_import_path(collection_path):
    if collection_path not in sys.path:
        sys.path.insert(0, collection_path)


def write_records(lab, collection_path, writes, prefix="overlay"):
    """Write keys straight into Consul as another host's run would: ``writes`` {key: value (bytes:
    written as they are, not as JSON), or None to delete} in one transaction of the collection's
    client, which also sets the change marks of the endpoint records among them (what the agents'
    change passes read)."""
    collection_import_path(collection_path)
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul
    host, port = lab._consul_forwarder().address
    store = _consul.Consul({"host": host, "port": port, "scheme": "http", "token": None, "ca_cert": None,
                            "verify": True, "timeout": 10, "prefix": prefix})

    def op(key, value):
        if isinstance(value, bytes):  # not JSON: written as it is
            return {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value).decode()}}
        return _consul.op_delete(key) if value is None else _consul.op_set(key, value)
    store.commit([op(k, v) for k, v in writes.items()])


def run_ok(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True)
