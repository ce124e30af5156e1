#!/usr/bin/python
# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: netns_veth
short_description: Ensure a veth pair between two network namespaces
version_added: 0.1.0
description:
  - Ensures a veth pair whose two ends live in given network namespaces (the host namespace when omitted),
    with the MTU, MAC, addresses, bridge master and up/down state given for each end.
  - "Repairs drift: a wrong MTU, MAC or address set, a lost or wrong master, an end set down, an end moved
    to another namespace or a stray veth under one of the names are all put back."
  - Talks netlink through pyroute2; never runs C(ip).
author:
  - overlay.vxlan developers (@overlay-vxlan)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - pyroute2 >= 0.9 on the target host
  - root (CAP_NET_ADMIN) on the target host
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
options:
  name:
    description: Name of the first end (at most 15 characters, no whitespace, V(/), V(:) or V(%)).
    type: str
    required: true
  namespace:
    description:
      - Namespace of the first end, as an C(ip netns) name, a path (V(/proc/PID/ns/net), a Docker SandboxKey)
        or a PID. Omit for the host namespace.
    type: str
  mtu:
    description: MTU of the first end; also of the peer unless O(peer.mtu) is set. Omit to leave it as it is.
    type: int
  mac:
    description: MAC address of the first end. Omit to keep the kernel's random one.
    type: str
  addresses:
    description:
      - IPv4 and IPv6 addresses with prefix length for the first end. When given, the end holds exactly these
        (the kernel's own IPv6 link-local address is left alone). Omit to leave addresses as they are.
      - IPv6 link-local addresses cannot be given, and IPv6 addresses need an MTU of at least 1280.
    type: list
    elements: str
  master:
    description: Bridge, in the first end's namespace, to enslave the first end to. V("") removes any master.
    type: str
  peer:
    description: The second end.
    type: dict
    required: true
    suboptions:
      name:
        description: Name of the second end.
        type: str
        required: true
      namespace:
        description: Namespace of the second end; same forms as O(namespace).
        type: str
      mtu:
        description: MTU of the second end; defaults to O(mtu).
        type: int
      mac:
        description: MAC address of the second end.
        type: str
      addresses:
        description: Addresses of the second end; same rules as O(addresses).
        type: list
        elements: str
      master:
        description: Bridge, in the second end's namespace, to enslave the second end to.
        type: str
  link_state:
    description: Administrative state of both ends.
    type: str
    choices: [up, down]
    default: up
  create_namespaces:
    description: Create missing namespaces given by C(ip netns) name. Paths and PIDs are never created.
    type: bool
    default: false
  state:
    description: V(present) ensures the pair, V(absent) removes it (devices under these names that are not veths are left alone).
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: Wire namespace c0 (created if missing) to the host bridge br-lab
  overlay.vxlan.netns_veth:
    name: eth0
    namespace: c0
    create_namespaces: true
    mtu: 1450
    mac: "02:42:c0:a8:00:64"
    addresses: [192.168.0.100/24]
    peer:
      name: veth-c0
      master: br-lab

- name: Attach a Docker container by PID, with IPv4 and IPv6 addresses
  overlay.vxlan.netns_veth:
    name: eth2
    namespace: "{{ container_pid }}"
    addresses: [10.10.0.2/24, "fd00:10::2/64"]
    peer:
      name: vc-web1

- name: A point-to-point link between two namespaces, each end with its address
  overlay.vxlan.netns_veth:
    name: veth-a
    namespace: ns-a
    addresses: [10.99.0.1/30]
    create_namespaces: true
    peer:
      name: veth-b
      namespace: ns-b
      addresses: [10.99.0.2/30]

- name: Take the first end off its bridge and set both ends down
  overlay.vxlan.netns_veth:
    name: eth0
    namespace: c0
    master: ""
    link_state: down
    peer:
      name: veth-c0

- name: Remove the pair
  overlay.vxlan.netns_veth:
    name: eth0
    namespace: c0
    peer:
      name: veth-c0
    state: absent
"""

RETURN = r"""
end:
  description: The first end as it is after the run (as it would be, in check mode); null when absent.
  returned: always
  type: dict
  contains:
    namespace:
      description: Namespace as given (null for the host).
      type: str
    name:
      description: Interface name.
      type: str
    ifindex:
      description: Interface index inside its namespace (null in check mode before creation).
      type: int
    kind:
      description: Link kind (veth).
      type: str
    mac:
      description: MAC address.
      type: str
    mtu:
      description: MTU.
      type: int
    state:
      description: V(up) or V(down) (administrative).
      type: str
    master:
      description: Bridge it is enslaved to, or null.
      type: str
    addresses:
      description: Addresses with prefix length, without IPv6 link-local ones.
      type: list
      elements: str
  sample: {namespace: c0, name: eth0, ifindex: 12, kind: veth, mac: "02:42:c0:a8:00:64", mtu: 1450,
           state: up, master: null, addresses: [192.168.0.100/24]}
peer:
  description: The second end, with the same fields as RV(end).
  returned: always
  type: dict
actions:
  description: What was changed (or would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["eth0 in namespace c0: mtu 1500 -> 1450"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import run
from ansible_collections.overlay.vxlan.plugins.module_utils._veth import run_netns_veth

END_OPTIONS = dict(
    name=dict(type="str", required=True),
    namespace=dict(type="str"),
    mtu=dict(type="int"),
    mac=dict(type="str"),
    addresses=dict(type="list", elements="str"),
    master=dict(type="str"),
)


def main():
    argument_spec = dict(END_OPTIONS)
    argument_spec.update(
        peer=dict(type="dict", required=True, options=END_OPTIONS),
        link_state=dict(type="str", choices=["up", "down"], default="up"),
        create_namespaces=dict(type="bool", default=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, lambda: run_netns_veth(module.params, check_mode=module.check_mode))


if __name__ == "__main__":
    main()
