"""overlay.vxlan.netns_veth run through ansible against localhost, checked on the real kernel.

The module runs ad hoc (``ansible -m``) or, to save ansible's start-up, as a few tasks of one
playbook (adhoc.run_batch). Every case works in throwaway namespaces created here and removed
at teardown, even on failure. "Converging" a case means: a --check run reports changed and
leaves the kernel as it was, a real run changes it, a second real run reports nothing to do.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from adhoc import run_batch, run_module

IFF_UP = 0x1
IFA_F_TENTATIVE = 0x40
_counter = itertools.count()


# ---------------------------------------------------------------------------- kernel helpers

def ipr(ns):
    """A netlink socket in ``ns``: an ``ip netns`` name, a /proc path, or None for the host."""
    return IPRoute() if ns is None else IPRoute(netns=ns, flags=0)


def _addresses(sock, index):
    out = []
    for msg in sock.get_addr(index=index):
        ip = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        if ip.startswith("fe80:"):
            continue
        out.append("%s/%d" % (ip, msg["prefixlen"]))
    return sorted(out)


def _describe(sock, msg, names):
    info = msg.get("IFLA_LINKINFO")
    return {
        "name": msg.get("IFLA_IFNAME"),
        "ifindex": msg["index"],
        "kind": info.get("IFLA_INFO_KIND") if info else None,
        "mtu": msg.get("IFLA_MTU"),
        "mac": msg.get("IFLA_ADDRESS"),
        "state": "up" if msg["flags"] & IFF_UP else "down",
        "master": names.get(msg.get("IFLA_MASTER")),
        "link": msg.get("IFLA_LINK"),
        "link_netnsid": msg.get("IFLA_LINK_NETNSID"),
        "addresses": _addresses(sock, msg["index"]),
    }


def links(ns, only=None):
    """{name: description} of the links in ``ns`` (only those named in ``only``, if given)."""
    with ipr(ns) as sock:
        msgs = sock.get_links()
        names = {m["index"]: m.get("IFLA_IFNAME") for m in msgs}
        return {d["name"]: d for d in (_describe(sock, m, names) for m in msgs)
                if only is None or d["name"] in only}


def link(ns, name):
    return links(ns, only={name}).get(name)


def snapshot(namespaces, host_names=()):
    """Everything a run could touch: our namespaces' links, our host links, which of them exist."""
    return {
        "exists": {ns: ns_exists(ns) for ns in namespaces},
        "links": {ns: links(ns) for ns in namespaces if ns_exists(ns)},
        "host": links(None, only=set(host_names)),
    }


def ns_path(ns):
    return "/proc/self/ns/net" if ns is None else ns if ns.startswith("/") else "/run/netns/" + ns


def ns_exists(ns):
    return os.path.exists(ns_path(ns))


def nsid(ns, other):
    """The id ``ns`` gives ``other`` (what its links' IFLA_LINK_NETNSID say)."""
    fd = os.open(ns_path(other), os.O_RDONLY)
    try:
        with ipr(ns) as sock:
            return sock.get_netnsid(fd=fd)["nsid"]
    finally:
        os.close(fd)


def paired(ns_a, name_a, ns_b, name_b):
    """The two links are veths and each other's peer: the peer ifindex alone is not enough,
    it is only unique within the peer's namespace, which IFLA_LINK_NETNSID names."""
    a, b = link(ns_a, name_a), link(ns_b, name_b)
    if a is None or b is None or a["kind"] != "veth" or b["kind"] != "veth":
        return False
    if a["link"] != b["ifindex"] or b["link"] != a["ifindex"]:
        return False
    if os.stat(ns_path(ns_a)).st_ino == os.stat(ns_path(ns_b)).st_ino:
        return a["link_netnsid"] is None and b["link_netnsid"] is None
    return a["link_netnsid"] == nsid(ns_a, ns_b) and b["link_netnsid"] == nsid(ns_b, ns_a)


