"""_rtnl.Socket against the real kernel, next to pyroute2's IPRoute in the same namespaces: what
the socket builds itself must change the kernel as the code says, read back what IPRoute reads
(a dump bigger than one receive buffer included), and refuse what the kernel refuses with the
same NetlinkError codes the collection's callers test for (ENODEV, EEXIST, EADDRNOTAVAIL)."""
from __future__ import annotations

import json
import subprocess
import sys

CODE = r'''
import errno, json, socket, sys
from ansible_collections.overlay.vxlan.plugins.module_utils import _netns
from pyroute2.netlink.exceptions import NetlinkError

a_path, b_path = "/run/netns/" + sys.argv[1], "/run/netns/" + sys.argv[2]
out = {}
sa, sb = _netns._open(a_path), _netns._open(b_path)
ia = _netns._in_namespace(a_path, _netns.IPRoute)
ib = _netns._in_namespace(b_path, _netns.IPRoute)
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80


def code(call):
    try:
        call()
    except NetlinkError as e:
        return e.code
    return 0


def refusal(sock, call):
    try:
        call(sock)
    except NetlinkError as e:
        return list(e.args)
    return None


def links(sock):
    return sorted((m.get("IFLA_IFNAME"), m["index"], m.get("IFLA_MTU"), m.get("IFLA_MASTER"), m["flags"] & 1,
                   m.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")), m.get("IFLA_ADDRESS")) for m in sock.get_links())


sa.link("add", ifname="br0", kind="bridge")
br = sa.link("get", ifname="br0")[0]["index"]
sa.link("set", index=br, state="up", mtu=1400)
with open(b_path) as f:
    sa.link("add", ifname="ve-1", mtu=1400, master=br, state="up", kind="veth",
            peer={"ifname": "eth0", "mtu": 1400, "address": "02:42:0a:00:00:02", "net_ns_fd": f.fileno()})
ve = sa.link("get", ifname="ve-1")[0]
eth0 = sb.link("get", ifname="eth0")[0]
out["veth"] = {"master": ve.get("IFLA_MASTER") == br, "up": ve["flags"] & 1, "mtu": ve.get("IFLA_MTU"),
               "peer_mtu": eth0.get("IFLA_MTU"), "peer_mac": eth0.get("IFLA_ADDRESS"),
               "paired": ve.get("IFLA_LINK") == eth0["index"] and eth0.get("IFLA_LINK") == ve["index"]}
out["eexist"] = code(lambda: sa.link("add", ifname="ve-1", kind="veth", peer={"ifname": "ve-1p"}))
out["enodev"] = code(lambda: sa.link("get", ifname="nope"))
# the refusals carry pyroute2's codes; their text is the kernel's own reason (extended ack) where it
# gives one ("mtu less than device minimum" where IPRoute says "Invalid argument"), else the same
out["refusals"] = [(refusal(sa, call), refusal(ia, call)) for call in (
    lambda s: s.link("get", ifname="nope"),
    lambda s: s.link("set", index=br, master=br),
    lambda s: s.link("add", ifname="ve-1", kind="veth", peer={"ifname": "ve-1p"}),
    lambda s: s.link("set", index=br, mtu=10))]
out["enodev_index"] = code(lambda: sa.link("get", index=99999))
sb.link("set", index=eth0["index"], state="up")
sb.addr("add", index=eth0["index"], address="10.9.0.2", prefixlen=24, broadcast="10.9.0.255")
sb.addr("add", index=eth0["index"], address="10.9.1.2", prefixlen=31)
out["eaddrnotavail"] = code(lambda: sb.addr("del", index=eth0["index"], address="10.9.5.5", prefixlen=24))
sb.route("replace", dst="0.0.0.0/0", gateway="10.9.0.1", oif=eth0["index"])
sa.brport("set", index=ve["index"], learning=0, proxyarp=1)
sa.fdb("replace", ifindex=ve["index"], lladdr="02:42:0a:00:00:02", master=br, state=NUD_NOARP)
sa.neigh("replace", ifindex=br, dst="10.9.0.2", lladdr="02:42:0a:00:00:02", state=NUD_PERMANENT)
sa.link("add", ifname="vx", kind="vxlan", vxlan_id=300, vxlan_port=4789, vxlan_learning=0, vxlan_proxy=1)
out["vxlan"] = {k: sa.link("get", ifname="vx")[0].get(("IFLA_LINKINFO", "IFLA_INFO_DATA", k))
                for k in ("IFLA_VXLAN_ID", "IFLA_VXLAN_PORT", "IFLA_VXLAN_LEARNING", "IFLA_VXLAN_PROXY")}
out["route_get"] = [(m.get("RTA_PREFSRC"), m.get("RTA_OIF") == eth0["index"]) for m in sb.route("get", dst="10.9.0.77")]
out["main_routes"] = len(sa.get_routes(family=socket.AF_INET, table=254)) >= 0  # not built here: IPRoute serves it
vx = sa.link("get", ifname="vx")[0]["index"]
sa.fdb("append", ifindex=vx, lladdr="02:42:0a:00:00:09", dst="10.0.0.9", state=NUD_PERMANENT)
sa.neigh("replace", ifindex=vx, dst="10.9.0.9", lladdr="02:42:0a:00:00:09", state=NUD_PERMANENT)
# more links than one receive buffer holds (each message is about 2 KiB)
for i in range(200):
    sa.link("add", ifname="m%d" % i, kind="veth", peer={"ifname": "n%d" % i})
sa.link("set", index=sa.link("get", ifname="m7")[0]["index"], group=4242)
sa.link("set", index=sa.link("get", ifname="m8")[0]["index"], group=4242)
sa.link("del", group=4242)
sa.link("del", index=sa.link("get", ifname="m9")[0]["index"])

sa.link("set", index=ve["index"], ifalias="\u00fcberlay alias")
NAMES = ["IFLA_IFNAME", "IFLA_MTU", "IFLA_MASTER", "IFLA_LINK", "IFLA_LINK_NETNSID", "IFLA_ADDRESS", "IFLA_BROADCAST",
         "IFLA_GROUP", "IFLA_IFALIAS", "IFLA_TXQLEN", "IFLA_OPERSTATE", "IFLA_NOPE", ("IFLA_LINKINFO", "IFLA_INFO_KIND"),
         ("IFLA_LINKINFO", "IFLA_INFO_SLAVE_KIND"), ("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_ID"),
         ("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_PORT"),
         ("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_LEARNING"),
         ("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_PROXYARP"),
         ("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_ISOLATED"), "index", "flags", "state", "family"]
lazy = {m["index"]: m for m in sa.get_links()}
full = {m["index"]: m for m in ia.get_links()}
out["lazy_type"] = type(next(iter(lazy.values()))).__name__


def differences(mine, theirs, key):
    """Every attribute and field of each of pyroute2's messages, read from ours (counters aside)."""
    mine, theirs = {key(m): m for m in mine}, {key(m): m for m in theirs}
    if set(mine) != set(theirs):
        return ["not the same messages: %r %r" % (sorted(mine), sorted(theirs))]
    found = []
    for k, full in theirs.items():
        names = [a[0] for a in full["attrs"] if "STATS" not in a[0] and "CACHEINFO" not in a[0]]
        names += [f[0] for f in full.fields if not f[1].endswith("x")]
        found += ["%r %s: %r != %r" % (k, n, mine[k].get(n), full.get(n)) for n in names
                  if isinstance(full.get(n), (int, str, type(None))) and mine[k].get(n) != full.get(n)]
    return found


out["all_differ"] = (
    differences(sa.get_links(), ia.get_links(), lambda m: m["index"])
    + differences(sb.get_addr(), ib.get_addr(), lambda m: (m["index"], m.get("IFA_ADDRESS")))
    + differences(sb.get_default_routes(family=socket.AF_INET), ib.get_default_routes(family=socket.AF_INET),
                  lambda m: m.get("RTA_GATEWAY"))
    + differences(sa.fdb("dump"), ia.fdb("dump"), lambda m: (m["ifindex"], m.get("NDA_LLADDR"), m.get("NDA_DST")))
    + differences(sa.get_neighbours(family=socket.AF_INET), ia.get_neighbours(family=socket.AF_INET),
                  lambda m: (m["ifindex"], m.get("NDA_DST"))))
out["kinds"] = sorted({type(m).__name__ for m in sb.get_addr() + sa.fdb("dump") + sb.get_default_routes(
    family=socket.AF_INET)})
out["lazy_differs"] = [(i, str(n), lazy[i].get(n), full[i].get(n)) for i in full for n in NAMES
                       if lazy[i].get(n) != full[i].get(n)]
out["lazy_attrs_same"] = all([a[0] for a in lazy[i]["attrs"]] == [a[0] for a in full[i]["attrs"]] and
                              lazy[i].get_attr("IFLA_AF_SPEC") is not None for i in (br, ve["index"], vx))
out["links_same"] = links(sa) == links(ia)
out["link_count"] = len(sa.get_links())
out["gone"] = [n for n in ("m7", "n7", "m8", "n8", "m9", "n9") if any(m.get("IFLA_IFNAME") == n for m in sa.get_links())]
out["protinfo"] = {k: v for k, v in sa.link("get", index=ve["index"])[0].get(
    ("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA"))["attrs"] if k in ("IFLA_BRPORT_LEARNING", "IFLA_BRPORT_PROXYARP")}
addrs = lambda s, **kw: sorted((m["index"], m.get("IFA_ADDRESS"), m["prefixlen"], m.get("IFA_BROADCAST"))
                               for m in s.get_addr(**kw))
out["addrs_same"] = addrs(sb, index=eth0["index"]) == addrs(ib, index=eth0["index"]) and addrs(sb) == addrs(ib)
out["addrs"] = addrs(sb, index=eth0["index"])
fdb = lambda s, **kw: sorted((m["ifindex"], m.get("NDA_LLADDR"), m.get("NDA_DST"), m.get("NDA_MASTER"),
                              m["state"], m["flags"]) for m in s.fdb("dump", **kw))
out["fdb_same"] = fdb(sa) == fdb(ia) and fdb(sa, ifindex=vx) == fdb(ia, ifindex=vx)
out["fdb_vx"] = [e[1:] for e in fdb(sa, ifindex=vx) if e[2]]
out["fdb_port"] = [e[1:] for e in fdb(sa, ifindex=ve["index"]) if e[1] == "02:42:0a:00:00:02"]
neigh = lambda s, **kw: sorted((m["ifindex"], m.get("NDA_DST"), m.get("NDA_LLADDR"), m["state"])
                               for m in s.get_neighbours(family=socket.AF_INET, **kw))
out["neigh_same"] = neigh(sa) == neigh(ia) and neigh(sa, ifindex=vx) == neigh(ia, ifindex=vx)
out["neigh_br"] = neigh(sa, ifindex=br)
routes = lambda s: sorted((m.get("RTA_GATEWAY"), m.get("RTA_OIF"), m["table"])
                          for m in s.get_default_routes(family=socket.AF_INET))
out["routes_same"] = routes(sb) == routes(ib)
out["routes"] = routes(sb)
with open(b_path) as f:
    out["nsid_same"] = sa.get_netnsid(fd=f.fileno()) == ia.get_netnsid(fd=f.fileno())
    out["nsid_set"] = sa.get_netnsid(fd=f.fileno())["nsid"] == ve.get("IFLA_LINK_NETNSID")
out["fallback_opened"] = [s._iproute is not None for s in (sa, sb)]
for s in (sa, sb, ia, ib):
    s.close()
print(json.dumps(out))
'''


