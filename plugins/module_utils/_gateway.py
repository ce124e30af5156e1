# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway bridge (Docker's docker_gwbridge): a local bridge whose ports are isolated from
each other (Docker's icc=false), masquerade for traffic leaving the host, and ip_forward on.

Port isolation is the bridge's own IFLA_BRPORT_ISOLATED flag, set through netlink on every port,
so it holds without br_netfilter. NAT has no netlink interface we can rely on here: it is the one
place that runs a command, iptables, through the runner the module gives us."""
from __future__ import annotations

import ipaddress

from ansible_collections.overlay.vxlan.plugins.module_utils import _firewall, _links, _netns
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

DEFAULT_NAME = "docker_gwbridge"
DEFAULT_SUBNET = "172.18.0.0/16"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"

GATEWAY_ARGS = dict(
    gateway_bridge=dict(type="str", default=DEFAULT_NAME),
    gateway_subnet=dict(type="str", default=DEFAULT_SUBNET),
)


class Gateway:
    def __init__(self, name, subnet, block_host=False):
        self.name = name
        self.block_host = bool(block_host)  # endpoints may not open anything on the host's own addresses
        self.subnet = ipaddress.ip_network(subnet)
        self.address = ipaddress.ip_interface("%s/%d" % (next(self.subnet.hosts()), self.subnet.prefixlen))

    @property
    def router(self):
        return str(self.address.ip)


def from_params(params):
    from ansible_collections.overlay.vxlan.plugins.module_utils import _validate
    name = _validate.ifname(params.get("gateway_bridge") or DEFAULT_NAME, "gateway_bridge")
    subnet = _validate.subnet(params.get("gateway_subnet") or DEFAULT_SUBNET, "gateway_subnet")
    block = params.get("gateway_block_host")
    if block is not None and not isinstance(block, bool):
        raise OverlayError("gateway_block_host must be true or false, not %r" % (block,), "gateway_block_host")
    return Gateway(name, subnet, bool(block))


def nat_rules(gw):
    """(table, chain, rule) that give Docker's behaviour; each is checked with -C before -A."""
    sub, br = str(gw.subnet), gw.name
    return [
        ("nat", "POSTROUTING", ["-s", sub, "!", "-o", br, "-j", "MASQUERADE"]),
        ("filter", "FORWARD", ["-i", br, "!", "-o", br, "-j", "ACCEPT"]),
        ("filter", "FORWARD", ["-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
    ]


def ensure(nl, gw, run_command, apply, drop=()):
    """Bridge with its address, up; forwarding on; NAT rules in place. Returns actions. Other
    addresses stay, but those in ``drop`` (a replaced Docker network's) go."""
    host = _netns.resolve(None, None)
    ipr = nl.get(host)
    actions = []
    br = _links.find(ipr, gw.name)
    if br is not None and _links.kind(br) != "bridge":
        raise OverlayError("%s exists but is a %s device, not a bridge" % (gw.name, _links.kind(br) or "plain"),
                           "gateway_bridge")
    if br is None:
        actions.append("create gateway bridge %s" % gw.name)
        if apply:
            ipr.link("add", ifname=gw.name, kind="bridge")
            br = _links.find(ipr, gw.name)
    if br is not None:
        # Its address is added; other addresses are left alone. On a Docker host the bridge is also
        # the docker_gwbridge network of Docker's own containers, which gives it an address of its
        # own pool (172.19.0.1/16 next to ours, say): removing that would cut them off, and Docker
        # would give it back, so every run would change something.
        others = [a for a in _links.addresses(ipr, br["index"]) if a != gw.address and a not in drop]
        spec = _links.LinkSpec(host, gw.name, "gateway_bridge", addresses=others + [gw.address], up=True)
        actions += _links.ensure_attributes(ipr, br, spec, apply)
    with open(IP_FORWARD) as f:
        forwarding = f.read().strip() == "1"
    if not forwarding:
        actions.append("sysctl net.ipv4.ip_forward=1")
        if apply:
            with open(IP_FORWARD, "w") as f:
                f.write("1\n")
    # No hairpin forwarding (icc bypass via the router address), host addresses blocked on request,
    # and VXLAN from this bridge dropped: nftables at priorities before iptables' chains.
    actions += _firewall.ensure_gateway(gw, gw.block_host, apply)
    for table, chain, rule in nat_rules(gw):
        rc = run_command(["iptables", "-w", "-t", table, "-C", chain] + rule)[0]
        if rc != 0:
            actions.append("iptables -t %s -A %s %s" % (table, chain, " ".join(rule)))
            if apply:
                rc, out, err = run_command(["iptables", "-w", "-t", table, "-A", chain] + rule)
                if rc != 0:
                    raise OverlayError("iptables could not add the %s rule for %s: %s" % (table, gw.name, err.strip()))
    return actions


def diff(nl, gw, run_command, apply, br, drop=()):
    """``ensure`` with a diff field by field, the way --diff shows it: the bridge as it was (``br``,
    as _links.view showed it before the run changed anything: exists, addresses, up; then forwarding,
    NAT rules, host addresses blocked) and as the run leaves it (in check mode: as it would).
    Returns (actions, {"before": ..., "after": ...})."""
    blocked = _firewall.gateway_blocked(gw.name)
    actions = ensure(nl, gw, run_command, apply, drop)
    before = {"exists": br is not None, "addresses": br["addresses"] if br else [],
              "up": bool(br) and br["state"] == "up",
              # ensure() names exactly what was missing: a sysctl line, an iptables line per missing rule.
              "ip_forward": not any(a.startswith("sysctl net.ipv4.ip_forward") for a in actions),
              "nat": not any(a.startswith("iptables ") for a in actions),
              "block_host": blocked}
    after = {"exists": True, "addresses": [str(gw.address)], "up": True, "ip_forward": True, "nat": True,
             "block_host": gw.block_host}
    if br and set(br["addresses"]) - {str(gw.address)}:
        after["addresses"] = sorted((set(br["addresses"]) - {str(a) for a in drop}) | {str(gw.address)})  # others stay
    return actions, {"before": {"bridge": before}, "after": {"bridge": after, "actions": actions}}


def run(params, check_mode, run_command):
    """overlay_gateway's whole run: with ``docker``, Docker's own docker_gwbridge network on the bridge
    first (_dockernet.ensure_gwbridge: Docker replacing its network deletes and makes the bridge
    device), then the bridge itself (diff()). Docker is asked before anything changes, so a dead
    socket changes nothing."""
    gw = from_params({"gateway_bridge": params["name"], "gateway_subnet": params["subnet"],
                      "gateway_block_host": params["block_host"]})
    docker = None
    if params.get("docker"):
        from ansible_collections.overlay.vxlan.plugins.module_utils import _dockernet
        docker = _dockernet.Docker(params.get("docker_socket"))
        have = docker.gwbridge()   # read first: an unreachable Docker is refused before anything changes
    _netns.require_pyroute2()
    _netns.require_root()
    apply = not check_mode
    with _netns.Netlink() as nl:
        ipr = nl.get(_netns.resolve(None, None))
        before = _links.view(ipr, _links.find(ipr, gw.name), None)
        docker_actions, warnings, docker_diff, d_before = [], [], None, None
        if docker is not None:
            def ports():  # this host's endpoints on the bridge: read only when a replacement is in question
                return [] if before is None else sorted(m.get_attr("IFLA_IFNAME")
                                                        for m in _links.ports(ipr, before["ifindex"]))
            docker_actions, warnings, d_before, d_after = _dockernet.ensure_gwbridge(
                docker, have, gw.name, gw.subnet, gw.router, apply, ports=ports)
            docker_diff = (d_before, d_after)
            if docker_actions and apply:  # Docker changed the bridge (or deleted and made it): read it afresh
                nl.wrote()
                nl.links_moved()
        # The address Docker gave the bridge for the network it no longer has (a replaced one).
        drop = []
        if docker_actions and d_before and d_before["gateway"] and d_before["subnet"]:
            drop.append(ipaddress.ip_interface("%s/%s" % (d_before["gateway"], d_before["subnet"].split("/")[1])))
        actions, diff_ = diff(nl, gw, run_command, apply, before, drop)
        bridge = _links.view(ipr, _links.find(ipr, gw.name), None)
    result = {"actions": docker_actions + actions, "bridge": bridge, "diff": diff_, "docker_gwbridge": None}
    if docker_diff is not None:
        diff_["before"]["docker_gwbridge"], diff_["after"]["docker_gwbridge"] = docker_diff
        diff_["after"]["actions"] = result["actions"]
        result.update(docker_gwbridge=docker_diff[1], warnings=warnings)
    result["changed"] = bool(result["actions"])
    return result


def isolate_port(ipr, msg, apply, where):
    """No traffic between the bridge's ports: each port is isolated. The flag comes with the
    port's own link message (bridge slave data), so no dump of every port is needed."""
    slave = (msg.get("IFLA_LINKINFO") or {}).get("IFLA_INFO_SLAVE_DATA") or {}
    if slave.get("IFLA_BRPORT_ISOLATED"):
        return []
    if apply:
        ipr.brport("set", index=msg["index"], isolated=1)
    return ["%s: isolate bridge port" % where]
