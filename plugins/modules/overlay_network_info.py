#!/usr/bin/python
# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: overlay_network_info
short_description: List and inspect overlay networks, and verify this host against Consul
version_added: 0.1.0
description:
  - Returns the overlay networks recorded in Consul with their endpoints, as C(docker network ls) and
    C(docker network inspect) show them.
  - With O(verify=true), also compares Consul with this host's kernel (overlay namespace, br0, vxlan0, FDB and
    neighbour entries, local endpoints' interfaces, the gateway bridge) and reports each difference. Nothing is changed;
    M(overlay.vxlan.overlay_network) and M(overlay.vxlan.overlay_endpoint) repair what it reports.
  - O(host), O(vtep), O(gateway_bridge) and O(gateway_subnet) matter only with O(verify=true) or O(topology).
author:
  - overlay.vxlan developers (@overlay-vxlan)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - overlay.vxlan.consul  # before actiongroups: its action_group values win the merge
  - ansible.builtin.action_common_attributes.actiongroups
  - overlay.vxlan.host
  - overlay.vxlan.gateway
requirements:
  - pyroute2 and root on the target host for O(verify)
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: linux
options:
  name:
    description: Only this network (name or id). All networks when omitted.
    type: str
  verify:
    description: Compare the store with this host's kernel state.
    type: bool
    default: false
  topology:
    description:
      - V(data) also returns RV(topology), what this host's kernel holds for the overlay (read-only).
      - V(dot) returns RV(topology) and RV(dot), the same drawn as a Graphviz document
        (C(dot -Tsvg) renders it; the lab merges every host's RV(topology) into one drawing).
    type: str
    choices: [none, data, dot]
    default: none
    version_added: 0.1.0
"""

EXAMPLES = r"""
- name: docker network ls
  overlay.vxlan.overlay_network_info:
  register: overlay

- name: Print them as docker network ls does
  ansible.builtin.debug:
    msg: "{{ overlay.networks | map(attribute='short_id') | zip(overlay.networks | map(attribute='name')) | map('join', '  ') }}"

- name: docker network inspect demonet
  overlay.vxlan.overlay_network_info:
    name: demonet
  register: demonet

- name: Its endpoints on every host
  ansible.builtin.debug:
    msg: "{{ demonet.networks[0].endpoints | map(attribute='name') | list }}"

- name: Does this host match Consul?
  overlay.vxlan.overlay_network_info:
    name: demonet
    verify: true
  become: true
  register: check
  failed_when: not check.in_sync

- name: Draw what this host really holds
  overlay.vxlan.overlay_network_info:
    name: demonet
    topology: dot
  become: true
  register: seen

- name: Render it with Graphviz on the controller
  ansible.builtin.shell: dot -Tsvg -o topology-{{ inventory_hostname }}.svg
  args:
    stdin: "{{ seen.dot }}"
  delegate_to: localhost
  changed_when: true
"""

RETURN = r"""
networks:
  description: One entry per network, with its endpoints on every host.
  returned: always
  type: list
  elements: dict
  sample:
    - {id: 6e2479586137ad916a397fe6912c4fb60d2cec395800ca9382c8392caea22d6b, short_id: 6e2479586137, name: demonet,
       driver: overlay, scope: global, subnet: 192.168.0.0/24, gateway: 192.168.0.1, vni: 256, mtu: 1450, port: 4789,
       internal: false, endpoints: [{name: C0, ip: 192.168.0.100, mac: "02:42:c0:a8:00:64", host: docker0}]}
differences:
  description: With O(verify), each difference found, as the change that would repair it.
  returned: when verify=true
  type: list
  elements: dict
  sample: [{network: demonet, kind: peer, difference: "fdb: add 02:42:c0:a8:00:64 dst 10.0.0.10"}]
in_sync:
  description: With O(verify), true when no difference was found.
  returned: when verify=true
  type: bool
topology:
  description:
    - With O(topology=data) or O(topology=dot), this host's kernel state, read through netlink.
    - C(underlay) is the VTEP address and interface; C(networks) each overlay namespace with C(bridge) (br0),
      C(vxlan) (vxlan0 with vni, port, local, proxy, l2miss, l3miss), C(ports) (br0's ports), C(fdb) and
      C(neighbours) (vxlan0's static entries) and C(tunnels) (per remote VTEP, the MACs the FDB sends there).
    - C(endpoints) are this host's endpoints, each with its C(interfaces) (eth0, eth1) and, as C(peer), the other
      end of each veth pair (found by the peer ifindex), and its C(routes).
    - C(gateway_bridge) is the host's gateway bridge with its ports, whether NAT rules are in place (C(nat)) and
      each port's isolation; C(consul) is the store's address.
  returned: when topology is data or dot
  type: dict
  sample:
    host: docker0
    underlay: {host: docker0, vtep: 10.0.0.10, interface: eth0, mtu: 1500, mac: "52:54:00:00:00:10"}
    consul: {scheme: http, host: 10.0.0.5, port: 8500}
    networks:
      - {name: demonet, vni: 256, namespace: ovl-6e2479586137,
         vxlan: {name: vxlan0, vni: 256, port: 4789, proxy: true, l2miss: true, l3miss: true},
         tunnels: [{local: 10.0.0.10, remote: 10.0.0.11, remote_host: docker1, macs: ["02:42:c0:a8:00:02"]}]}
    endpoints:
      - {name: C0, namespace: c0, interfaces: [{name: eth0, ifindex: 2, peer_ifindex: 7,
         peer: {namespace: ovl-6e2479586137, name: ve-5f1d2c9e0a, ifindex: 7, master: br0}}]}
dot:
  description: With O(topology=dot), RV(topology) as a Graphviz DOT document.
  returned: when topology=dot
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlay.vxlan.plugins.module_utils import _info
from ansible_collections.overlay.vxlan.plugins.module_utils._consul import CONNECTION_ARGS
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import run
from ansible_collections.overlay.vxlan.plugins.module_utils._gateway import GATEWAY_ARGS
from ansible_collections.overlay.vxlan.plugins.module_utils._underlay import HOST_ARGS


def main():
    argument_spec = dict(
        name=dict(type="str"),
        verify=dict(type="bool", default=False),
        topology=dict(type="str", choices=["none", "data", "dot"], default="none"),
    )
    argument_spec.update(GATEWAY_ARGS)
    argument_spec.update(HOST_ARGS)
    argument_spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, lambda: _info.run(module.params, module.run_command))


if __name__ == "__main__":
    main()
