#!/usr/bin/python
# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: overlay_endpoint
short_description: Attach network namespaces (containers) to an overlay network
version_added: 0.1.0
description:
  - Attaches one endpoint, or a list of them in one task, to an overlay network created by
    M(overlay.vxlan.overlay_network), as Docker's classic overlay driver did.
  - Each endpoint is a veth pair from the target namespace (O(ifname), default V(eth0), with the network's MTU, its IP and
    a MAC of 02:42 followed by the IPv4 bytes) to the overlay namespace, on C(br0). Unless the network is internal, a
    second pair joins the host's gateway bridge (O(gateway_ifname), default V(eth1)) with an address from
    O(gateway_subnet) and carries the default route; the bridge masquerades traffic leaving the host, and its ports
    cannot talk to each other.
  - The endpoint is registered in Consul; its address is the one given (checked to be in the subnet and free) or the
    lowest free one, claimed with check-and-set so that concurrent runs on many hosts never share one.
  - Also ensures this host's part of the network and syncs the FDB and neighbour entries of remote endpoints.
  - If building the interfaces fails, the addresses this run claimed are released and nothing is left half-built.
author:
  - overlay.vxlan developers (@overlay-vxlan)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - overlay.vxlan.consul  # before actiongroups: its action_group values win the merge
  - ansible.builtin.action_common_attributes.actiongroups
  - overlay.vxlan.host
  - overlay.vxlan.gateway
requirements:
  - pyroute2 >= 0.9 and py-consul on the target host; root; iptables for the gateway bridge's NAT
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows each endpoint of the task field by field (network, namespace, ip, mac, ifname,
        gateway_ip, host, vtep) before and after the run; kernel repairs (a lost master, a changed MTU) are the
        C(actions) listed after.
  platform:
    platforms: linux
options:
  network:
    description: Network name, or id (full or a unique prefix of at least 12 hex digits).
    type: str
    required: true
  name:
    description: Endpoint name, unique in the network. Give either this or O(endpoints).
    type: str
  namespace:
    description:
      - Target network namespace, as an C(ip netns) name, a path (V(/proc/PID/ns/net), a Docker or Podman SandboxKey)
        or a PID. Required with O(state=present).
    type: str
  ip:
    description: IPv4 address in the network's subnet. Allocated when omitted.
    type: str
  mac:
    description: MAC address of the overlay interface. Defaults to 02:42 followed by the four bytes of the IP.
    type: str
  endpoints:
    description: Several endpoints at once (much faster than a loop of tasks).
    type: list
    elements: dict
    suboptions:
      name:
        description: Endpoint name.
        type: str
        required: true
      network:
        description: Optional; when given it must equal O(network) (lets one inventory list serve several tasks).
        type: str
      namespace:
        description: Target namespace, as for O(namespace).
        type: str
      ip:
        description: IPv4 address, as for O(ip).
        type: str
      mac:
        description: MAC address, as for O(mac).
        type: str
      ifname:
        description: Overlay interface name; defaults to O(ifname).
        type: str
      gateway_ifname:
        description: Gateway interface name; defaults to O(gateway_ifname).
        type: str
  ifname:
    description: Name of the overlay interface inside the target namespace.
    type: str
    default: eth0
  gateway_ifname:
    description: Name of the gateway-bridge interface inside the target namespace (not created on internal networks).
    type: str
    default: eth1
  gateway_block_host:
    description:
      - Drop every new connection from the gateway bridge to this host's own addresses (sshd, a local Consul agent,
        the bridge address itself); replies to connections the host opened still pass, and traffic leaving the host
        through NAT is not affected. See C(docs/firewall.md).
      - The gateway bridge is shared by every network on the host, so the setting is the bridge's, not the network's;
        the last run sets it.
      - Internal networks have no gateway interface and their overlay namespace has no route to the host, so the
        host's addresses are already out of their endpoints' reach; the option is ignored there (on by construction).
    type: bool
    default: false
  default_route:
    description: Point the target namespace's default route at the gateway bridge (not on internal networks).
    type: bool
    default: true
  force:
    description:
      - Replace an interface named O(ifname) or O(gateway_ifname) in the target namespace that overlay.vxlan did not
        create for this endpoint (by default that is an error, and nothing changes).
      - It never takes over an endpoint whose current namespace still exists.
    type: bool
    default: false
  state:
    description: V(present) attaches, V(absent) removes the interfaces, the record and the address reservations.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: C0 at a fixed address, in the ip netns namespace c0
  overlay.vxlan.overlay_endpoint:
    network: demonet
    name: C0
    namespace: c0
    ip: 192.168.0.100
  register: c0