def test_the_socket_changes_and_reads_the_kernel_as_iproute_does(netns, collection_path):
    a, b = netns("rta"), netns("rtb")
    r = subprocess.run([sys.executable, "-c", CODE, a, b], capture_output=True, text=True,
                       env={"PYTHONPATH": collection_path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["veth"] == {"master": True, "up": 1, "mtu": 1400, "peer_mtu": 1400, "peer_mac": "02:42:0a:00:00:02",
                           "paired": True}
    assert [mine[0] for mine, _theirs in out["refusals"]] == [theirs[0] for _mine, theirs in out["refusals"]] \
        == [19, 40, 17, 22], out["refusals"]
    assert out["refusals"][0][0] == out["refusals"][0][1] and out["refusals"][2][0] == out["refusals"][2][1]
    assert out["refusals"][3][0][1] == "mtu less than device minimum", out["refusals"]
    assert (out["eexist"], out["enodev"], out["enodev_index"], out["eaddrnotavail"]) == (17, 19, 19, 99)
    assert out["links_same"] and out["link_count"] == 4 + 2 * 200 - 6, out  # m7, m8, m9 went with their peers
    assert out["gone"] == []
    # the lazily decoded link messages read as pyroute2's fully decoded ones, attribute by attribute
    assert out["lazy_type"] == "Message" and out["lazy_differs"] == [] and out["lazy_attrs_same"]
    assert out["all_differ"] == [] and out["kinds"] == ["Message"]
    assert out["protinfo"] == {"IFLA_BRPORT_LEARNING": 0, "IFLA_BRPORT_PROXYARP": 1}
    v4 = [x[1:] for x in out["addrs"] if ":" not in x[1]]
    assert out["addrs_same"] and v4 == [["10.9.0.2", 24, "10.9.0.255"], ["10.9.1.2", 31, None]]
    assert out["fdb_same"] and out["fdb_vx"] == [["02:42:0a:00:00:09", "10.0.0.9", None, 0xC0, 2]]
    assert out["fdb_port"] == [["02:42:0a:00:00:02", None, out["fdb_port"][0][2], 0x40, 0]]
    permanent = [x[1:] for x in out["neigh_br"] if x[3] == 0x80]
    assert out["neigh_same"] and permanent == [["10.9.0.2", "02:42:0a:00:00:02", 0x80]]
    assert out["routes_same"] and [x[0] for x in out["routes"]] == ["10.9.0.1"]
    assert out["nsid_same"] and out["nsid_set"]
    assert out["vxlan"] == {"IFLA_VXLAN_ID": 300, "IFLA_VXLAN_PORT": 4789, "IFLA_VXLAN_LEARNING": 0,
                            "IFLA_VXLAN_PROXY": 1}
    assert out["route_get"] == [["10.9.0.2", True]]
    # ns a needed IPRoute for get_routes; ns b never did
    assert out["main_routes"] and out["fallback_opened"] == [True, False]
