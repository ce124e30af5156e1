"""Issue 12 section 4: endpoints cannot impersonate each other. Real frames, forged with an
AF_PACKET socket inside the endpoint namespaces, on two simulated hosts; a network with
anti_spoofing: false shows the same frames getting through (so each test can fail)."""
from __future__ import annotations

import subprocess
import time

import pytest

from overlay_helpers import PLAYBOOKS, kv, ns_exec, ping_eventually, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")
VERIFY = str(PLAYBOOKS / "overlay_verify.yml")

GUARD = {"name": "guard", "subnet": "10.70.0.0/24"}
OPEN = {"name": "open", "subnet": "10.71.0.0/24", "anti_spoofing": False}
# Same layout on both networks: A, B and the attacker M on docker0, R on docker1.
LAYOUT = {"a": ("docker0", 10), "b": ("docker0", 11), "m": ("docker0", 12), "r": ("docker1", 20)}
NETS = {"guard": (GUARD, "g", "10.70.0."), "open": (OPEN, "o", "10.71.0.")}


def mac_of(ip):
    return "02:42:" + ":".join("%02x" % int(b) for b in ip.split("."))


def where(net, who):
    """(host name, namespace, ip, mac) of endpoint ``who`` on network ``net``."""
    host, last = LAYOUT[who]
    ip = NETS[net][2] + str(last)
    return host, NETS[net][1] + who, ip, mac_of(ip)


def endpoints_vars():
    out = {"docker0": [], "docker1": []}
    for net in NETS:
        per_host = {"docker0": [], "docker1": []}
        for who in LAYOUT:
            host, ns, ip, _mac = where(net, who)
            per_host[host].append({"name": who.upper(), "namespace": ns, "ip": ip})
        for host, eps in per_host.items():
            out[host].append({"network": net, "endpoints": eps})
    return out


VARS = seed_vars([GUARD, OPEN], endpoints_vars())

SEND = r"""
import socket, struct, sys, time
dst_mac, src_mac, src_ip, dst_ip, token, kind = sys.argv[1:7]
def mac(m): return bytes(int(x, 16) for x in m.split(":"))
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
if kind == "udp":
    payload = token.encode()
    udp = struct.pack("!HHHH", 40000, 40001, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    frame = mac(dst_mac) + mac(src_mac) + b"\x08\x00" + hdr + udp
    frames = [frame]
else:  # gratuitous ARP for src_ip from src_mac: a request and a reply, both broadcast
    frames = []
    for op in (1, 2):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac(src_mac), socket.inet_aton(src_ip),
                          b"\xff" * 6 if op == 2 else b"\x00" * 6, socket.inet_aton(src_ip))
        frames.append(b"\xff" * 6 + mac(src_mac) + b"\x08\x06" + arp + b"\x00" * 18)
for _ in range(5):
    for f in frames:
        s.send(f)
    time.sleep(0.1)
"""

RECV = r"""
import socket, sys, time
token, seconds = sys.argv[1].encode(), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(("eth0", 0)); s.settimeout(0.2)
print("ready", flush=True)
seen, end = 0, time.time() + seconds
while time.time() < end:
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] != socket.PACKET_OUTGOING and token in data:
        seen += 1
print(seen, flush=True)
"""


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    for net in NETS:
        for who in LAYOUT:
            host, ns, _ip, _mac = where(net, who)
            lab.hosts[host].add_netns(ns)
    lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    return lab


