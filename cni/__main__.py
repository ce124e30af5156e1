# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CNI plugin ``overlay-vxlan`` (spec 1.0.0 for Podman 4.3's libcni; GC and STATUS of 1.1.0).

A runtime runs it with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS in the
environment and the network's configuration on stdin. The executable in the CNI plugin directory
is a two-line wrapper (docs/cni.md):

    #!/bin/sh
    cd / && PYTHONPATH=/opt/overlay-vxlan/lib exec /opt/overlay-vxlan/venv/bin/python -m ansible_collections.overlay.vxlan.cni

Configuration (one plugin of a conflist): ``network`` (the overlay network's name, default the
conflist's ``name``), ``consul_host``, ``consul_port``, ``consul_scheme``, ``consul_prefix``,
``consul_token_file`` (a root-only file holding the token), ``host``, ``vtep``,
``gateway_bridge``, ``gateway_subnet``, ``dns_nameservers`` and ``dns_search`` (lists: the
result's ``dns``, docs/names.md). ADD attaches through the same engine call as the overlay_endpoint
module (``_endpoint.run``): the container gets eth0 on the overlay and, unless the network is
internal, eth1 on the gateway bridge with the default route. ``--ip`` arrives as CNI_ARGS ``IP=``.
The container's name (CNI_ARGS ``K8S_POD_NAME``) and the runtime's network aliases
(``runtimeConfig.aliases`` with the ``aliases`` capability; declare ``ips`` too, docs/cni.md)
become the record's ``aliases``, in the transaction that creates it: the host agent's names
service answers them on every host. DEL detaches; a repeated DEL, or one whose namespace is gone,
succeeds. Only the result goes to stdout; notes (a name that is no DNS name, left out) go to stderr.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

SUPPORTED = ["0.4.0", "1.0.0", "1.1.0"]
ERR_CONFIG, ERR_ARGS, ERR_TRY_AGAIN, ERR_UNAVAILABLE, ERR_PLUGIN = 7, 4, 11, 50, 100


class CniError(Exception):
    def __init__(self, code, msg, details=""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def cni_args(text):
    """CNI_ARGS ``K=V;K2=V2`` as a dict."""
    out = {}
    for part in (text or "").split(";"):
        key, sep, value = part.partition("=")
        if sep and key:
            out[key.strip()] = value.strip()
    return out


def names_of(config, env, warn):
    """The container's names for the names service: CNI_ARGS ``K8S_POD_NAME`` (Podman's container
    name, a Kubernetes pod's name) and, when the conflist declares the ``aliases`` capability,
    ``runtimeConfig.aliases[<the conflist's name>]`` (Podman's ``--network-alias`` values and the short
    container id). A name that is no DNS name is left out with a note on stderr: it never fails the
    attach. None when there are none (the record keeps what it has)."""
    from ansible_collections.overlay.vxlan.plugins.module_utils import _validate
    wanted = []
    pod = cni_args(env.get("CNI_ARGS")).get("K8S_POD_NAME")
    if pod:
        wanted.append(pod)
    runtime = config.get("runtimeConfig")
    aliases = runtime.get("aliases") if isinstance(runtime, dict) else None
    if isinstance(aliases, dict):
        given = aliases.get(config.get("name") or config.get("network"))
        wanted += given if isinstance(given, list) else []
    names = []
    for name in wanted:
        if _validate.is_dns_name(name):
            names.append(name)
        else:
            warn("overlay-vxlan: container %s: %r is not a DNS name (dot-separated labels of ASCII letters, digits, "
                 "'_' or '-'); the names service will not answer it" % (env.get("CNI_CONTAINERID", "")[:12], name))
    return sorted(set(names)) or None


def dns_of(config):
    """(nameservers, search) from the configuration's ``dns_nameservers`` and ``dns_search``. A
    loopback nameserver is refused: in the container's resolv.conf it is the container's own."""
    from ansible_collections.overlay.vxlan.plugins.module_utils import _validate
    servers, search = config.get("dns_nameservers") or [], config.get("dns_search") or []
    if not isinstance(servers, list):
        raise CniError(ERR_CONFIG, "dns_nameservers: must be a list of IP addresses, not %r" % (servers,))
    for server in servers:
        try:
            address = ipaddress.ip_address(server)
        except ValueError:
            raise CniError(ERR_CONFIG, "dns_nameservers: %r is not an IP address" % (server,))
        if address.is_loopback:
            raise CniError(ERR_CONFIG, "dns_nameservers: %s is a loopback address, which in a container's "
                           "resolv.conf is the container's own; give one the container reaches (the gateway "
                           "bridge's address, docs/names.md)" % server)
    if not isinstance(search, list) or not all(_validate.is_dns_name(d) for d in search):
        raise CniError(ERR_CONFIG, "dns_search: must be a list of DNS names, not %r" % (search,))
    return list(servers), list(search)


def runtime_ip(config):
    """The address of ``runtimeConfig.ips`` (the ``ips`` capability, declared so that Podman 4.3 does
    not overwrite the conflist's capabilities with its own), or None. One address per endpoint."""
    runtime = config.get("runtimeConfig")
    ips = runtime.get("ips") if isinstance(runtime, dict) else None
    if not ips:
        return None
    if not isinstance(ips, list) or len(ips) != 1 or not isinstance(ips[0], str):
        raise CniError(ERR_ARGS, "runtimeConfig.ips: an endpoint has one IPv4 address, not %r" % (ips,))
    return ips[0].split("/")[0]


def engine_params(config, env):
    """The engine's params (the keys the overlay_endpoint module takes) from the CNI call."""
    token = None
    if config.get("consul_token_file"):
        try:
            with open(config["consul_token_file"]) as f:
                token = f.read().strip() or None
        except OSError as e:
            raise CniError(ERR_CONFIG, "consul_token_file: cannot read %s: %s"
                           % (config["consul_token_file"], e.strerror))
    network = config.get("network") or config.get("name")
    if not network:
        raise CniError(ERR_CONFIG, "network: the configuration names no overlay network")
    container = env.get("CNI_CONTAINERID") or ""
    if not container:
        raise CniError(ERR_ARGS, "CNI_CONTAINERID is empty")
    args = cni_args(env.get("CNI_ARGS"))
    return {
        "network": network, "name": container, "namespace": env.get("CNI_NETNS") or None,
        "ifname": env.get("CNI_IFNAME") or "eth0", "ip": args.get("IP") or None, "mac": args.get("MAC") or None,
        "gateway_ifname": config.get("gateway_ifname"),
        "host": config.get("host"), "vtep": config.get("vtep"),
        "consul_host": config.get("consul_host"), "consul_port": config.get("consul_port"),
        "consul_scheme": config.get("consul_scheme"), "consul_token": token,
        "consul_ca_cert": config.get("consul_ca_cert"), "consul_validate_certs": None,
        "consul_timeout": config.get("consul_timeout"), "consul_prefix": config.get("consul_prefix") or "overlay",
        "gateway_bridge": config.get("gateway_bridge"), "gateway_subnet": config.get("gateway_subnet"),
        "gateway_block_host": config.get("gateway_block_host"), "default_route": True, "force": False,
    }


def _run_command(args, check_rc=False):
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def result_of(version, out, netns, dns=((), ())):
    """The CNI result of an attach: interfaces with their MAC, IPs with their interface index,
    the default route through the gateway bridge, and ``dns`` (nameservers, search) when the
    container has that route (an internal network's endpoint reaches no resolver: ``{}``)."""
    endpoint, network = out["endpoints"][0], out["network"]
    interfaces = [{"name": endpoint["ifname"], "mac": endpoint["mac"], "mtu": network["mtu"], "sandbox": netns}]
    ips = [{"address": "%s/%d" % (endpoint["ip"], endpoint["prefixlen"]), "interface": 0}]
    routes = []
    if endpoint.get("gateway_ip"):
        gw_if = (endpoint.get("interfaces") or {}).get(endpoint.get("gateway_ifname")) or {}
        interfaces.append({"name": endpoint["gateway_ifname"], "mac": gw_if.get("mac"), "sandbox": netns})
        address = next((a for a in gw_if.get("addresses", []) if ":" not in a), None)
        prefix = address.split("/")[1] if address else "16"
        router = _router(endpoint, prefix)
        ips.append({"address": "%s/%s" % (endpoint["gateway_ip"], prefix), "gateway": router, "interface": 1})
        routes.append({"dst": "0.0.0.0/0", "gw": router})
    servers, search = dns
    resolver = {}
    if servers and routes:
        resolver["nameservers"] = list(servers)
        if search:
            resolver["search"] = list(search)
    return {"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes, "dns": resolver}


def _router(endpoint, prefix):
    import ipaddress
    net = ipaddress.ip_network("%s/%s" % (endpoint["gateway_ip"], prefix), strict=False)
    return str(next(net.hosts()))


def handle(command, config, env, warn=None):
    warn = warn or (lambda text: None)
    version = config.get("cniVersion") or "1.0.0"
    if command == "VERSION":
        return {"cniVersion": version, "supportedVersions": SUPPORTED}
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _endpoint, _gc, _info  # noqa: F401
    from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError
    if command == "STATUS":
        params = engine_params(config, dict(env, CNI_CONTAINERID="status"))
        store = _consul.Consul(_consul.connection_settings(params))
        if not store.alive():
            raise CniError(ERR_UNAVAILABLE, "Consul at %s does not answer" % store.url)
        return None
    if command == "GC":
        return None  # the host agent's garbage collection releases endpoints whose namespace is gone
    params = engine_params(config, env)
    try:
        if command == "ADD":
            if not params["namespace"]:
                raise CniError(ERR_ARGS, "CNI_NETNS is empty")
            dns = dns_of(config)  # a bad configuration attaches nothing
            out = _endpoint.run(dict(params, state="present", ip=params["ip"] or runtime_ip(config),
                                     aliases=names_of(config, env, warn)), False, _run_command)
            return result_of(version, out, params["namespace"], dns)
        if command == "DEL":
            try:
                _endpoint.run(dict(params, state="absent", namespace=None), False, _run_command)
            except OverlayError as e:
                if "no overlay network named" not in e.message:
                    raise
            return None
        if command == "CHECK":
            out = _endpoint.run(dict(params, state="present"), True, _run_command)
            if out["actions"]:
                raise CniError(ERR_PLUGIN, "the endpoint differs from its record: %s" % "; ".join(out["actions"]))
            return None
    except OverlayError as e:
        code = ERR_UNAVAILABLE if e.field == "consul_host" else ERR_PLUGIN
        raise CniError(code, e.message if e.field is None else "%s: %s" % (e.field, e.message))
    raise CniError(ERR_ARGS, "CNI_COMMAND %r is not one of ADD, DEL, CHECK, VERSION, GC, STATUS" % command)


def main(stdin=None, stdout=None, environ=None, stderr=None):
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    env = dict(os.environ if environ is None else environ)
    version = "1.0.0"
    try:
        raw = stdin.read()
        try:
            config = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise CniError(ERR_CONFIG, "the network configuration is not JSON: %s" % e)
        if not isinstance(config, dict):
            raise CniError(ERR_CONFIG, "the network configuration is not a JSON object")
        version = config.get("cniVersion") or version
        out = handle(env.get("CNI_COMMAND", ""), config, env, warn=lambda text: stderr.write(text + "\n"))
        if out is not None:
            json.dump(out, stdout)
        return 0
    except CniError as e:
        json.dump({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details}, stdout)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
