# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""overlay-vxlan-agent: the host agent's command line (run by systemd, or by hand).

    PYTHONPATH=/opt/overlay-vxlan/lib CONSUL_HTTP_TOKEN=... \\
        python3 -m ansible_collections.overlay.vxlan.agent --host docker1 --vtep eth0 --consul-host 10.0.0.5

The Consul token comes from CONSUL_HTTP_TOKEN (the role writes it to a 0600 environment file),
never from the command line, where ``ps`` shows it. ``--consul-token`` exists for tests only.
"""
from __future__ import annotations

import argparse
import sys

from ansible_collections.overlay.vxlan.agent import peers
from ansible_collections.overlay.vxlan.plugins.module_utils import _gc


def parser():
    p = argparse.ArgumentParser(prog="overlay-vxlan-agent", description=__doc__.splitlines()[0])
    p.add_argument("--host", help="this host's name in the store (default: hostname)")
    p.add_argument("--vtep", help="underlay interface or address")
    p.add_argument("--consul-host")
    p.add_argument("--consul-port", type=int)
    p.add_argument("--consul-scheme", choices=["http", "https"])
    p.add_argument("--consul-token", help=argparse.SUPPRESS)
    p.add_argument("--consul-ca-cert")
    p.add_argument("--consul-prefix", default="overlay")
    p.add_argument("--consul-timeout", type=float, default=3,
                   help="seconds for each Consul request (default 3: a silent Consul is noticed fast)")
    p.add_argument("--wait", type=float, default=30,
                   help="seconds each blocking query waits; a full resync follows each (default 30)")
    p.add_argument("--no-peers", dest="peers", action="store_false",
                   help="do not keep FDB and neighbour entries in step with Consul")
    p.add_argument("--no-gc", dest="gc", action="store_false",
                   help="no garbage collection on the full passes of the peers sync")
    p.add_argument("--gc-grace", type=float, default=_gc.DEFAULT_GRACE,
                   help="seconds an orphan or a claim without a record waits before release (default %(default)s)")
    p.add_argument("--once", action="store_true", help="sync once (with garbage collection) and exit")
    return p


def params_of(args):
    """The agent's options as the engine's params dict (the same keys the modules take)."""
    return {"host": args.host, "vtep": args.vtep, "consul_host": args.consul_host, "consul_port": args.consul_port,
            "consul_scheme": args.consul_scheme, "consul_token": args.consul_token,
            "consul_ca_cert": args.consul_ca_cert, "consul_validate_certs": None,
            "consul_timeout": args.consul_timeout, "consul_prefix": args.consul_prefix, "gc_grace": args.gc_grace}


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.peers:
        sys.stderr.write("overlay-vxlan-agent: every component is switched off; nothing to do\n")
        return 2
    return peers.run(params_of(args), once=args.once, wait=args.wait, gc=args.gc)


if __name__ == "__main__":
    raise SystemExit(main())