class Receiver:
    """Counts frames carrying ``token`` that arrive at eth0 of a namespace."""

    def __init__(self, lab, host, ns, token, seconds=3.0):
        self.proc = subprocess.Popen(lab.hosts[host].nsenter_cmd() + [
            "ip", "netns", "exec", ns, "python3", "-c", RECV, token, str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()

    def count(self):
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return int(out.strip().splitlines()[-1])


def send(lab, host, ns, dst_mac, src_mac, src_ip, dst_ip, token, kind="udp"):
    ns_exec(lab.hosts[host], ns, ["python3", "-c", SEND, dst_mac, src_mac, src_ip, dst_ip, token, kind], check=True)


_tokens = iter(range(10 ** 6))


def forged(lab, net, sender, receiver, src_mac=None, src_ip=None):
    """How many copies of a frame from ``sender`` (with the given source) reach ``receiver``."""
    s_host, s_ns, s_ip, s_mac = where(net, sender)
    r_host, r_ns, r_ip, r_mac = where(net, receiver)
    token = "ovx-token-%d-%d" % (time.time() * 1000, next(_tokens))
    rx = Receiver(lab, r_host, r_ns, token)
    send(lab, s_host, s_ns, r_mac, src_mac or s_mac, src_ip or s_ip, r_ip, token)
    return rx.count()


def neighbour(lab, net, at, of):
    host, ns, _ip, _mac = where(net, at)
    ip = where(net, of)[2]
    return ns_exec(lab.hosts[host], ns, ["ip", "neigh", "show", ip], check=True).stdout


@pytest.mark.parametrize("net", ["guard", "open"])
def test_normal_traffic_works_locally_and_across_hosts(lab, net):
    h, ns, _ip, _mac = where(net, "r")
    assert ping_eventually(lab.hosts[h], ns, where(net, "a")[2])      # C1 -> C0 across hosts
    h, ns, _ip, _mac = where(net, "a")
    assert ping_eventually(lab.hosts[h], ns, where(net, "b")[2])      # two local endpoints
    # The harness itself: an honest frame from M arrives, locally and across hosts.
    assert forged(lab, net, "m", "a") > 0
    assert forged(lab, net, "m", "r") > 0


@pytest.mark.parametrize("receiver", ["a", "r"])
def test_spoofed_source_ip_is_not_received(lab, receiver):
    b_ip = where("guard", "b")[2]
    assert forged(lab, "guard", "m", receiver, src_ip=b_ip) == 0          # another endpoint's address
    assert forged(lab, "guard", "m", receiver, src_ip="10.99.0.1") == 0   # outside the subnet
    assert forged(lab, "guard", "m", receiver, src_ip="10.70.0.1") == 0   # the gateway's
    # Without anti-spoofing the same frames get through (Docker's behaviour).
    assert forged(lab, "open", "m", receiver, src_ip=where("open", "b")[2]) > 0
    assert forged(lab, "open", "m", receiver, src_ip="10.99.0.1") > 0


@pytest.mark.parametrize("receiver", ["a", "r"])
def test_forged_source_mac_is_dropped(lab, receiver):
    assert forged(lab, "guard", "m", receiver, src_mac="02:42:de:ad:be:ef") == 0
    assert forged(lab, "guard", "m", receiver, src_mac=where("guard", "b")[3]) == 0
    assert forged(lab, "open", "m", receiver, src_mac="02:42:de:ad:be:ef") > 0


def _steal(lab, net, victim):
    """M takes the victim's MAC and announces it; then A talks to the victim. Returns
    (victim reachable from A, frames for the victim that M received)."""
    m_host, m_ns, m_ip, m_mac = where(net, "m")
    v_host, v_ns, v_ip, v_mac = where(net, victim)
    a_host, a_ns, a_ip, a_mac = where(net, "a")
    m = lab.hosts[m_host]
    ns_exec(m, m_ns, ["ip", "link", "set", "eth0", "address", v_mac], check=True)
    try:
        token = "ovx-steal-%d" % (time.time() * 1000)
        # Frames from the stolen MAC teach a learning bridge where the victim "is".
        send(lab, m_host, m_ns, a_mac, v_mac, m_ip, a_ip, "announce")
        rx = Receiver(lab, m_host, m_ns, token, seconds=4.0)
        send(lab, a_host, a_ns, v_mac, a_mac, a_ip, v_ip, token)
        stolen = rx.count()
        reachable = ping_eventually(lab.hosts[a_host], a_ns, v_ip)
    finally:
        ns_exec(m, m_ns, ["ip", "link", "set", "eth0", "address", m_mac], check=True)
    return reachable, stolen


@pytest.mark.parametrize("victim", ["b", "r"])
def test_taking_another_endpoints_mac_steals_nothing(lab, victim):
    reachable, stolen = _steal(lab, "guard", victim)
    assert reachable and stolen == 0
    # br0 learned nothing: the victim's MAC is still static on its own port (or vxlan0).
    host, _ns, _ip, v_mac = where("guard", victim)
    fdb = ns_exec(lab.hosts["docker0"], ovl(lab, "guard"), ["bridge", "fdb", "show", "br", "br0"], check=True).stdout
    lines = [x for x in fdb.splitlines() if x.startswith(v_mac) and "master br0" in x]
    assert len(lines) == 1 and "static" in lines[0], fdb
    assert ("dev vxlan0" in lines[0]) == (victim == "r")


def test_without_anti_spoofing_the_mac_is_stolen(lab):
    _reachable, stolen = _steal(lab, "open", "b")
    assert stolen > 0
    ping_eventually(lab.hosts["docker0"], "ob", where("open", "a")[2])  # B speaks again: br0 re-learns it


def _garp(lab, net):
    """A learns B's MAC; M then claims B's address with gratuitous ARP. Returns A's entry for B."""
    a_host, a_ns, _a_ip, _a_mac = where(net, "a")
    _h, _ns, b_ip, b_mac = where(net, "b")
    m_host, m_ns, _m_ip, m_mac = where(net, "m")
    assert ping_eventually(lab.hosts[a_host], a_ns, b_ip)
    assert b_mac in neighbour(lab, net, "a", "b")
    time.sleep(1.2)  # past the neighbour's locktime, so an update would be taken
    send(lab, m_host, m_ns, "ff:ff:ff:ff:ff:ff", m_mac, b_ip, b_ip, "", kind="arp")
    time.sleep(0.3)
    return neighbour(lab, net, "a", "b"), m_mac, b_mac


def test_gratuitous_arp_for_another_ip_poisons_no_neighbour(lab):
    entry, m_mac, b_mac = _garp(lab, "guard")
    assert b_mac in entry and m_mac not in entry, entry
    entry, m_mac, b_mac = _garp(lab, "open")
    assert m_mac in entry, entry  # without the option it does
    ns_exec(lab.hosts["docker0"], "oa", ["ip", "neigh", "flush", "dev", "eth0"], check=True)


def test_arp_is_answered_from_the_store(lab):
    # B's own ARP replies are dropped (an arp-family output filter in B; its requests still go): A still resolves B,
    # because br0 answers from its neighbour table, which comes from Consul.
    d0 = lab.hosts["docker0"]
    _h, b_ns, b_ip, b_mac = where("guard", "b")
    mute = "table arp mute {\n chain out {\n  type filter hook output priority 0; policy accept;\n  arp operation reply drop\n }\n}\n"
    for net, a_ns, ns, ip in (("guard", "ga", b_ns, b_ip), ("open", "oa", "ob", where("open", "b")[2])):
        # Muted first, then forgotten on both sides: no reply of B's can arrive after the flush, and B holds no
        # stale entry for A whose delayed unicast probe (a request, which still goes) would teach A B's MAC.
        assert d0.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=mute).returncode == 0
        try:
            ns_exec(d0, ns, ["ip", "neigh", "flush", "dev", "eth0"], check=True)
            ns_exec(d0, a_ns, ["ip", "neigh", "flush", "dev", "eth0"], check=True)
            resolved = ping_eventually(d0, a_ns, ip, tries=3)
            entry = ns_exec(d0, a_ns, ["ip", "neigh", "show", ip]).stdout
        finally:
            ns_exec(d0, ns, ["nft", "delete", "table", "arp", "mute"], check=True)
        assert resolved == (net == "guard"), (net, entry)  # without the option nobody answers for B
    assert b_mac in neighbour(lab, "guard", "a", "b")


def ovl(lab, net):
    return "ovl-" + kv(lab)["overlay/v1/networks/%s" % net]["id"][:12]


def test_record_rerun_verify_and_refused_change(lab):
    records = kv(lab)
    assert records["overlay/v1/networks/guard"]["anti_spoofing"] is True
    assert records["overlay/v1/networks/open"]["anti_spoofing"] is False
    again = lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    assert again.changed_tasks() == []
    verify = lab.ansible_playbook(VERIFY).assert_ok()
    for name in ("docker0", "docker1"):
        assert verify.results(name, "Verify")["in_sync"], verify.results(name, "Verify")["differences"]
    table = ns_exec(lab.hosts["docker0"], ovl(lab, "guard"), ["nft", "list", "table", "bridge", "overlay_antispoof"],
                    check=True).stdout
    assert table.count(where("guard", "a")[3]) == 3  # ipv4 element, and the ARP element's two MACs
    assert "overlay_antispoof" not in ns_exec(lab.hosts["docker0"], ovl(lab, "open"), ["nft", "list", "tables"],
                                              check=True).stdout
    # The option is cluster-wide: changing it is refused and changes nothing.
    before = kv(lab)
    bad = lab.ansible_playbook(SEED, extra_vars=seed_vars([dict(GUARD, anti_spoofing=False), OPEN], {}),
                               limit="docker0")
    assert not bad.ok
    res = bad.results("docker0", "Networks")["results"][0]
    assert res["field"] == "anti_spoofing" and "already exists with anti_spoofing True" in res["msg"]
    assert kv(lab) == before


def test_drift_is_seen_and_repaired(lab):
    d0 = lab.hosts["docker0"]
    ns = ovl(lab, "guard")
    ns_exec(d0, ns, ["nft", "delete", "table", "bridge", "overlay_antispoof"], check=True)
    ns_exec(d0, ns, ["ip", "link", "set", "vxlan0", "type", "bridge_slave", "learning", "on"], check=True)
    verify = lab.ansible_playbook(VERIFY).assert_ok()
    diffs = [d["difference"] for d in verify.results("docker0", "Verify")["differences"]]
    assert any("create table bridge overlay_antispoof" in d for d in diffs), diffs
    assert any("vxlan0: learning off" in d for d in diffs), diffs
    assert verify.results("docker1", "Verify")["in_sync"]
    assert forged(lab, "guard", "m", "a", src_ip="10.99.0.1") > 0  # the drift is real
    lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()
    assert forged(lab, "guard", "m", "a", src_ip="10.99.0.1") == 0
    assert lab.ansible_playbook(VERIFY).assert_ok().results("docker0", "Verify")["in_sync"]


def test_detach_removes_the_endpoints_elements(lab):
    d0 = lab.hosts["docker0"]
    ns = ovl(lab, "guard")
    m_mac = where("guard", "m")[3]
    detach = seed_vars([GUARD], {"docker0": [{"network": "guard", "state": "absent", "endpoints": [{"name": "M"}]}]})
    lab.ansible_playbook(SEED, extra_vars=detach, limit="docker0").assert_ok()
    table = ns_exec(d0, ns, ["nft", "list", "table", "bridge", "overlay_antispoof"], check=True).stdout
    assert m_mac not in table and where("guard", "a")[3] in table
    assert m_mac not in ns_exec(d0, ns, ["ip", "neigh", "show", "dev", "br0"], check=True).stdout
    assert ping_eventually(d0, "ga", where("guard", "b")[2])
    lab.ansible_playbook(SEED, extra_vars=VARS).assert_ok()  # M back, for anyone after us
    assert forged(lab, "guard", "m", "a") > 0


def test_attach_cost_of_anti_spoofing(lab_factory):
    """Not a timing assertion: prints how long attaching 20 endpoints takes with and without."""
    lab = lab_factory()
    d0 = lab.hosts["docker0"]
    figures = {}
    nets = (dict(name="t-on", subnet="10.80.0.0/24"), dict(name="t-off", subnet="10.81.0.0/24", anti_spoofing=False))
    for net in nets:
        lab.ansible_playbook(SEED, extra_vars=seed_vars([net], {}), limit="docker0").assert_ok()
        for i in range(20):
            d0.add_netns("%s-%d" % (net["name"], i))
        eps = {"docker0": [{"network": net["name"], "endpoints": [
            {"name": "E%d" % i, "namespace": "%s-%d" % (net["name"], i)} for i in range(20)]}]}
        start = time.monotonic()
        lab.ansible_playbook(SEED, extra_vars=seed_vars([net], eps), limit="docker0").assert_ok()
        figures[net["name"]] = time.monotonic() - start
    print("\nattach of 20 endpoints (whole playbook run): anti_spoofing on %.2fs, off %.2fs"
          % (figures["t-on"], figures["t-off"]))
