# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""overlay.vxlan's CNI door (Podman, containerd): cni/__main__.py over the engine's _endpoint."""
