# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""overlay.vxlan's host agent: one long-running front door per host over the engine in
plugins/module_utils/ (allocation, netlink, the key layout and the store protocol live there only).

Components, each of which can be switched off on the command line (agent/__main__.py):

- peers (agent/peers.py): vxlan0's FDB and neighbour entries, anti-spoofing tables and the
  firewall follow Consul between Ansible runs;
- gc: the garbage collection of plugins/module_utils/_gc.py on the peers sync's full passes;
- docker (agent/docker.py): Docker's NetworkDriver and IpamDriver on one socket (docs/docker.md);
- names (agent/names.py): a DNS server answering the cluster's endpoint names from Consul.
"""
