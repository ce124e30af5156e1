"""Hostile input (issue 12 section 7, issue 7 section 3): every string that becomes part of a Consul key
is checked against one pattern before any request, values are never stripped silently, subnets that
would collide with the host's own routing are refused, booleans are not integers. Each case must fail
with an error naming the option, and leave Consul and the kernel exactly as they were."""
from __future__ import annotations

import pytest

from overlay_helpers import DEMONET, PLAYBOOKS, kernel_snapshot, kv, seed_vars

SEED = str(PLAYBOOKS / "overlay_seed.yml")
VICTIM = {"name": "VICTIM", "subnet": "192.168.7.0/24"}
GOOD = {"subnet": "10.9.0.0/24"}  # a subnet nothing else objects to

# Strings that must never become (part of) a Consul key.
ESCAPES = ["../networks/VICTIM", "a/b", "a b", "a%2Fb", "..", ".", "na\u00efve", "x" * 255, "V0\n", "",
           " lead", "nul\x00"]
FEW = ["../networks/VICTIM", "a%2Fb", "..", "V0\n"]  # where a module is tried with a few of them


def _bad_name(field, value):
    return "%s: %r is not a valid name" % (field, value)


def _bad_host(value):
    return "host: %r is not a valid host name" % (value,)


E = {"network": "demonet", "namespace": "e1"}

# (task, id, module args, expected error): strings that become part of a key.
KEY_CASES = (
    [("Network cases", "name-%d" % i, dict(GOOD, name=v), _bad_name("name", v)) for i, v in enumerate(ESCAPES)]
    + [("Network cases", "host-%d" % i, dict(GOOD, name="n1", host=v), _bad_host(v)) for i, v in enumerate(ESCAPES)]
    + [("Network cases", "host-underscore", dict(GOOD, name="n1", host="a_b"), _bad_host("a_b"))]
    + [("Network cases", "prefix-%d" % i, dict(GOOD, name="n1", consul_prefix=p), "consul_prefix: %s" % reason)
       for i, (p, reason) in enumerate([
           ("rt/../rt2", "segment '..' of 'rt/../rt2' is not a valid name"),
           ("//", "must not be empty"),
           ("rt/a b", "segment 'a b' of 'rt/a b' is not a valid name"),
           ("overlay\n", "segment 'overlay\\n' of 'overlay\\n' is not a valid name"),
       ])]
    + [("Endpoint cases", "name-%d" % i, dict(E, name=v), _bad_name("name", v)) for i, v in enumerate(FEW + [""])]
    + [("Endpoint cases", "item-name-%d" % i,
        {"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1"}, {"name": v, "namespace": "e1"}]},
        _bad_name("endpoints[1].name", v)) for i, v in enumerate(FEW[:2])]
    + [("Endpoint cases", "network-%d" % i, {"network": v, "name": "E1", "namespace": "e1"},
        "network: %r is not a valid" % (v,)) for i, v in enumerate(FEW[:2])]
    + [("Endpoint cases", "host-%d" % i, dict(E, name="E1", host=v), _bad_host(v)) for i, v in enumerate(FEW[:2])]
    + [("VTEP cases", "host-0", {"host": "../networks/VICTIM"}, _bad_host("../networks/VICTIM")),
       ("VTEP cases", "prefix-dotdot", {"consul_prefix": "rt/../rt2"}, "consul_prefix: segment '..' of 'rt/../rt2'")]
)

