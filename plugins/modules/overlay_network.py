#!/usr/bin/python
# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: overlay_network
short_description: A VXLAN overlay network defined in Consul, and this host's part of it
version_added: 0.1.0
description:
  - Ensures the network's cluster-wide record in Consul (created once, with the same id on every host; the VNI
    is allocated from 256 upward with check-and-set unless given), then this host's part of it, as Docker's classic
    overlay driver built it
  - an overlay network namespace named C(ovl-<first 12 hex digits of the network id>) (visible in C(ip netns list))
    holding bridge C(br0) with the gateway address, and C(vxlan0) (VNI, UDP port, proxy, l2miss, l3miss, learning off),
    which is created in the host namespace and then moved in so its UDP socket stays on the underlay;
  - a static FDB entry (MAC -> remote VTEP) and a permanent neighbour entry (IP -> MAC) on C(vxlan0) for every
    endpoint that Consul lists on another host; stale entries are removed. Run it again (or run
    M(overlay.vxlan.overlay_endpoint)) to pick up endpoints added elsewhere.
  - Unless O(anti_spoofing=false), endpoints cannot impersonate each other (see docs/anti-spoofing.md), each
    endpoint's C(br0) port may send only its own MAC and IP (and ARP for its own IP), C(br0) does not learn (its FDB
    and ARP answers come from Consul).
  - A conflicting redefinition (another subnet, gateway, VNI, port, MTU, internal or anti_spoofing setting for an
    existing name) is an error, never a silent overwrite.
author:
  - overlay.vxlan developers (@overlay-vxlan)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - overlay.vxlan.consul  # before actiongroups: its action_group values win the merge
  - ansible.builtin.action_common_attributes.actiongroups
  - overlay.vxlan.host