- name: Show its addresses
  ansible.builtin.debug:
    msg: "{{ c0.endpoints[0].name }}: {{ c0.endpoints[0].ip }} ({{ c0.endpoints[0].mac }}), gateway side {{ c0.endpoints[0].gateway_ip }}"

- name: Look up a Docker container
  community.docker.docker_container_info:
    name: web1
  register: web1

- name: Attach the container by its PID (the next free address of the subnet)
  overlay.vxlan.overlay_endpoint:
    network: demonet
    name: web1
    namespace: "{{ web1.container.State.Pid }}"

- name: Several endpoints in one task (much faster than a loop of tasks)
  overlay.vxlan.overlay_endpoint:
    network: demonet
    endpoints:
      - {name: app1, namespace: app1}
      - {name: app2, namespace: app2, ip: 192.168.0.20}
      - {name: db1, namespace: /proc/4242/ns/net, mac: "02:42:0a:00:00:01", ifname: eth2, gateway_ifname: eth3}

- name: Fifty endpoints, c0 to c49, each in the ip netns namespace of the same name
  overlay.vxlan.overlay_endpoint:
    network: demonet
    endpoints: "{{ dict(names | zip(names)) | dict2items(key_name='name', value_name='namespace') }}"
  vars:
    names: "{{ query('ansible.builtin.sequence', 'start=0 end=49 format=c%d') }}"

- name: An endpoint kept away from this host's own services (sshd, the Consul agent), no default route
  overlay.vxlan.overlay_endpoint:
    network: demonet
    name: untrusted1
    namespace: untrusted1
    gateway_block_host: true
    default_route: false

- name: Replace an eth0 that something else created in the namespace
  overlay.vxlan.overlay_endpoint:
    network: demonet
    name: C2
    namespace: c2
    force: true

- name: Detach C0 (interfaces, record and address reservations)
  overlay.vxlan.overlay_endpoint:
    network: demonet
    name: C0
    state: absent

- name: Detach several in one task
  overlay.vxlan.overlay_endpoint:
    network: demonet
    endpoints:
      - {name: app1}
      - {name: app2}
    state: absent
"""

RETURN = r"""
network:
  description: The network record from Consul.
  returned: always
  type: dict
endpoints:
  description:
    - One entry per endpoint of the task, as registered in Consul (id, name, network, network_id, ip, prefixlen, mac,
      host, vtep, ifname, gateway_ip, gateway_ifname, namespace) with the target-side interfaces as built.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: C0, ip: 192.168.0.100, mac: "02:42:c0:a8:00:64", host: docker0, vtep: 10.0.0.10, gateway_ip: 172.18.0.2,
       interfaces: {eth0: {mtu: 1450, addresses: [192.168.0.100/24]}, eth1: {addresses: [172.18.0.2/16]}}}
actions:
  description: What was changed (or would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlay.vxlan.plugins.module_utils import _endpoint
from ansible_collections.overlay.vxlan.plugins.module_utils._consul import CONNECTION_ARGS
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import run
from ansible_collections.overlay.vxlan.plugins.module_utils._gateway import GATEWAY_ARGS
from ansible_collections.overlay.vxlan.plugins.module_utils._underlay import HOST_ARGS

ENDPOINT_OPTIONS = dict(
    name=dict(type="str", required=True),
    network=dict(type="str"),
    namespace=dict(type="str"),
    ip=dict(type="str"),
    mac=dict(type="str"),
    ifname=dict(type="str"),
    gateway_ifname=dict(type="str"),
)


def main():
    argument_spec = dict(
        network=dict(type="str", required=True),
        name=dict(type="str"),
        namespace=dict(type="str"),
        ip=dict(type="str"),
        mac=dict(type="str"),
        endpoints=dict(type="list", elements="dict", options=ENDPOINT_OPTIONS),
        ifname=dict(type="str", default="eth0"),
        gateway_ifname=dict(type="str", default="eth1"),
        default_route=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
        gateway_block_host=dict(type="bool", default=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    argument_spec.update(GATEWAY_ARGS)
    argument_spec.update(HOST_ARGS)
    argument_spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("name", "endpoints")],
                           required_one_of=[("name", "endpoints")])
    run(module, lambda: _endpoint.run(module.params, module.check_mode, module.run_command))


if __name__ == "__main__":
    main()
