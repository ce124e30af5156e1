# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
# Every module that takes these options is in group/overlay.vxlan.consul (meta/runtime.yml).
attributes:
  action_group:
    support: full
    membership:
      - overlay.vxlan.consul
    details:
      - "Set the Consul connection options (and O(host), O(vtep)) once for a play:
        C(module_defaults: {group/overlay.vxlan.consul: {consul_host: ..., consul_token: ...}})."
options:
  consul_host:
    description:
      - Consul agent or server to talk to. Falls back to the host in E(CONSUL_HTTP_ADDR), then V(127.0.0.1)
        (the local agent that the P(overlay.vxlan.consul#role) role installs on every overlay host).
    type: str
  consul_port:
    description: HTTP(S) port. Falls back to the port in E(CONSUL_HTTP_ADDR), then V(8500).
    type: int
  consul_scheme:
    description: V(http) or V(https). Falls back to the scheme in E(CONSUL_HTTP_ADDR) or E(CONSUL_HTTP_SSL), then V(http).
    type: str
    choices: [http, https]
  consul_token:
    description: ACL token. Falls back to E(CONSUL_HTTP_TOKEN).
    type: str
  consul_ca_cert:
    description: CA certificate file to verify the server with. Falls back to E(CONSUL_CACERT).
    type: path
  consul_validate_certs:
    description: Verify the server's TLS certificate. Falls back to E(CONSUL_HTTP_SSL_VERIFY), then V(true).
    type: bool
  consul_timeout:
    description: Seconds to wait for each Consul request before giving up with an error.
    type: float
    default: 10
  consul_prefix:
    description:
      - Key prefix under which every overlay record lives (see the collection's C(docs/key-layout.md)).
        All hosts of one cluster must use the same prefix.
    type: str
    default: overlay
"""
