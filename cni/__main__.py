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
``gateway_bridge``, ``gateway_subnet``. ADD attaches through the same engine call as the
overlay_endpoint module (``_endpoint.run``): the container gets eth0 on the overlay and, unless the
network is internal, eth1 on the gateway bridge with the default route. ``--ip`` arrives as
CNI_ARGS ``IP=``. DEL detaches; a repeated DEL, or one whose namespace is gone, succeeds.
"""
from __future__ import annotations

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


def result_of(version, out, netns):
    """The CNI result of an attach: interfaces with their MAC, IPs with their interface index,
    the default route through the gateway bridge, no DNS of its own yet."""
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
    return {"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes, "dns": {}}


def _router(endpoint, prefix):
    import ipaddress
    net = ipaddress.ip_network("%s/%s" % (endpoint["gateway_ip"], prefix), strict=False)
    return str(next(net.hosts()))


def handle(command, config, env):
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
            out = _endpoint.run(dict(params, state="present"), False, _run_command)
            return result_of(version, out, params["namespace"])
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


def main(stdin=None, stdout=None, environ=None):
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
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
        out = handle(env.get("CNI_COMMAND", ""), config, env)
        if out is not None:
            json.dump(out, stdout)
        return 0
    except CniError as e:
        json.dump({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details}, stdout)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
