#!/usr/bin/python
# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: overlay_vtep
short_description: Record this host's VTEP address in Consul
version_added: 0.1.0
description:
  - Finds this host's VXLAN tunnel endpoint (an underlay interface or address, like Docker's C(--cluster-advertise))
    and the underlay MTU, and records the host under C(<prefix>/v1/hosts/<host>) in Consul.
  - M(overlay.vxlan.overlay_network) records the host by itself; this module lets a role record and report it ahead.
author:
  - overlay.vxlan developers (@overlay-vxlan)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - overlay.vxlan.consul  # before actiongroups: its action_group values win the merge
  - ansible.builtin.action_common_attributes.actiongroups
  - overlay.vxlan.host
requirements:
  - pyroute2 >= 0.9 on the target host
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
"""

EXAMPLES = r"""
- name: Record this host with its VTEP found as overlay_network would (the route to Consul, else the default route)
  overlay.vxlan.overlay_vtep:
  register: vtep

- name: Show the largest overlay MTU this underlay allows
  ansible.builtin.debug:
    msg: "{{ vtep.host.name }}: VTEP {{ vtep.host.vtep }} on {{ vtep.host.interface }}, overlay MTU up to {{ vtep.host.max_overlay_mtu }}"

- name: Advertise eth1 as this host's VTEP, under the inventory name
  overlay.vxlan.overlay_vtep:
    vtep: eth1
    host: "{{ inventory_hostname }}"

- name: Advertise an address, in a cluster that uses another key prefix
  overlay.vxlan.overlay_vtep:
    vtep: 10.0.0.10
    consul_host: 10.0.0.5
    consul_prefix: lab
"""

RETURN = r"""
host:
  description: The host's name, VTEP address, underlay interface, its MTU and the largest overlay MTU it allows.
  returned: always
  type: dict
  sample: {name: docker0, vtep: 10.0.0.10, interface: eth0, underlay_mtu: 1500, max_overlay_mtu: 1450}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _netns, _network, _keys, _underlay
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError, fail


def main():
    argument_spec = dict(_underlay.HOST_ARGS)
    argument_spec.update(_consul.CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        _netns.require_pyroute2()
        settings = _consul.connection_settings(module.params)
        store = _consul.Consul(settings)
        with _netns.Netlink() as nl:
            underlay = _underlay.local(nl.get(_netns.resolve(None, None)), module.params, settings["host"])
        seen = {}
        actions = _network.register_host(store, _keys.Layout(settings["prefix"]), underlay, module.check_mode, seen)
    except OverlayError as e:
        fail(module, e)
    module.exit_json(changed=bool(actions), actions=actions,
                     host={"name": underlay.host, "vtep": underlay.vtep, "interface": underlay.interface,
                           "underlay_mtu": underlay.mtu, "max_overlay_mtu": underlay.max_overlay_mtu},
                     diff={"before": {"host": seen["before"]}, "after": {"host": seen["after"], "actions": actions}})


if __name__ == "__main__":
    main()
