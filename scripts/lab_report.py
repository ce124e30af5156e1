"""Print the seed's walkthrough from what playbooks/walkthrough.yml gathered, and draw the topology.

    .venv/bin/python scripts/lab_report.py lab/work/walkthrough.json [--json] [--collections-path P]

Each step is a heading, one sentence of why, and the real output, short. --json prints the
gathered data (and the merged topology) for scripts instead. The diagram is drawn from the
topology every host returned (overlay_network_info topology=data), rendered with Graphviz to
lab/work/topology.svg and .png next to the data file.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sections(text):
    """'@@ key' lines split the shell's output into {key: [lines]}."""
    out, key = {}, None
    for line in text.splitlines():
        if line.startswith("@@ "):
            key = line[3:].strip()
            out[key] = []
        elif key:
            out[key].append(line)
    return out


def step(n, title, why, lines=(), out=print):
    out("\n%d. %s" % (n, title))
    out("   " + why)
    for line in lines:
        out("     " + line)


def addr_lines(lines):
    keep = []
    for line in lines:
        s = line.strip()
        if s[:1].isdigit() and ": " in s:
            keep.append(s.split(" qdisc")[0])
        elif s.startswith("link/ether") or s.startswith("inet "):
            keep.append("    " + " ".join(s.split()[:2]))
    return keep


def pick(lines, *words):
    return [l.strip() for l in lines if any(w in l for w in words)]


def ip_d_link(lines):
    """`ip -d link` of one device: the header and the line with its kind's details, no queue noise."""
    out = []
    for line in lines:
        s = line.strip()
        for noise in (" numtxqueues", " gso_max_size", " addrgenmode", " qdisc", " link-netnsid",
                      " bridge_slave", " forward_delay", " ageing_time"):
            if noise in s:
                s = s.split(noise)[0]
        if s.startswith(("link/", "altname", "bridge_slave")):
            continue
        out.append(s)
    return out[:4]