def wait_dad(ns, name, timeout=5.0):
    """Wait until no address of ``name`` is tentative (IPv6 duplicate address detection)."""
    deadline = time.monotonic() + timeout
    with ipr(ns) as sock:
        index = sock.link_lookup(ifname=name)[0]
        while time.monotonic() < deadline:
            flags = [m.get("IFA_FLAGS") or m["flags"] for m in sock.get_addr(index=index)]
            if not any(f & IFA_F_TENTATIVE for f in flags):
                return
            time.sleep(0.1)
    raise AssertionError("addresses of %s in %s still tentative after %ss" % (name, ns, timeout))


def ping(ns, address, pid=None):
    """One ping from inside ``ns`` (a name, or the namespace of ``pid``)."""
    enter = ["nsenter", "-t", str(pid), "-n"] if pid else ["ip", "netns", "exec", ns]
    six = ["-6"] if ":" in address else []
    proc = subprocess.run(enter + ["ping", *six, "-c1", "-W1", address], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, "ping %s from %s failed:\n%s%s" % (address, ns or pid, proc.stdout, proc.stderr)


def add_link(ns, name, kind, **kwargs):
    with ipr(ns) as sock:
        sock.link("add", ifname=name, kind=kind, **kwargs)
        if kind != "veth":
            sock.link("set", index=sock.link_lookup(ifname=name)[0], state="up")


def set_link(ns, name, **kwargs):
    with ipr(ns) as sock:
        sock.link("set", index=sock.link_lookup(ifname=name)[0], **kwargs)


def set_addr(ns, name, op, address):
    ip, prefixlen = address.split("/")
    with ipr(ns) as sock:
        sock.addr(op, index=sock.link_lookup(ifname=name)[0], address=ip, prefixlen=int(prefixlen))


# ---------------------------------------------------------------------------- fixtures

class Namespaces:
    """Unique namespace names; ``make()`` creates one, ``reserve()`` only picks a free name.
    ``cleanup()`` deletes exactly the names handed out here that exist, nothing else."""

    def __init__(self):
        self.names = []

    def reserve(self):
        while True:
            name = "vt%d-%d" % (os.getpid(), next(_counter))
            if not ns_exists(name):
                self.names.append(name)
                return name

    def make(self):
        name = self.reserve()
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def cleanup(self):
        for name in reversed(self.names):
            if ns_exists(name):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def ns():
    namespaces = Namespaces()
    yield namespaces
    namespaces.cleanup()


@pytest.fixture(scope="module")
def module_ns():
    namespaces = Namespaces()
    yield namespaces
    namespaces.cleanup()


@pytest.fixture
def host_names():
    """Unique interface names for the host namespace; the veths left under them are deleted."""
    names = []

    def make():
        name = "vh%d%d" % (os.getpid(), next(_counter))
        assert len(name) <= 15 and link(None, name) is None
        names.append(name)
        return name

    yield make
    for name in names:
        left = link(None, name)
        if left is not None and left["kind"] == "veth":
            with IPRoute() as sock:
                sock.link("del", index=left["ifindex"])


@pytest.fixture
def netns_process():
    """Start ``unshare -n sleep`` processes, each in a fresh network namespace; returns their PIDs.
    Each is killed by its PID at teardown."""
    procs = []

    def start(inside=None):
        """A process in a new namespace, or in the named namespace ``inside``."""
        enter = ["ip", "netns", "exec", inside] if inside else ["unshare", "-n"]
        proc = subprocess.Popen(enter + ["sleep", "60"])
        procs.append(proc)
        own = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 5
        while os.stat("/proc/%d/ns/net" % proc.pid).st_ino == own:
            assert time.monotonic() < deadline, "%s did not switch namespace" % enter[0]
            time.sleep(0.01)
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- running the module

def veth(cp, args, check=False, diff=True, **kw):
    return run_module(cp, "netns_veth", args, check=check, diff=diff, **kw)


def ok(result):
    assert not result["failed"], result.get("msg", result)
    return result


def untouched(namespaces, host_names=()):
    """A pause hook for run_batch: the kernel is as it is now."""
    before = snapshot(namespaces, host_names)

    def check(result):
        assert snapshot(namespaces, host_names) == before, "--check changed the kernel: %s" % result.get("actions")
    return check


def converge(cp, args, namespaces, host_names=(), check_again=False):
    """In one playbook: --check (changed, kernel untouched), a real run (changed), a real run
    again (unchanged) and with ``check_again`` a last --check run (unchanged too).
    Returns (check result, real result)."""
    check, real, *unchanged = run_batch(cp, "netns_veth", [
        {"args": args, "check": True, "diff": True, "pause": untouched(namespaces, host_names)},
        {"args": args, "diff": True}, {"args": args, "diff": True}]
        + [{"args": args, "diff": True, "check": True}] * check_again)
    assert ok(check)["changed"] and check["actions"], check
    assert ok(real)["changed"] and real["actions"], real
    assert real["diff"]["before"] != real["diff"]["after"]
    for result in unchanged:
        assert not ok(result)["changed"] and result["actions"] == [], result["actions"]
        assert result["diff"]["before"] == result["diff"]["after"] == real["diff"]["after"]
    return check, real


def expect_end(ns, name, **want):
    """The kernel's view of one end has the wanted fields (and it is a veth)."""
    have = link(ns, name)
    assert have is not None, "%s missing in %s" % (name, ns or "the host namespace")
    assert have["kind"] == "veth"
    for key, value in want.items():
        assert have[key] == value, "%s in %s: %s is %r, want %r" % (name, ns, key, have[key], value)
    return have


def assert_returned(end, kernel, namespace, addresses):
    """A returned end matches the kernel."""
    assert end["namespace"] == namespace
    for key in ("name", "ifindex", "mac", "mtu", "state", "master", "kind"):
        assert end[key] == kernel[key], key
    assert sorted(end["addresses"]) == sorted(addresses) == kernel["addresses"]


# ---------------------------------------------------------------------------- present

def test_pair_between_namespaces(collection_path, ns):
    n1, n2 = ns.make(), ns.make()
    args = {"name": "a0", "namespace": n1, "mtu": 1400, "mac": "02:00:5E:10:00:01",  # upper case on purpose
            "addresses": ["10.77.1.1/24", "fd77:1::1/64"],
            "peer": {"name": "b0", "namespace": n2, "mac": "02:00:5e:10:00:02",
                     "addresses": ["fd77:1:0::2/64", "10.77.1.2/24"]}}
    check, real = converge(collection_path, args, [n1, n2], check_again=True)

    # Both MACs are given, so --check could predict the outcome exactly.
    assert check["diff"]["before"] == {"end": None, "peer": None}
    assert check["diff"]["after"] == real["diff"]["after"]
    assert any("create veth a0" in a for a in real["actions"])

    a = expect_end(n1, "a0", mtu=1400, mac="02:00:5e:10:00:01", state="up", master=None,
                   addresses=["10.77.1.1/24", "fd77:1::1/64"])
    b = expect_end(n2, "b0", mtu=1400, mac="02:00:5e:10:00:02", state="up", master=None,
                   addresses=["10.77.1.2/24", "fd77:1::2/64"])
    assert paired(n1, "a0", n2, "b0")
    assert_returned(real["end"], a, n1, ["10.77.1.1/24", "fd77:1::1/64"])
    assert_returned(real["peer"], b, n2, ["10.77.1.2/24", "fd77:1::2/64"])

    ping(n1, "10.77.1.2")
    ping(n2, "10.77.1.1")
    wait_dad(n1, "a0")
    wait_dad(n2, "b0")
    ping(n1, "fd77:1::2")
    ping(n2, "fd77:1::1")


def test_end_in_host_namespace(collection_path, ns, host_names):
    n1, host = ns.make(), host_names()
    args = {"name": host, "mtu": 1380, "addresses": ["10.77.2.1/30"],
            "peer": {"name": "eth0", "namespace": n1, "addresses": ["10.77.2.2/30"]}}
    check, real = converge(collection_path, args, [n1], host_names=[host])
    assert real["end"]["namespace"] is None and real["end"]["name"] == host
    expect_end(None, host, mtu=1380, state="up", addresses=["10.77.2.1/30"])
    expect_end(n1, "eth0", mtu=1380, state="up", addresses=["10.77.2.2/30"])
    assert paired(None, host, n1, "eth0")

    gone = ok(veth(collection_path, dict(args, state="absent")))
    assert gone["changed"] and gone["end"] is None and gone["peer"] is None
    assert link(None, host) is None and link(n1, "eth0") is None


def test_bridge_master(collection_path, ns):
    n1, n2 = ns.make(), ns.make()
    add_link(n1, "br0", "bridge")
    args = {"name": "a0", "namespace": n1, "master": "br0", "peer": {"name": "b0", "namespace": n2}}
    check, real = converge(collection_path, args, [n1, n2])
    bridge = link(n1, "br0")
    expect_end(n1, "a0", master="br0")
    assert real["end"]["master"] == "br0" and check["diff"]["after"]["end"]["master"] == "br0"
    assert link(n1, "br0")["ifindex"] == bridge["ifindex"]

    check, real = converge(collection_path, dict(args, master=""), [n1, n2])
    expect_end(n1, "a0", master=None)
    assert real["diff"]["before"]["end"]["master"] == "br0" and real["diff"]["after"]["end"]["master"] is None
    assert "a0 in namespace %s: master -> none" % n1 in real["actions"]


def test_create_namespaces(collection_path, ns):
    new1, new2 = ns.reserve(), ns.reserve()
    args = {"name": "a0", "namespace": new1, "addresses": ["10.77.3.1/24"], "create_namespaces": True,
            "peer": {"name": "b0", "namespace": new2, "addresses": ["10.77.3.2/24"]}}
    check, real = converge(collection_path, args, [new1, new2])
    assert "create namespace %s" % new1 in check["actions"] and "create namespace %s" % new2 in check["actions"]
    assert check["actions"][:2] == real["actions"][:2]
    assert ns_exists(new1) and ns_exists(new2)
    expect_end(new1, "a0", addresses=["10.77.3.1/24"])
    expect_end(new2, "b0", addresses=["10.77.3.2/24"])
    assert paired(new1, "a0", new2, "b0")
    ping(new1, "10.77.3.2")


def test_create_one_namespace_for_both_ends(collection_path, ns):
    new = ns.reserve()
    args = {"name": "a0", "namespace": new, "create_namespaces": True, "peer": {"name": "b0", "namespace": new}}
    check, real = converge(collection_path, args, [new])
    for result in (check, real):
        assert result["actions"].count("create namespace %s" % new) == 1, result["actions"]
    assert paired(new, "a0", new, "b0")


@pytest.mark.parametrize("form", ["pid", "path"])
def test_namespace_by_pid_or_path(collection_path, ns, netns_process, form):
    n1, pid = ns.make(), netns_process()
    path = "/proc/%d/ns/net" % pid
    given = str(pid) if form == "pid" else path
    args = {"name": "a0", "namespace": n1, "addresses": ["10.77.4.1/24"],
            "peer": {"name": "eth1", "namespace": given, "addresses": ["10.77.4.2/24"]}}
    check, real = converge(collection_path, args, [n1, path])
    assert real["peer"]["namespace"] == given
    expect_end(path, "eth1", addresses=["10.77.4.2/24"], state="up")
    assert paired(n1, "a0", path, "eth1")
    ping(n1, "10.77.4.2")
    ping(None, "10.77.4.1", pid=pid)


def test_one_namespace_by_name_and_by_pid(collection_path, ns, netns_process):
    # Both ends in the same namespace, given once by name and once by the PID of a process in it.
    n1 = ns.make()
    pid = netns_process(inside=n1)
    args = {"name": "a0", "namespace": n1, "addresses": ["10.77.6.1/24"],
            "peer": {"name": "b0", "namespace": str(pid), "addresses": ["10.77.6.2/24"]}}
    converge(collection_path, args, [n1])
    assert paired(n1, "a0", n1, "b0")
    remove, clash = run_batch(collection_path, "netns_veth", [
        {"args": dict(args, state="absent"), "check": True},
        {"args": dict(args, peer=dict(args["peer"], name="a0"))}])
    assert ok(remove)["actions"] == ["a0 in namespace %s: delete" % n1]
    assert clash["failed"] and clash["msg"].startswith("peer.name: both ends are named a0"), clash["msg"]
    assert paired(n1, "a0", n1, "b0")


def test_link_state(collection_path, ns):
    n1, n2 = ns.make(), ns.make()
    args = {"name": "a0", "namespace": n1, "link_state": "down", "peer": {"name": "b0", "namespace": n2}}
    check, real = converge(collection_path, args, [n1, n2])
    expect_end(n1, "a0", state="down")
    expect_end(n2, "b0", state="down")
    assert real["end"]["state"] == real["peer"]["state"] == "down"

    check, real = converge(collection_path, dict(args, link_state="up"), [n1, n2])
    expect_end(n1, "a0", state="up")
    expect_end(n2, "b0", state="up")
    assert sorted(real["actions"]) == ["a0 in namespace %s: set up" % n1, "b0 in namespace %s: set up" % n2]
    assert real["diff"]["before"]["peer"]["state"] == "down" and real["diff"]["after"]["peer"]["state"] == "up"


def test_addresses_within_one_subnet(collection_path, ns):
    # Removing a primary IPv4 address makes the kernel drop the secondaries of its subnet too.
    n1, n2 = ns.make(), ns.make()
    args = {"name": "a0", "namespace": n1, "addresses": ["10.77.7.1/24", "10.77.7.2/24", "10.77.7.3/24"],
            "peer": {"name": "b0", "namespace": n2}}
    add_link(n1, "a0", "veth", peer={"ifname": "b0", "net_ns_fd": n2})
    for address in args["addresses"]:
        set_addr(n1, "a0", "add", address)
    set_link(n1, "a0", state="up")
    set_link(n2, "b0", state="up")
    check, real = converge(collection_path, dict(args, addresses=["10.77.7.3/24", "fd77:7::1/64"]), [n1, n2])
    # 10.77.7.3 went with its primary 10.77.7.1 and was added back: --check cannot foresee that.
    assert set(real["actions"]) - set(check["actions"]) == {"a0 in namespace %s: add address 10.77.7.3/24" % n1}
    expect_end(n1, "a0", addresses=["10.77.7.3/24", "fd77:7::1/64"])
    real, again = run_batch(collection_path, "netns_veth", [{"args": dict(args, addresses=[])}] * 2)
    assert ok(real)["changed"] and not ok(again)["changed"]
    expect_end(n1, "a0", addresses=[])


# ---------------------------------------------------------------------------- drift

@pytest.fixture(scope="module")
def drift_pair(collection_path, module_ns):
    """A converged pair a0 (ns1, bridge port of br0) <-> b0 (ns2), and a spare ns3."""
    n1, n2, n3 = module_ns.make(), module_ns.make(), module_ns.make()
    add_link(n1, "br0", "bridge")
    args = {"name": "a0", "namespace": n1, "mtu": 1400, "mac": "02:00:5e:20:00:01", "master": "br0",
            "peer": {"name": "b0", "namespace": n2, "mac": "02:00:5e:20:00:02",
                     "addresses": ["10.77.5.2/24", "fd77:5::2/64"]}}
    ok(veth(collection_path, args, diff=False))
    want = {"a0": dict(mtu=1400, mac="02:00:5e:20:00:01", master="br0", state="up", addresses=[]),
            "b0": dict(mtu=1400, mac="02:00:5e:20:00:02", master=None, state="up",
                       addresses=["10.77.5.2/24", "fd77:5::2/64"])}
    return {"args": args, "ns": (n1, n2, n3), "want": want}


def _move(n_from, name, n_to):
    with ipr(n_from) as sock:
        sock.link("set", index=sock.link_lookup(ifname=name)[0], net_ns_fd=n_to)


def _stray(n1, n2, n3):
    # The pair is gone; b0 is now one end of an unrelated veth whose other end is x0.
    with ipr(n1) as sock:
        sock.link("del", index=sock.link_lookup(ifname="a0")[0])
    add_link(n2, "b0", "veth", peer="x0")


def _renamed(n1, n2, n3):
    set_link(n1, "a0", state="down")
    set_link(n1, "a0", ifname="a0-old")


DRIFTS = {
    # name: (make the drift, an action the repair must report)
    "mtu": (lambda n1, n2, n3: set_link(n2, "b0", mtu=1300), "b0 in namespace {n2}: mtu 1300 -> 1400"),
    "mac": (lambda n1, n2, n3: set_link(n1, "a0", address="02:00:5e:20:99:99"),
            "a0 in namespace {n1}: mac 02:00:5e:20:99:99 -> 02:00:5e:20:00:01"),
    "extra-address": (lambda n1, n2, n3: set_addr(n2, "b0", "add", "10.77.5.99/24"),
                      "b0 in namespace {n2}: remove address 10.77.5.99/24"),
    "missing-address": (lambda n1, n2, n3: set_addr(n2, "b0", "del", "fd77:5::2/64"),
                        "b0 in namespace {n2}: add address fd77:5::2/64"),
    "master-removed": (lambda n1, n2, n3: set_link(n1, "a0", master=0), "a0 in namespace {n1}: master -> br0"),
    "link-down": (lambda n1, n2, n3: set_link(n2, "b0", state="down"), "b0 in namespace {n2}: set up"),
    "end-moved": (lambda n1, n2, n3: _move(n2, "b0", n3), "create veth a0 (namespace {n1}) <-> b0 (namespace {n2})"),
    "stray-veth": (_stray, "b0 in namespace {n2}: delete (not the peer of a0)"),
    "end-renamed": (_renamed, "b0 in namespace {n2}: delete (not the peer of a0)"),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_drift_repaired(collection_path, drift_pair, drift):
    cp, args, (n1, n2, n3) = collection_path, drift_pair["args"], drift_pair["ns"]
    make, action = DRIFTS[drift]
    make(n1, n2, n3)

    check, real, again = run_batch(cp, "netns_veth", [
        {"args": args, "check": True, "pause": untouched([n1, n2, n3])}, {"args": args, "diff": True}, {"args": args}])
    assert ok(check)["changed"] and action.format(n1=n1, n2=n2) in check["actions"], check["actions"]
    assert ok(real)["changed"] and action.format(n1=n1, n2=n2) in real["actions"], real["actions"]
    assert not ok(again)["changed"], again["actions"]
    for name, namespace in (("a0", n1), ("b0", n2)):
        expect_end(namespace, name, **drift_pair["want"][name])
    assert paired(n1, "a0", n2, "b0")
    assert set(links(n3)) == {"lo"} and set(links(n2)) == {"lo", "b0"} and set(links(n1)) == {"lo", "br0", "a0"}


# ---------------------------------------------------------------------------- absent

def test_absent_removes_pair(collection_path, ns):
    n1, n2 = ns.make(), ns.make()
    add_link(n1, "a0", "veth", peer={"ifname": "b0", "net_ns_fd": n2})
    args = {"name": "a0", "namespace": n1, "peer": {"name": "b0", "namespace": n2}, "state": "absent"}
    check, real, again = run_batch(collection_path, "netns_veth", [
        {"args": args, "check": True, "pause": untouched([n1, n2])}] + [{"args": args, "diff": True}] * 2)
    assert ok(check)["changed"] and check["actions"] == ["a0 in namespace %s: delete" % n1]
    assert ok(real)["changed"] and real["actions"] == ["a0 in namespace %s: delete" % n1]
    assert real["diff"]["before"]["end"]["name"] == "a0" and real["diff"]["after"] == {"end": None, "peer": None}
    assert not ok(again)["changed"] and again["actions"] == []
    assert link(n1, "a0") is None and link(n2, "b0") is None


def unrelated_veths(ns):
    """a0 (in n1) and b0 (in n2) are veths whose peers live in two further namespaces. In fresh
    namespaces all four get ifindex 2, so each names the other's index as its peer's."""
    n1, n2, n3, n4 = ns.make(), ns.make(), ns.make(), ns.make()
    add_link(n1, "a0", "veth", peer={"ifname": "x0", "net_ns_fd": n3})
    add_link(n2, "b0", "veth", peer={"ifname": "y0", "net_ns_fd": n4})
    a0, b0 = link(n1, "a0"), link(n2, "b0")
    assert a0["link"] == b0["ifindex"] and b0["link"] == a0["ifindex"], "precondition: matching indexes"
    assert not paired(n1, "a0", n2, "b0")
    return n1, n2, n3, n4


def test_present_replaces_unrelated_veths_with_matching_indexes(collection_path, ns):
    n1, n2, n3, n4 = unrelated_veths(ns)
    args = {"name": "a0", "namespace": n1, "peer": {"name": "b0", "namespace": n2}}
    check, real = converge(collection_path, args, [n1, n2, n3, n4])
    assert "a0 in namespace %s: delete (not the peer of b0)" % n1 in real["actions"]
    assert paired(n1, "a0", n2, "b0")
    assert set(links(n3)) == set(links(n4)) == {"lo"}


def test_absent_removes_unrelated_veths_with_matching_indexes(collection_path, ns):
    n1, n2, n3, n4 = unrelated_veths(ns)
    args = {"name": "a0", "namespace": n1, "peer": {"name": "b0", "namespace": n2}, "state": "absent"}
    real, again = run_batch(collection_path, "netns_veth", [{"args": args}] * 2)
    assert ok(real)["actions"] == ["a0 in namespace %s: delete" % n1, "b0 in namespace %s: delete" % n2]
    assert not ok(again)["changed"]
    assert all(set(links(n)) == {"lo"} for n in (n1, n2, n3, n4))


def test_absent_leaves_other_devices_alone(collection_path, ns):
    n1, n2, missing = ns.make(), ns.make(), ns.reserve()
    add_link(n1, "a0", "bridge")
    add_link(n2, "b0", "ifb")
    before = snapshot([n1, n2, missing])
    runs = [{"args": {"name": "a0", "namespace": n1, "peer": {"name": "b0", "namespace": peer_ns},
                      "state": "absent"}} for peer_ns in (n2, missing)]
    for result in run_batch(collection_path, "netns_veth", runs):
        assert not ok(result)["changed"] and result["actions"] == []
    assert snapshot([n1, n2, missing]) == before


# ---------------------------------------------------------------------------- bad input

def _missing_pid():
    pid = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    while os.path.exists("/proc/%d" % pid):
        pid -= 1
    return pid


BAD = {
    # case: (changes to the base arguments, field, pattern the message "field: reason" must contain)
    "missing-namespace": ({"namespace": "{missing}"}, "namespace",
                          r"network namespace {missing} does not exist \(set create_namespaces: true"),
    "missing-peer-namespace": ({"peer": {"namespace": "{missing}"}}, "peer.namespace", r"{missing} does not exist"),
    "name-is-a-bridge": ({"name": "br0"}, "name",
                         r"a bridge device named br0 already exists in namespace {n1}; it is not a veth end"),
    "name-taken-namespace-to-create": ({"namespace": "{missing}", "create_namespaces": True, "peer": {"name": "d0"}},
                                       "peer.name", r"an? ifb device named d0 already exists"),
    "name-16-chars": ({"name": "a" * 16}, "name", r"'a{{16}}' is 16 characters long; the kernel allows at most 15"),
    "name-with-slash": ({"peer": {"name": "b/0"}}, "peer.name", r"'b/0' may not .* contain .*'/'"),
    "mtu-10": ({"mtu": 10}, "mtu", r"MTU 10 is outside 68\.\.65535"),
    "mtu-70000": ({"mtu": 70000}, "mtu", r"MTU 70000 is outside 68\.\.65535"),
    "peer-mtu-10": ({"peer": {"mtu": 10}}, "peer.mtu", r"MTU 10 is outside"),
    "bad-mac": ({"mac": "02:00:5e:00:00:zz"}, "mac", r"'02:00:5e:00:00:zz' is not a MAC address"),
    "multicast-mac": ({"peer": {"mac": "01:00:5e:00:00:01"}}, "peer.mac", r"01:00:5e:00:00:01 is a multicast MAC"),
    "bad-address": ({"addresses": ["10.77.0.300/24"]}, "addresses", r"'10.77.0.300/24' is not an IPv4 or IPv6 address"),
    "bad-prefix": ({"peer": {"addresses": ["fd77::1/129"]}}, "peer.addresses", r"'fd77::1/129' is not an IPv4 or IPv6"),
    "ipv6-link-local": ({"addresses": ["fe80::5/64"]}, "addresses", r"fe80::5/64 is an IPv6 link-local address"),
    "ipv6-below-mtu-1280": ({"mtu": 1000, "peer": {"addresses": ["fd77::2/64"]}}, "peer.addresses",
                            r"IPv6 addresses need an MTU of at least 1280; the MTU is 1000"),
    "duplicate-address": ({"addresses": ["10.77.0.1/24", "10.77.0.1/25"]}, "addresses",
                          r"address 10.77.0.1 is listed twice"),
    "missing-master": ({"master": "nobr"}, "master", r"bridge nobr does not exist"),
    "master-not-a-bridge": ({"master": "d0"}, "master", r"d0 is an? ifb device, not a bridge"),
    "master-in-namespace-to-create": ({"peer": {"namespace": "{missing}", "master": "br0"}, "create_namespaces": True},
                                      "peer.master", r"bridge br0 cannot exist in namespace {missing}"),
    "same-name-same-namespace": ({"peer": {"name": "a0", "namespace": "{n1}"}}, "peer.name",
                                 r"both ends are named a0 in namespace {n1}"),
    "relative-namespace-path": ({"namespace": "run/netns/{n1}"}, "namespace", r"'run/netns/{n1}' must be absolute"),
    "path-not-a-namespace": ({"peer": {"namespace": "/etc/hostname"}}, "peer.namespace",
                             r"/etc/hostname is not a network namespace"),
    "missing-pid": ({"namespace": "{pid}"}, "namespace", r"no process with PID {pid}"),
}


@pytest.fixture(scope="module")
def bad_runs(collection_path, module_ns):
    """Run every BAD case (in two playbooks), with snapshots of everything they could have
    touched taken before and after."""
    n1, n2, missing = module_ns.make(), module_ns.make(), module_ns.reserve()
    add_link(n1, "br0", "bridge")
    add_link(n1, "d0", "ifb")
    add_link(n2, "d0", "ifb")
    names = {"n1": n1, "n2": n2, "missing": missing, "pid": _missing_pid()}

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value.format(**names) if isinstance(value, str) else value

    def args_for(change):
        args = {"name": "a0", "namespace": n1, "mtu": 1400, "addresses": ["10.77.0.1/24"],
                "peer": {"name": "b0", "namespace": n2, "addresses": ["10.77.0.2/24"]}}
        change = fill(change)
        args["peer"].update(change.pop("peer", {}))
        args.update(change)
        return args

    def run(cases):
        return run_batch(collection_path, "netns_veth", [{"args": args_for(BAD[case][0])} for case in cases])

    before = snapshot([n1, n2, missing])
    halves = [list(BAD)[0::2], list(BAD)[1::2]]
    with ThreadPoolExecutor(len(halves)) as pool:  # two playbooks side by side, one per core
        results = {case: result for cases, part in zip(halves, pool.map(run, halves))
                   for case, result in zip(cases, part)}
    return {"results": results, "before": before, "after": snapshot([n1, n2, missing]),
            "pattern": lambda p: p.format(**{k: re.escape(str(v)) for k, v in names.items()})}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(bad_runs, case):
    field, pattern = BAD[case][1:]
    result = bad_runs["results"][case]
    assert result["failed"] and not result["changed"], result
    assert result["field"] == field
    assert result["msg"].startswith(field + ": "), result["msg"]
    assert re.search(bad_runs["pattern"](pattern), result["msg"]), result["msg"]
    assert "Traceback" not in result.get("module_stderr", "")
    assert bad_runs["after"] == bad_runs["before"], "a failed run changed the kernel"


def test_bad_choice_is_rejected_by_ansible(collection_path, ns):
    n1 = ns.make()
    result = veth(collection_path, {"name": "a0", "namespace": n1, "link_state": "sideways",
                                    "peer": {"name": "b0", "namespace": n1}})
    assert result["failed"] and "link_state" in result["msg"] and "sideways" in result["msg"]
    assert set(links(n1)) == {"lo"}


def test_not_root(collection_path, ns):
    n1 = ns.make()
    # nobody cannot read the session's collection (under root's private pytest tmp): copy it.
    readable = Path(tempfile.mkdtemp(prefix="veth-nonroot-"))
    try:
        shutil.copytree(collection_path, readable / "c")
        for path in [readable, *readable.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        result = veth(str(readable / "c"), {"name": "a0", "namespace": n1, "peer": {"name": "b0", "namespace": n1}},
                      user="nobody")
    finally:
        shutil.rmtree(readable)
    assert result["failed"] and not result["changed"], result
    assert "must run as root" in result["msg"] and "uid 65534" in result["msg"], result["msg"]
    assert set(links(n1)) == {"lo"}
