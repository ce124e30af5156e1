# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # The host's gateway bridge: plugins/module_utils/_gateway.py GATEWAY_ARGS.
    DOCUMENTATION = r"""
options:
  gateway_bridge:
    description:
      - Name of the host's gateway bridge (Docker's C(docker_gwbridge)), shared by every network on the host.
        Same as O(overlay.vxlan.overlay_gateway#module:name).
    type: str
    default: docker_gwbridge
  gateway_subnet:
    description:
      - IPv4 subnet of the gateway bridge; the bridge holds its first address and endpoints get theirs from it.
        Same as O(overlay.vxlan.overlay_gateway#module:subnet).
    type: str
    default: 172.18.0.0/16
"""
