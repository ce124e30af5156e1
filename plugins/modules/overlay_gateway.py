#!/usr/bin/python
# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: overlay_gateway
short_description: The host's gateway bridge for overlay endpoints (Docker's docker_gwbridge)
version_added: 0.1.0
description:
  - Ensures the local bridge that gives overlay endpoints a way out, as Docker's C(docker_gwbridge) did
    a bridge holding the first address of O(subnet), IPv4 forwarding on, masquerade for traffic from O(subnet) that
    leaves through another interface, and FORWARD rules accepting it and its replies.
  - Its ports cannot talk to each other (Docker's C(icc=false)); M(overlay.vxlan.overlay_endpoint) isolates each
    port it adds (the bridge's own port isolation flag, so it holds without br_netfilter), and nftables (table
    C(inet overlay_gateway), before iptables' filter chains) drops forwarding from the bridge back into it, so a route
    via the bridge address cannot bypass the isolation either. VXLAN from the bridge is dropped (table
    C(inet overlay_vxlan)); see C(docs/firewall.md).
  - M(overlay.vxlan.overlay_endpoint) ensures the same bridge by itself; this module lets a role prepare a host ahead.
  - Other addresses on the bridge are left alone. On a host whose Docker uses the bridge for its own containers
    (the host agent's Docker plugin), Docker gives its C(docker_gwbridge) network an address of its own pool there.
author:
  - overlay.vxlan developers (@overlay-vxlan)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - pyroute2 >= 0.9 on the target host; root; iptables; nft (nftables)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
options:
  name:
    description: Bridge name.
    type: str
    default: docker_gwbridge
  subnet:
    description: IPv4 subnet of the bridge.
    type: str
    default: 172.18.0.0/16
  block_host:
    description:
      - Drop new connections from the bridge to this host's own addresses (replies to the host's own connections
        pass). Same as O(overlay.vxlan.overlay_endpoint#module:gateway_block_host).
    type: bool
    default: false
  docker:
    description:
      - Also make Docker's own C(docker_gwbridge) network on this bridge, with O(subnet) and its first address, and
        Docker's options for it (no traffic between its ports, masquerade), before Docker makes one by itself.
      - Docker gives every container of a network whose driver wants a gateway (the host agent's plugin
        C(overlay.vxlan), unless the network is internal) a port on the network named C(docker_gwbridge), and makes
        it when it is missing with a free subnet of its own pools, which replaces the bridge's address. Made ahead,
        it keeps O(subnet), and a re-run changes nothing.
      - One Docker made by itself with another subnet is replaced while no container uses it; with containers on it,
        it is left alone with a warning. One on another bridge device is left alone.
      - Docker must be running; its socket is asked before anything changes.
    type: bool
    default: false
  docker_socket:
    description: Docker's API socket, for O(docker). Default C(/run/docker.sock).
    type: path
"""

EXAMPLES = r"""
- name: Docker's defaults (docker_gwbridge, 172.18.0.0/16)
  overlay.vxlan.overlay_gateway:
  register: gwbridge

- name: Show the bridge
  ansible.builtin.debug:
    msg: "{{ gwbridge.bridge.name }} {{ gwbridge.bridge.addresses | join(' ') }} {{ gwbridge.bridge.state }}"

- name: Another subnet where 172.18/16 is taken
  overlay.vxlan.overlay_gateway:
    subnet: 172.31.0.0/16

- name: Keep endpoints away from this host's own addresses (sshd, the Consul agent)
  overlay.vxlan.overlay_gateway:
    block_host: true

- name: On a host whose Docker uses the agent's plugin, make Docker's docker_gwbridge network on the same bridge
  overlay.vxlan.overlay_gateway:
    docker: true

- name: Another bridge name; endpoints then need the same gateway_bridge and gateway_subnet
  overlay.vxlan.overlay_gateway:
    name: ovl_gwbridge
    subnet: 172.30.0.0/16
"""

RETURN = r"""
bridge:
  description: The bridge as it is after the run.
  returned: always
  type: dict
  sample: {name: docker_gwbridge, addresses: [172.18.0.1/16], state: up}
docker_gwbridge:
  description: Docker's C(docker_gwbridge) network as it is after the run, with O(docker); null otherwise.
  returned: always
  type: dict
  sample: {id: 5d1c0e.., name: docker_gwbridge, driver: bridge, subnet: 172.18.0.0/16, gateway: 172.18.0.1,
           bridge: docker_gwbridge, options: {com.docker.network.bridge.enable_icc: "false",
           com.docker.network.bridge.enable_ip_masquerade: "true"}, containers: []}
actions:
  description: What was changed (or would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlay.vxlan.plugins.module_utils import _gateway
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import run


def main():
    module = AnsibleModule(argument_spec=dict(name=dict(type="str", default=_gateway.DEFAULT_NAME),
                                              subnet=dict(type="str", default=_gateway.DEFAULT_SUBNET),
                                              block_host=dict(type="bool", default=False),
                                              docker=dict(type="bool", default=False),
                                              docker_socket=dict(type="path")),
                           supports_check_mode=True)
    run(module, lambda: _gateway.run(module.params, module.check_mode, module.run_command))


if __name__ == "__main__":
    main()
