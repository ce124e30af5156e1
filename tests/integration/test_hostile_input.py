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
           " lead", "trail ", "tab\tbed", "nul\x00"]
FEW = ["../networks/VICTIM", "a%2Fb", "..", "V0\n"]  # where a module is tried with a few of them


def _bad_name(field, value):
    return "%s: %r is not a valid name" % (field, value)


def _bad_host(value):
    return "host: %r is not a valid host name" % (value,)


NETWORK_CASES = (
    [("name-%d" % i, dict(GOOD, name=v), _bad_name("name", v)) for i, v in enumerate(ESCAPES)]
    + [("host-%d" % i, dict(GOOD, name="n1", host=v), _bad_host(v)) for i, v in enumerate(ESCAPES)]
    + [("host-underscore", dict(GOOD, name="n1", host="a_b"), _bad_host("a_b")),
       ("host-dash-first", dict(GOOD, name="n1", host="-docker0"), _bad_host("-docker0")),
       ("host-empty-label", dict(GOOD, name="n1", host="docker0..lab"), _bad_host("docker0..lab"))]
    + [("prefix-%d" % i, dict(GOOD, name="n1", consul_prefix=p), "consul_prefix: %s" % reason)
       for i, (p, reason) in enumerate([
           ("rt/../rt2", "segment '..' of 'rt/../rt2' is not a valid name"),
           ("rt/./x", "segment '.' of 'rt/./x' is not a valid name"),
           ("//", "must not be empty"),
           ("rt//x", "segment '' of 'rt//x' is not a valid name"),
           ("rt/a b", "segment 'a b' of 'rt/a b' is not a valid name"),
           ("rt%2Fx", "segment 'rt%2Fx' of 'rt%2Fx' is not a valid name"),
           ("overlay\n", "segment 'overlay\\n' of 'overlay\\n' is not a valid name"),
           (" overlay", "segment ' overlay' of ' overlay' is not a valid name"),
       ])]
    + [
        ("subnet-newline", {"name": "n1", "subnet": "10.9.0.0/24\n"}, "subnet: '10.9.0.0/24\\n' contains"),
        ("subnet-space", {"name": "n1", "subnet": " 10.9.0.0/24"}, "subnet: ' 10.9.0.0/24' contains"),
        ("gateway-newline", {"name": "n1", "subnet": "10.9.0.0/24", "gateway": "10.9.0.1\n"},
         "gateway: '10.9.0.1\\n' contains"),
        ("subnet-default-route", {"name": "n1", "subnet": "0.0.0.0/0"}, "subnet: 0.0.0.0/0 is"),
        ("subnet-this-network", {"name": "n1", "subnet": "0.0.0.0/8"}, "subnet: 0.0.0.0/8 is"),
        ("subnet-loopback", {"name": "n1", "subnet": "127.0.0.0/8"}, "subnet: 127.0.0.0/8 is loopback"),
        ("subnet-loopback-part", {"name": "n1", "subnet": "127.1.0.0/24"}, "subnet: 127.1.0.0/24 is loopback"),
        ("subnet-link-local", {"name": "n1", "subnet": "169.254.0.0/16"}, "subnet: 169.254.0.0/16 is link-local"),
        ("subnet-link-local-part", {"name": "n1", "subnet": "169.254.5.0/24"},
         "subnet: 169.254.5.0/24 is link-local"),
        ("subnet-multicast", {"name": "n1", "subnet": "224.0.0.0/24"}, "subnet: 224.0.0.0/24 is multicast"),
        ("subnet-multicast-2", {"name": "n1", "subnet": "239.1.0.0/16"}, "subnet: 239.1.0.0/16 is multicast"),
        ("subnet-reserved", {"name": "n1", "subnet": "240.0.0.0/24"}, "subnet: 240.0.0.0/24 is reserved"),
        ("subnet-contains-multicast", {"name": "n1", "subnet": "192.0.0.0/2"}, "subnet: 192.0.0.0/2 "),
        ("subnet-contains-underlay", {"name": "n1", "subnet": "10.0.0.0/8"},
         "subnet: 10.0.0.0/8 contains the underlay network 10.0.0.0/24 of eth0"),
        ("subnet-inside-underlay", {"name": "n1", "subnet": "10.0.0.128/25"},
         "subnet: 10.0.0.128/25 is inside the underlay network 10.0.0.0/24 of eth0"),
        ("subnet-is-underlay", {"name": "n1", "subnet": "10.0.0.0/24"},
         "subnet: 10.0.0.0/24 is the underlay network 10.0.0.0/24 of eth0"),
        ("subnet-inside-gateway", {"name": "n1", "subnet": "172.18.5.0/24"},
         "subnet: 172.18.5.0/24 is inside the gateway subnet 172.18.0.0/16"),
        ("subnet-contains-gateway", {"name": "n1", "subnet": "172.16.0.0/12"},
         "subnet: 172.16.0.0/12 contains the gateway subnet 172.18.0.0/16"),
        ("vni-true", dict(GOOD, name="n1", vni=True), "vni: True is a boolean, not an integer"),
        ("port-true", dict(GOOD, name="n1", port=True), "port: True is a boolean, not an integer"),
        ("mtu-false", dict(GOOD, name="n1", mtu=False), "mtu: False is a boolean, not an integer"),
    ]
)