# Values that reach the kernel or a record: no silent strip, no special or overlapping subnets, no booleans.
VALUE_CASES = [
    ("Network cases", "subnet-newline", {"name": "n1", "subnet": "10.9.0.0/24\n"}, "subnet: '10.9.0.0/24\\n' contains"),
    ("Network cases", "gateway-newline", {"name": "n1", "subnet": "10.9.0.0/24", "gateway": "10.9.0.1\n"},
     "gateway: '10.9.0.1\\n' contains"),
    ("Network cases", "subnet-default-route", {"name": "n1", "subnet": "0.0.0.0/0"}, "subnet: 0.0.0.0/0 is every"),
    ("Network cases", "subnet-loopback", {"name": "n1", "subnet": "127.0.0.0/8"}, "subnet: 127.0.0.0/8 is loopback"),
    ("Network cases", "subnet-link-local", {"name": "n1", "subnet": "169.254.0.0/16"},
     "subnet: 169.254.0.0/16 is link-local"),
    ("Network cases", "subnet-multicast", {"name": "n1", "subnet": "224.0.0.0/24"}, "subnet: 224.0.0.0/24 is multicast"),
    ("Network cases", "subnet-reserved", {"name": "n1", "subnet": "240.0.0.0/24"}, "subnet: 240.0.0.0/24 is reserved"),
    ("Network cases", "subnet-contains-underlay", {"name": "n1", "subnet": "10.0.0.0/8"},
     "subnet: 10.0.0.0/8 contains the underlay network 10.0.0.0/24 of eth0"),
    ("Network cases", "subnet-inside-underlay", {"name": "n1", "subnet": "10.0.0.128/25"},
     "subnet: 10.0.0.128/25 is inside the underlay network 10.0.0.0/24 of eth0"),
    ("Network cases", "subnet-inside-gateway", {"name": "n1", "subnet": "172.18.5.0/24"},
     "subnet: 172.18.5.0/24 is inside the gateway subnet 172.18.0.0/16"),
    ("Network cases", "vni-true", dict(GOOD, name="n1", vni=True), "vni: True is a boolean, not an integer"),
    ("Network cases", "port-true", dict(GOOD, name="n1", port=True), "port: True is a boolean, not an integer"),
    ("Network cases", "mtu-false", dict(GOOD, name="n1", mtu=False), "mtu: False is a boolean, not an integer"),
    ("Endpoint cases", "ip-newline", dict(E, name="E1", ip="192.168.0.50\n"), "ip: '192.168.0.50\\n' contains"),
    ("Endpoint cases", "mac-newline", dict(E, name="E1", mac="02:42:c0:a8:00:32\n"),
     "mac: '02:42:c0:a8:00:32\\n' contains"),
    ("Endpoint cases", "namespace-newline", dict(E, name="E1", namespace="e1\n"), "namespace: 'e1\\n' contains"),
    ("Endpoint cases", "gateway-subnet-newline", dict(E, name="E1", gateway_subnet="172.18.0.0/16\n"),
     "gateway_subnet: '172.18.0.0/16\\n' contains"),
    ("Endpoint cases", "gateway-subnet-overlaps-network", dict(E, name="E1", gateway_subnet="192.168.0.0/16"),
     "gateway_subnet: 192.168.0.0/16 contains the subnet 192.168.0.0/24 of network demonet"),
    ("Endpoint cases", "gateway-pool-exhausted", {"network": "demonet", "gateway_subnet": "172.30.0.0/30",
                                                  "gateway_bridge": "gwtiny",
                                                  "endpoints": [{"name": "E1", "namespace": "e1"},
                                                                {"name": "E2", "namespace": "e2"}]},
     "gateway_subnet: subnet 172.30.0.0/30 has 1 free addresses; 2 are needed"),
    ("VTEP cases", "host-newline", {"host": "docker0\n"}, _bad_host("docker0\n")),
]


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    lab.hosts["docker0"].add_netns("c0")
    lab.hosts["docker0"].add_netns("e1")
    lab.hosts["docker0"].add_netns("e2")
    endpoints = {"docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0",
                                                                   "ip": "192.168.0.100"}]}]}
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET, VICTIM], endpoints)).assert_ok()
    return lab


TASKS = ("Network cases", "Endpoint cases", "VTEP cases")


def _run_table(lab, cases):
    """Run every case through Ansible; return the cases without the expected error."""
    extra = {"%s_cases" % task.split()[0].lower(): [{"id": i, "args": a} for t, i, a, _e in cases if t == task]
             for task in TASKS}
    result = lab.ansible_playbook(str(PLAYBOOKS / "hostile_input.yml"), extra_vars=extra, timeout=1500)
    wrong = []
    for task in TASKS:
        mine = [c for c in cases if c[0] == task]
        items = result.results("docker0", task)["results"]
        assert len(items) == len(mine), task
        for (_t, case_id, _args, expected), item in zip(mine, items):
            if not item.get("failed") or expected not in item.get("msg", ""):
                wrong.append((task, case_id, item.get("failed"), item.get("msg")))
    return wrong


def _unchanged(lab, cases):
    d0 = lab.hosts["docker0"]
    before_all, before_kernel = kv(lab, prefix=""), kernel_snapshot(d0)  # every prefix: rt/, rt2/ too
    wrong = _run_table(lab, cases)
    assert wrong == [], "%d cases without the expected error:\n" % len(wrong) + "\n".join(map(str, wrong))
    assert kv(lab, prefix="") == before_all
    assert kernel_snapshot(d0) == before_kernel
    assert kv(lab)["overlay/v1/networks/VICTIM"]["subnet"] == VICTIM["subnet"]


def test_strings_that_become_keys_are_refused_before_any_request(lab):
    _unchanged(lab, KEY_CASES)


def test_values_subnets_and_booleans_are_refused_naming_the_option(lab):
    _unchanged(lab, VALUE_CASES)
