"""Shared pytest configuration for every test layer."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INTEGRATION_DIR = REPO / "tests" / "integration"


def pytest_collection_modifyitems(config, items):
    # Everything under tests/integration is an integration test: mark it, and
    # skip it (loudly) for non-root users, who cannot create namespaces.
    skip_root = pytest.mark.skip(reason="integration tests need root (namespaces, sshd)")
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(skip_root)
