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
  - pyroute2 >= 0.9 on the target host; root; iptables for the gateway bridge's NAT
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
        or a PID. With O(state=present) this or O(container) is required.
    type: str
  container:
    description:
      - Target container by name or id, instead of O(namespace) (give one of the two). Its runtime (O(container_runtime))
        is asked for it over its API socket (O(container_socket)) and the endpoint goes into the network namespace of its
        process, V(/proc/PID/ns/net), which the endpoint's record stores as its namespace.
      - The container must be running; start it with no network of the runtime's own (Docker's C(--network none),
        Podman's C(--network none)), or choose an O(ifname) it does not use.
      - A restarted container has a new namespace; the next run moves the endpoint there (same address and MAC) and
        reports a change. The address of a container that was removed is kept until O(state=absent) or the garbage
        collection of M(overlay.vxlan.overlay_network).
      - With O(state=absent) the runtime is not asked (the container may be gone); the endpoint is found by O(name).
      - For a list of endpoints, give each item its own container (O(endpoints[].container)).
    type: str
  container_runtime:
    description:
      - The runtime of O(container) and of the items' O(endpoints[].container) that do not set their own.
      - Both are asked through Docker's Engine API (C(GET /containers/NAME/json)); Podman serves it on the socket of its API
        service (C(systemctl enable --now podman.socket), or C(podman system service)).
    type: str
    choices: [docker, podman]
    default: docker
  container_socket:
    description:
      - Path of the runtime's API socket (a V(unix://) prefix is allowed), for O(container) and the items that do not set
        their own.
      - Defaults to V(/run/docker.sock) for Docker (V(/var/run/docker.sock) is a link to it on current systems) and to
        V(/run/podman/podman.sock) for rootful Podman.
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
      container:
        description: Target container by name or id, as for O(container) (instead of O(endpoints[].namespace)).
        type: str
      container_runtime:
        description: Runtime of O(endpoints[].container); defaults to O(container_runtime).
        type: str
        choices: [docker, podman]
      container_socket:
        description: API socket of that runtime; defaults to O(container_socket), else the runtime's default socket.
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

- name: A Docker container with no network of Docker's own
  community.docker.docker_container:
    name: web1
    image: debian
    command: sleep infinity
    network_mode: none

- name: Attach the container by its name (the next free address of the subnet); a re-run after a restart moves it
  overlay.vxlan.overlay_endpoint:
    network: demonet
    name: web1
    container: web1
  register: web1

- name: What Docker reported
  ansible.builtin.debug:
    msg: "{{ web1.endpoints[0].container.id }} runs as PID {{ web1.endpoints[0].container.pid }}"

- name: A Podman container (rootful Podman's API service must run; systemctl enable --now podman.socket)
  containers.podman.podman_container:
    name: db1
    image: debian
    command: sleep infinity
    network: none

- name: Docker and Podman containers in one task, an API socket of its own for one of them
  overlay.vxlan.overlay_endpoint:
    network: demonet
    endpoints:
      - {name: web1, container: web1}
      - {name: db1, container: db1, container_runtime: podman}
      - {name: web2, container: web2, container_socket: /srv/docker/docker.sock}

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
    - An endpoint given by O(container) also has C(container), what the runtime reported (runtime, name, id, pid,
      sandbox_key).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: C0, ip: 192.168.0.100, mac: "02:42:c0:a8:00:64", host: docker0, vtep: 10.0.0.10, gateway_ip: 172.18.0.2,
       namespace: /proc/4242/ns/net,
       container: {runtime: docker, name: C0, id: 8f3c0e5b2a41, pid: 4242, sandbox_key: /var/run/docker/netns/0c1d2e3f4a5b},
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
    container=dict(type="str"),
    container_runtime=dict(type="str", choices=["docker", "podman"]),
    container_socket=dict(type="str"),
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
        container=dict(type="str"),
        container_runtime=dict(type="str", choices=["docker", "podman"], default="docker"),
        container_socket=dict(type="str"),
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