requirements:
  - pyroute2 >= 0.9 and py-consul on the target host; root
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
options:
  name:
    description: Network name, unique in the cluster.
    type: str
    required: true
  subnet:
    description: IPv4 subnet in CIDR form. Required to create the network; when given for an existing one it must match.
    type: str
  gateway:
    description: Gateway address held by C(br0) on every host. Defaults to the subnet's first address.
    type: str
  vni:
    description: VXLAN network identifier (1..16777215). Allocated from 256 upward when omitted.
    type: int
  port:
    description: VXLAN UDP destination port. Defaults to V(4789) on creation.
    type: int
  mtu:
    description:
      - MTU of the overlay (br0, vxlan0 and every endpoint's eth0). Defaults to the underlay interface's MTU minus 50
        on creation. An MTU that does not fit in the underlay after encapsulation is an error.
    type: int
  internal:
    description: An internal network gives its endpoints no gateway-bridge interface and no default route.
    type: bool
  anti_spoofing:
    description:
      - Each endpoint may send only from its own MAC and IPv4 address (ARP only for its own address; IPv6 and other
        ethertypes are dropped), C(br0) learns nothing (static FDB entries from Consul) and answers ARP for overlay
        addresses from Consul. An nftables C(bridge) table C(overlay_antispoof) in the overlay namespace does the
        filtering; the target needs C(nft).
      - Set to V(false) for Docker's behaviour (br0 learns, no filter). Stored in the network record, so it is
        cluster-wide; omitted, an existing network keeps its setting (records from before this option count as
        V(true)) and a new one gets V(true). Changing it for an existing network is an error.
    type: bool
  force:
    description:
      - With O(state=absent), also remove this host's endpoints of the network instead of failing.
      - With O(docker=true), also disconnect the containers of Docker's network before removing it.
    type: bool
    default: false
  docker:
    description:
      - Also this host's Docker view of the network, for C(docker run --net NAME) (docs/docker.md). With
        O(state=present), Docker's network of the same name, whose network and IPAM driver is the host agent's plugin
        C(overlay.vxlan) (role variable C(overlay_host_docker_plugin=true)), with the overlay network's subnet and
        gateway; it is created after the overlay network, like C(docker network create -d overlay.vxlan
        --ipam-driver overlay.vxlan --subnet SUBNET --gateway GATEWAY -o name=NAME NAME). With O(state=absent), it is
        removed after this host left the overlay network.
      - A Docker network of that name with another driver, IPAM driver or subnet is an error, checked before anything
        changes. It is never replaced, as it may be somebody else's, with containers.
      - Through Docker's API socket O(docker_socket), not the docker CLI. When the Docker side fails, a network
        this run created in Consul is removed again.
    type: bool
    default: false
  docker_socket:
    description: Docker's API socket, for O(docker=true). Defaults to C(/run/docker.sock).
    type: path
  gc:
    description:
      - Run a garbage-collection pass after the network's own work (see docs/design.md, "Garbage collection");
        overlay namespaces of networks gone from Consul are always torn down first.
      - Releases endpoint records of this host whose interfaces are gone (after O(gc_grace)), records of networks
        that are gone, claims no record holds, and br0/gateway ports no record owns. Results are in RV(garbage).
    type: bool
    default: true
  gc_grace:
    description: Seconds an orphaned endpoint record or a claim without a record is kept before it is released
      (a container that restarts within it keeps its address).
    type: int
    default: 120
  state:
    description:
      - V(present) ensures the record and this host's part, and syncs peers.
      - V(absent) removes this host's part; the record and its VNI go once no endpoint remains on any host.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: The seed's network (VNI allocated from 256, MTU from the underlay, gateway 192.168.0.1)
  overlay.vxlan.overlay_network:
    name: demonet
    subnet: 192.168.0.0/24
    vtep: eth0
  register: demonet

- name: Show what every host will build
  ansible.builtin.debug:
    msg: "{{ demonet.network.name }}: VNI {{ demonet.network.vni }}, MTU {{ demonet.network.mtu }}, namespace {{ demonet.namespace }}"

- name: Pick up endpoints attached on other hosts since the last run (the record exists, so the name is enough)
  overlay.vxlan.overlay_network:
    name: demonet

- name: An internal network with a fixed VNI, port and MTU, talking to a TLS Consul
  overlay.vxlan.overlay_network:
    name: backend
    subnet: 10.20.0.0/24
    gateway: 10.20.0.254
    vni: 4242
    port: 4789
    mtu: 1400
    internal: true
    consul_host: consul.example.com
    consul_port: 8501
    consul_scheme: https
    consul_ca_cert: /etc/consul.d/ca.pem
    consul_token: "{{ vault_consul_token }}"

- name: Docker's behaviour - br0 learns, no anti-spoofing filter (cluster-wide, fixed at creation)
  overlay.vxlan.overlay_network:
    name: legacy
    subnet: 10.30.0.0/24
    anti_spoofing: false

- name: The Consul connection and this host's VTEP set once for a block (group/overlay.vxlan.consul)
  module_defaults:
    group/overlay.vxlan.consul:
      consul_host: 10.0.0.5
      consul_token: "{{ vault_consul_token }}"
      vtep: eth0
  block:
    - name: Network
      overlay.vxlan.overlay_network:
        name: demonet
        subnet: 192.168.0.0/24

    - name: Endpoint
      overlay.vxlan.overlay_endpoint:
        network: demonet
        name: C0
        namespace: c0

- name: Keep orphaned endpoint records for ten minutes before garbage collection releases them
  overlay.vxlan.overlay_network:
    name: demonet
    gc_grace: 600

- name: The network for Docker too - docker run --net demonet attaches containers on this host (agent's plugin)
  overlay.vxlan.overlay_network:
    name: demonet
    subnet: 192.168.0.0/24
    docker: true
- name: Leave the network on this host (fails while this host still has endpoints on it)
  overlay.vxlan.overlay_network:
    name: demonet
    state: absent

- name: Leave it and detach this host's endpoints of it too
  overlay.vxlan.overlay_network:
    name: demonet
    state: absent
    force: true
"""

RETURN = r"""
network:
  description: The network record as stored in Consul.
  returned: when the network exists (or would, in check mode)
  type: dict
  sample: {id: 6e2479586137ad916a397fe6912c4fb60d2cec395800ca9382c8392caea22d6b, name: demonet, subnet: 192.168.0.0/24,
           gateway: 192.168.0.1, vni: 256, mtu: 1450, port: 4789, internal: false}
namespace:
  description: Name of this host's overlay namespace.
  returned: state=present
  type: str
  sample: ovl-6e2479586137
host:
  description: This host's name, VTEP address, underlay interface and its MTU.
  returned: state=present
  type: dict
devices:
  description: br0 and vxlan0 as they are after the run (vxlan0 with vni, port, learning, proxy, l2miss, l3miss).
  returned: state=present
  type: dict
peers:
  description: The FDB and permanent neighbour entries on vxlan0 after the run.
  returned: state=present
  type: dict
  sample: {fdb: ["02:42:c0:a8:00:64 dst 10.0.0.10"], neighbours: ["192.168.0.100 lladdr 02:42:c0:a8:00:64"]}
endpoints:
  description: Number of endpoints of the network in Consul, on all hosts.
  returned: state=present
  type: int
docker_network:
  description:
    - With O(docker=true) and O(state=present), Docker's network as Docker shows it after the run (in check mode, as it
      would be created), the containers attached on this host by name.
  returned: when O(docker=true) and O(state=present)
  type: dict
  sample: {id: 3f0a29c7d1e8..., name: demonet, driver: overlay.vxlan, ipam_driver: overlay.vxlan, subnet: 192.168.0.0/24,
           gateway: 192.168.0.1, internal: false, overlay_network: demonet, containers: [C0]}
kept_in_store:
  description: With state=absent, whether the record stayed because endpoints remain on other hosts.
  returned: state=absent
  type: bool
garbage:
  description: What the garbage-collection pass found on this host and in the store, and what it did about it.
  returned: when O(gc=true)
  type: list
  elements: dict
  sample: [{kind: record, key: overlay/v1/endpoints/6e24.../web1, reason: its interfaces are gone,
            action: "mark orphaned; release after 120s"}]
actions:
  description: What was changed (or would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlay.vxlan.plugins.module_utils import _network
from ansible_collections.overlay.vxlan.plugins.module_utils._consul import CONNECTION_ARGS
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import run
from ansible_collections.overlay.vxlan.plugins.module_utils._underlay import HOST_ARGS


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        subnet=dict(type="str"),
        gateway=dict(type="str"),
        vni=dict(type="int"),
        port=dict(type="int"),
        mtu=dict(type="int"),
        internal=dict(type="bool"),
        anti_spoofing=dict(type="bool"),
        force=dict(type="bool", default=False),
        docker=dict(type="bool", default=False),
        docker_socket=dict(type="path"),
        gc=dict(type="bool", default=True),
        gc_grace=dict(type="int", default=120),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    argument_spec.update(HOST_ARGS)
    argument_spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, lambda: _network.run(module.params, module.check_mode))


if __name__ == "__main__":
    main()
