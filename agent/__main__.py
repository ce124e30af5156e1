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

import signal
import threading

from ansible_collections.overlay.vxlan.agent import docker, names, peers
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
    p.add_argument("--docker-plugin", action="store_true",
                   help="serve Docker's NetworkDriver and IpamDriver (driver and IPAM name overlay.vxlan)")
    p.add_argument("--docker-socket", default=docker.DEFAULT_SOCKET, help="the plugin's socket (default %(default)s)")
    p.add_argument("--docker-host", default="unix:///run/docker.sock",
                   help="Docker's API, read for network names (default %(default)s)")
    p.add_argument("--state-dir", default=docker.DEFAULT_STATE_DIR,
                   help="where this host's Docker network map is kept (default %(default)s)")
    p.add_argument("--log-calls", action="store_true",
                   help="log every Docker plugin call answered without an error with its duration "
                        "(where a docker run spends its time; refusals are logged as before)")
    p.add_argument("--dns-listen", action="append", default=[], metavar="ADDRESS:PORT",
                   help="serve the cluster's endpoint names on this UDP address (repeatable); none: no names")
    p.add_argument("--dns-upstream", action="append", default=None, metavar="ADDRESS[:PORT]",
                   help="where other names are relayed (repeatable; default the nameservers of /etc/resolv.conf)")
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
    params = params_of(args)
    if not (args.peers or args.docker_plugin or args.dns_listen):
        sys.stderr.write("overlay-vxlan-agent: every component is switched off; nothing to do\n")
        return 2
    if args.once:
        return peers.run(params, once=True, gc=args.gc)
    server = None
    if args.docker_plugin:
        plugin = docker.Plugin(params, state_dir=args.state_dir, docker_host=args.docker_host, log=peers._log,
                               gc=args.gc, log_calls=args.log_calls, peers=args.peers)
        server = docker.serve(plugin, args.docker_socket)
        peers._log("docker plugin listening on %s" % args.docker_socket)
    if args.dns_listen:
        upstreams = None
        if args.dns_upstream is not None:
            upstreams = [(u.rsplit(":", 1)[0], int(u.rsplit(":", 1)[1])) if u.count(":") == 1 else (u, 53)
                         for u in args.dns_upstream]
        names.serve(params, args.dns_listen, upstreams, log=peers._log)
        peers._log("names served on %s" % ", ".join(args.dns_listen))
    stop = threading.Event()
    if args.docker_plugin and args.gc:
        # Lost DeleteNetwork calls (the agent down during `docker network rm`), once Docker answers.
        every = max(1.0, min(60.0, args.gc_grace))
        threading.Thread(target=plugin.reconcile_forever, args=(stop, every), daemon=True).start()

    def on_signal(signum, frame):
        stop.set()
        if server is not None:  # no stale socket: dockerd would wait on it for 15 s
            docker.close(server, args.docker_socket)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.peers:
            return peers.run(params, wait=args.wait, gc=args.gc)
        while not stop.wait(3600):
            pass
        return 0
    finally:
        if server is not None and not stop.is_set():
            docker.close(server, args.docker_socket)


if __name__ == "__main__":
    raise SystemExit(main())