def render(data, dot_files, out=print):
    hosts = data["hosts"]
    nets = {h: d["info"]["networks"][0] for h, d in hosts.items()}
    k = {h: sections(d["kernel"]) for h, d in hosts.items()}
    topo = {h: d["info"]["topology"] for h, d in hosts.items()}
    n0 = nets["docker0"]

    rows = ["%-8s %-13s %-8s %-8s %s" % ("HOST", "NETWORK ID", "NAME", "DRIVER", "SCOPE")]
    rows += ["%-8s %-13s %-8s %-8s %s" % (h, n["short_id"], n["name"], n["driver"], n["scope"])
             for h, n in sorted(nets.items())]
    same = len({n["id"] for n in nets.values()}) == 1
    step(1, "The network, as each host sees it (docker network ls)",
         "Both hosts read one record from Consul, so docker0 and docker1 list the same network id%s."
         % ("" if same else " -- BUT THEY DIFFER HERE"), rows, out)
    eps = ["endpoint %s: %s %s on %s (VTEP %s)" % (e["name"], e["ip"], e["mac"], e["host"], e["vtep"])
           for e in n0["endpoints"]]
    step(2, "Its details (docker network inspect demonet)",
         "Subnet, gateway and VNI are chosen once and shared; MTU 1450 leaves room for VXLAN's 50 bytes.",
         ["subnet %s  gateway %s  VNI %s  MTU %s  UDP port %s  internal %s" % (
             n0["subnet"], n0["gateway"], n0["vni"], n0["mtu"], n0["port"], n0["internal"])] + eps, out)

    c0 = k["docker0"]
    step(3, "C0's interfaces and routes (on docker0)",
         "eth0 is C0's leg on the overlay, eth1 its leg on the gateway bridge, which carries the default route.",
         ["$ ip addr"] + addr_lines(c0.get("ctr:c0:addr", [])) + ["$ ip route"] +
         [l.strip() for l in c0.get("ctr:c0:route", [])], out)

    p, hp = data["ping"], data["host_ping"]
    step(4, "C1 on docker1 pings C0",
         "The packet leaves C1's eth0, crosses br0 and vxlan0 on docker1, the tunnel to docker0, and reaches C0.",
         ["$ " + p["cmd"]] + [l for l in p["stdout"].splitlines() if "transmitted" in l or "rtt" in l]
         + (["(exit %s)" % p["rc"]] if str(p["rc"]) != "0" else []), out)
    step(5, "docker1 itself cannot reach C0",
         "The overlay lives only in namespaces: the host has no address or route in 192.168.0.0/24.",
         ["$ " + hp["cmd"]] + [l for l in hp["stdout"].splitlines() if "transmitted" in l]
         + ["exit %s: %s" % (hp["rc"], "unreachable, as intended" if str(hp["rc"]) != "0" else "REACHABLE (wrong)")],
         out)

    gwb = topo["docker0"].get("gateway_bridge") or {}
    step(6, "The gateway bridge %s (on docker0)" % gwb.get("name", "docker_gwbridge"),
         "Containers reach outside through it with NAT (MASQUERADE), and isolated ports stop traffic between them.",
         ip_d_link(c0.get("gw:link", []))[:1] + ["NAT %s, ip_forward %s, ports isolated: %s" % (
             "on" if gwb.get("nat") else "OFF", "on" if gwb.get("ip_forward") else "OFF",
             ", ".join("%s %s" % (p["name"], "yes" if p.get("isolated") else "NO") for p in gwb.get("ports", [])))]
         + ["$ iptables -t nat -S POSTROUTING"] + pick(c0.get("gw:nat", []), "MASQUERADE"), out)

    ns = topo["docker0"]["networks"][0]["namespace"]
    step(7, "The overlay namespace %s: br0 and vxlan0 (on docker0)" % ns,
         "br0 switches between the local containers and vxlan0, which wraps frames for the other hosts' VTEPs.",
         ["$ ip -d link show br0"] + ip_d_link(c0.get("ovl:br0", []))[:1]
         + ["$ ip -d link show vxlan0"] + ip_d_link(c0.get("ovl:vxlan0", [])), out)

    pairs = []
    for h in sorted(topo):
        for ep in topo[h]["endpoints"]:
            for i in ep["interfaces"]:
                peer = i.get("peer")
                pairs.append("%s %s %s ifindex %s (peer ifindex %s) <-> %s %s ifindex %s on %s" % (
                    h, ep["name"], i["name"], i["ifindex"], i["peer_ifindex"],
                    peer["namespace"] if peer else "?", peer["name"] if peer else "NO PEER",
                    peer["ifindex"] if peer else "-", peer.get("master") if peer else "-"))
    step(8, "Which veth pairs with which",
         "Each container interface is one end of a veth pair; its peer ifindex (ethtool -S: peer_ifindex) names "
         "the other end, on br0 or on the gateway bridge.", pairs, out)

    lines = []
    for h in sorted(topo):
        for net in topo[h]["networks"]:
            lines += ["%s fdb: %s dst %s" % (h, e["mac"], e["dst"]) for e in net["fdb"]]
            lines += ["%s neigh: %s lladdr %s" % (h, e["ip"], e["mac"]) for e in net["neighbours"]]
    step(9, "vxlan0's forwarding and neighbour entries",
         "Written from Consul, not learned: each remote MAC points at its host's VTEP, each remote IP at its MAC "
         "(vxlan0 answers ARP itself: proxy).", lines, out)

    keys = []
    for item in data["keys"]:
        import base64
        value = base64.b64decode(item["Value"]).decode() if item.get("Value") else ""
        keys.append("%s = %s" % (item["Key"], value if len(value) <= 90 else value[:87] + "..."))
    step(10, "The keys in Consul",
         "Everything the hosts agree on lives here: the network, each host's VTEP and each endpoint.", keys, out)

    verdict = ["%s: %s" % (h, "in sync with Consul" if d["info"].get("in_sync") else
                           "DIFFERS: %s" % d["info"].get("differences")) for h, d in sorted(hosts.items())]
    step(11, "Verify and the diagram",
         "overlay_network_info compares each host's kernel with Consul; the diagram is drawn from the same state.",
         verdict + dot_files, out)


def draw(data, workdir, collections_path):
    sys.path.insert(0, collections_path or str(REPO / ".cache" / "collections"))
    from ansible_collections.overlay.vxlan.plugins.module_utils import _topology
    topologies = [d["info"]["topology"] for _h, d in sorted(data["hosts"].items())]
    dot = _topology.to_dot(topologies, title="The seed lab, drawn from live state")
    dot_path = workdir / "topology.dot"
    dot_path.write_text(dot)
    files = [str(dot_path)]
    if shutil.which("dot") is None:
        return dot, files + ["(install graphviz to render it)"]
    for fmt in ("svg", "png"):
        target = workdir / ("topology." + fmt)
        subprocess.run(["dot", "-T" + fmt, "-o", str(target), str(dot_path)], check=True)
        files.append(str(target))
    return dot, files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--collections-path")
    a = ap.parse_args()
    path = Path(a.data)
    data = json.loads(path.read_text())
    dot, files = draw(data, path.parent, a.collections_path)
    if a.json:
        print(json.dumps({**data, "dot": dot, "diagram": files}, indent=1))
    else:
        render(data, ["diagram: " + f for f in files])
    return 0


if __name__ == "__main__":
    sys.exit(main())
