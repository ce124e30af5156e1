"""Unit tests import the collection's code as Ansible does: through ansible_collections.overlay.vxlan."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_root = Path(tempfile.mkdtemp(prefix="overlay-vxlan-unit-"))
(_root / "ansible_collections" / "overlay").mkdir(parents=True)
(_root / "ansible_collections" / "overlay" / "vxlan").symlink_to(REPO)
sys.path.insert(0, str(_root))
