# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep vxlan0's peers in step with Consul between Ansible runs: the role of Docker's serf events.

A long-running loop (the overlay-vxlan-peers service that the overlay_host role installs) holds a
Consul blocking query on the endpoints prefix; whenever it changes, every network that has a
namespace on this host gets its FDB and neighbour entries synced with the same code the modules use.

    python -m ansible_collections.overlay.vxlan.plugins.module_utils._watch --host docker1 --vtep eth0
"""
from __future__ import annotations

import argparse
import sys
import time

from ansible_collections.overlay.vxlan.plugins.module_utils import _antispoof, _consul, _netns, _overlay_ns, _peers, _keys, _underlay
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError


def sync_once(nl, store, layout, underlay):
    """Sync every network present on this host. Returns the actions taken."""
    actions = []
    tree = store.get_tree(layout.root)
    networks = [v for k, (v, index) in tree.items() if k.startswith(layout.networks()) and v]
    for network in networks:
        vx_index = _overlay_ns.vxlan_index(nl, network)
        if vx_index is None:
            continue  # not on this host (yet): overlay_network builds it
        prefix = layout.endpoints(network["id"])
        endpoints = [v for k, (v, index) in tree.items() if k.startswith(prefix) and v]
        ipr = nl.get(_overlay_ns.namespace(network))
        actions += ["%s: %s" % (network["name"], a)
                    for a in _peers.sync(ipr, vx_index, _peers.desired(endpoints, underlay.vtep), apply=True)]
        actions += ["%s: %s" % (network["name"], a)
                    for a in _antispoof.reconcile(nl, network, endpoints, underlay.vtep, apply=True)]
    return actions


def _log(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(params, log=_log, once=False, wait="60s"):
    settings = _consul.connection_settings(params)
    store = _consul.Consul(settings)
    layout = _keys.Layout(settings["prefix"])
    index = 0
    backoff = 0.5
    while True:
        try:
            with _netns.Netlink() as nl:
                underlay = _underlay.local(nl.get(_netns.resolve(None, None)), params, settings["host"])
                for action in sync_once(nl, store, layout, underlay):
                    log(action)
            if once:
                return 0
            new_index = store.wait(layout.root, index, wait)
            index = new_index if new_index >= index else 0  # the index went back: Consul was rebuilt
            backoff = 0.5
        except (OverlayError, OSError) as e:
            if once:
                raise
            log("error (retrying in %.1fs): %s" % (backoff, e))
            time.sleep(backoff)
            backoff = min(backoff * 2, 15)
            index = 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="this host's name in the store (default: hostname)")
    parser.add_argument("--vtep", help="underlay interface or address")
    parser.add_argument("--consul-host")
    parser.add_argument("--consul-port", type=int)
    parser.add_argument("--consul-scheme", choices=["http", "https"])
    parser.add_argument("--consul-token")
    parser.add_argument("--consul-ca-cert")
    parser.add_argument("--consul-prefix", default="overlay")
    parser.add_argument("--once", action="store_true", help="sync once and exit")
    args = parser.parse_args(argv)
    params = {"host": args.host, "vtep": args.vtep, "consul_host": args.consul_host, "consul_port": args.consul_port,
              "consul_scheme": args.consul_scheme, "consul_token": args.consul_token,
              "consul_ca_cert": args.consul_ca_cert, "consul_validate_certs": None, "consul_timeout": 10,
              "consul_prefix": args.consul_prefix}
    return run(params, once=args.once)


if __name__ == "__main__":
    raise SystemExit(main())
