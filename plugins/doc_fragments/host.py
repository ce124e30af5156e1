# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # This host in the cluster: plugins/module_utils/_underlay.py HOST_ARGS.
    DOCUMENTATION = r"""
options:
  host:
    description:
      - This host's name in the store (its record is C(<prefix>/v1/hosts/<host>) in Consul). Defaults to the
        target's hostname. Every host of the cluster needs its own name.
    type: str
  vtep:
    description:
      - This host's VXLAN tunnel endpoint, as an underlay interface name or IPv4 address (Docker's
        C(--cluster-advertise)).
      - Defaults to the address the kernel would use to reach O(consul_host) when that is not a loopback address,
        else the address of the interface that holds the default route.
    type: str
"""
