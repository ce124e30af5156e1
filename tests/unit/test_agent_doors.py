"""Pure parts of the agent's and the CNI plugin's front doors: DNS packets and the name table, CNI
arguments and errors, the Docker NetworkID map on disk."""
from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct

from ansible_collections.overlay.vxlan.agent import docker, names
from ansible_collections.overlay.vxlan.cni import __main__ as cni
from ansible_collections.overlay.vxlan.plugins.module_utils import _keys


def query(name, qtype=1, ident=0x4242):
    q = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    return q + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1)


def test_a_question_is_parsed_and_answered_with_one_a_record():
    data = query("C0.demonet")
    question = names.parse_question(data)
    assert question[0] == 0x4242 and question[2] == "C0.demonet" and question[3] == names.TYPE_A
    reply = names.answer(data, question, "192.168.0.100")
    ident, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    assert ident == 0x4242 and flags & 0x8000 and flags & 0x0400 and qd == 1 and an == 1
    assert reply.endswith(socket.inet_aton("192.168.0.100"))
    empty = names.answer(data, question, None)  # a known name asked for AAAA: no answer, no error
    assert struct.unpack("!H", empty[6:8])[0] == 0 and struct.unpack("!H", empty[2:4])[0] & 15 == 0
    fail = names.failure(data, question, names.RCODE_SERVFAIL)
    assert struct.unpack("!H", fail[2:4])[0] & 15 == names.RCODE_SERVFAIL


def test_malformed_questions_are_dropped():
    for data in (b"", b"\0" * 11, query("x")[:-3], b"\x12\x34\x81\x00" + query("x")[4:],  # a response
                 query("x")[:12] + b"\xc0\x0c\0\0\0\0", query("x")[:12] + b"\x3fabc"):
        assert names.parse_question(data) is None, data


def test_the_table_names_endpoints_by_name_and_by_name_dot_network():
    layout = _keys.Layout("overlay")
    tree = {layout.network("demonet"): ({"id": "n1", "name": "demonet"}, 1),
            layout.network("b-net"): ({"id": "n2", "name": "b-net"}, 2),
            layout.endpoint("n1", "C0"): ({"name": "C0", "ip": "192.168.0.100", "network_id": "n1"}, 3),
            layout.endpoint("n2", "C0"): ({"name": "C0", "ip": "10.9.0.2", "network_id": "n2"}, 4),
            layout.endpoint("n1", "junk"): ("not a record", 5),
            layout.endpoint("gone", "X"): ({"name": "X", "ip": "1.2.3.4", "network_id": "gone"}, 6)}
    table = names.Table()
    table.rebuild(tree, layout)
    assert table.lookup("c0.demonet.") == "192.168.0.100" and table.lookup("C0.B-NET") == "10.9.0.2"
    assert table.lookup("c0") == "10.9.0.2"  # the network whose name sorts first
    assert table.lookup("x") is None and table.lookup("junk") is None


def test_aliases_answer_like_names_but_never_hide_a_name():
    layout = _keys.Layout("overlay")
    tree = {layout.network("demonet"): ({"id": "n1", "name": "demonet"}, 1),
            layout.endpoint("n1", "e" * 64): (
                {"name": "e" * 64, "ip": "192.168.0.100", "network_id": "n1", "aliases": ["C0", "db", 7]}, 2),
            layout.endpoint("n1", "db"): ({"name": "db", "ip": "192.168.0.7", "network_id": "n1",
                                           "aliases": "not a list"}, 3)}
    table = names.Table()
    table.rebuild(tree, layout)
    assert table.lookup("c0") == table.lookup("C0.demonet") == table.lookup("e" * 64) == "192.168.0.100"
    assert table.lookup("db") == table.lookup("db.demonet") == "192.168.0.7"  # the endpoint named db wins


def test_upstreams_skip_the_servers_own_addresses(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search lab\nnameserver 127.0.0.1\nnameserver 10.0.0.53\n")
    assert names.upstreams_from_resolv_conf(str(conf), exclude={"127.0.0.1"}) == [("10.0.0.53", 53)]


def test_cni_args_and_params():
    assert cni.cni_args("IgnoreUnknown=1;K8S_POD_NAME=C0;IP=192.168.0.5") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "C0", "IP": "192.168.0.5"}
    params = cni.engine_params({"name": "demonet", "consul_host": "10.0.0.5"},
                               {"CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
                                "CNI_ARGS": "IP=192.168.0.5"})
    assert params["network"] == "demonet" and params["ip"] == "192.168.0.5" and params["namespace"] == "/run/netns/x"


def run_cni(env, config):
    out = io.StringIO()
    rc = cni.main(stdin=io.StringIO(json.dumps(config) if config is not None else "{"), stdout=out, environ=env)
    return rc, json.loads(out.getvalue()) if out.getvalue() else None


def test_cni_errors_follow_the_spec_and_name_the_field(tmp_path):
    rc, out = run_cni({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.0.0"})
    assert rc == 0 and out["supportedVersions"] == cni.SUPPORTED
    rc, out = run_cni({"CNI_COMMAND": "ADD"}, None)  # not JSON
    assert rc == 1 and out["code"] == cni.ERR_CONFIG and "JSON" in out["msg"]
    rc, out = run_cni({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x"}, {"cniVersion": "1.0.0"})
    assert rc == 1 and out["code"] == cni.ERR_CONFIG and out["msg"].startswith("network:")
    missing = str(tmp_path / "no-token")
    rc, out = run_cni({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x"},
                      {"cniVersion": "1.0.0", "name": "n", "consul_token_file": missing})
    assert rc == 1 and out["msg"].startswith("consul_token_file:") and out["cniVersion"] == "1.0.0"
    rc, out = run_cni({"CNI_COMMAND": "BOGUS", "CNI_CONTAINERID": "x"}, {"cniVersion": "1.0.0", "name": "n"})
    assert rc == 1 and out["code"] == cni.ERR_ARGS


def test_the_docker_network_map_is_kept_root_only_and_survives_a_restart(tmp_path):
    path = str(tmp_path / "state" / "docker-networks.json")
    first = docker.NetworkMap(path)
    first.put("a" * 64, {"id": "n1", "name": "demonet", "subnet": "192.168.0.0/24"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = docker.NetworkMap(path)
    assert again.get("a" * 64)["name"] == "demonet" and again.get("b" * 64) is None
    assert again.pop("a" * 64)["id"] == "n1" and docker.NetworkMap(path).get("a" * 64) is None
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]