E = {"network": "demonet", "namespace": "e1"}
ENDPOINT_CASES = (
    [("name-%d" % i, dict(E, name=v), _bad_name("name", v)) for i, v in enumerate(ESCAPES[:10])]
    + [("item-name-%d" % i, {"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1"},
                                                                 {"name": v, "namespace": "e1"}]},
        _bad_name("endpoints[1].name", v)) for i, v in enumerate(FEW)]
    + [("network-%d" % i, {"network": v, "name": "E1", "namespace": "e1"}, "network: %r is not a valid" % (v,))
       for i, v in enumerate(FEW)]
    + [("host-%d" % i, dict(E, name="E1", host=v), _bad_host(v)) for i, v in enumerate(FEW)]
    + [
        ("ip-newline", dict(E, name="E1", ip="192.168.0.50\n"), "ip: '192.168.0.50\\n' contains"),
        ("mac-newline", dict(E, name="E1", mac="02:42:c0:a8:00:32\n"), "mac: '02:42:c0:a8:00:32\\n' contains"),
        ("namespace-newline", dict(E, name="E1", namespace="e1\n"), "namespace: 'e1\\n' contains"),
        ("ifname-newline", dict(E, name="E1", ifname="eth0\n"), "ifname: interface name 'eth0\\n'"),
        ("gateway-subnet-newline", dict(E, name="E1", gateway_subnet="172.18.0.0/16\n"),
         "gateway_subnet: '172.18.0.0/16\\n' contains"),
        ("item-ip-newline", {"network": "demonet", "endpoints": [{"name": "E1", "namespace": "e1",
                                                                  "ip": "192.168.0.50\n"}]},
         "endpoints[0].ip: '192.168.0.50\\n' contains"),
        ("gateway-subnet-overlaps-network", dict(E, name="E1", gateway_subnet="192.168.0.0/16"),
         "gateway_subnet: 192.168.0.0/16 contains the subnet 192.168.0.0/24 of network demonet"),
        ("gateway-pool-exhausted", {"network": "demonet", "gateway_subnet": "172.30.0.0/30",
                                    "endpoints": [{"name": "E1", "namespace": "e1"},
                                                  {"name": "E2", "namespace": "e1"}]},
         "gateway_subnet: subnet 172.30.0.0/30 has 1 free addresses; 2 are needed"),
    ]
)

VTEP_CASES = [("host-%d" % i, {"host": v}, _bad_host(v)) for i, v in enumerate(FEW)] + [
    ("prefix-dotdot", {"consul_prefix": "rt/../rt2"}, "consul_prefix: segment '..' of 'rt/../rt2'"),
]


@pytest.fixture(scope="module")
def lab(module_lab_factory):
    lab = module_lab_factory()
    lab.hosts["docker0"].add_netns("c0")
    lab.hosts["docker0"].add_netns("e1")
    endpoints = {"docker0": [{"network": "demonet", "endpoints": [{"name": "C0", "namespace": "c0",
                                                                   "ip": "192.168.0.100"}]}]}
    lab.ansible_playbook(SEED, extra_vars=seed_vars([DEMONET, VICTIM], endpoints)).assert_ok()
    return lab


def _by_id(result, task, cases):
    items = result.results("docker0", task)["results"]
    assert len(items) == len(cases)
    return {(task, case[0]): item for case, item in zip(cases, items)}


def test_hostile_input_is_refused_naming_the_option_and_changes_nothing(lab):
    d0 = lab.hosts["docker0"]
    before_kv, before_kernel = kv(lab), kernel_snapshot(d0)
    before_all = kv(lab, prefix="")  # also nothing under another prefix (rt/, rt2/ ...)
    tables = (("Network cases", NETWORK_CASES), ("Endpoint cases", ENDPOINT_CASES), ("VTEP cases", VTEP_CASES))
    extra = {"network_cases": [{"id": i, "args": a} for i, a, _e in NETWORK_CASES],
             "endpoint_cases": [{"id": i, "args": a} for i, a, _e in ENDPOINT_CASES],
             "vtep_cases": [{"id": i, "args": a} for i, a, _e in VTEP_CASES]}
    result = lab.ansible_playbook(str(PLAYBOOKS / "hostile_input.yml"), extra_vars=extra, timeout=1500)
    wrong = []
    for task, cases in tables:
        outcomes = _by_id(result, task, cases)
        for case_id, _args, expected in cases:
            item = outcomes[(task, case_id)]
            if not item.get("failed") or expected not in item.get("msg", ""):
                wrong.append((task, case_id, item.get("failed"), item.get("msg")))
    assert wrong == [], "%d cases without the expected error:\n" % len(wrong) + "\n".join(map(str, wrong))
    assert kv(lab) == before_kv
    assert kv(lab, prefix="") == before_all
    assert kernel_snapshot(d0) == before_kernel
    assert kv(lab)["overlay/v1/networks/VICTIM"]["subnet"] == VICTIM["subnet"]
