"""Fixtures for integration tests: the built collection, namespace labs, netns."""
from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from lab import REPO, Lab, cleanup_stale

VENV = REPO / ".venv"
# Default simulated topology: a consul server and two overlay hosts.
DEFAULT_HOSTS = {"consul": "10.0.0.5", "docker0": "10.0.0.10", "docker1": "10.0.0.11"}


@pytest.fixture(scope="session", autouse=True)
def _cleanup_stale_labs():
    """Remove labs left behind by an earlier run that was killed hard."""
    if os.geteuid() == 0:
        cleanup_stale()


@pytest.fixture(scope="session")
def collection_path(tmp_path_factory) -> str:
    """Build the collection from the working tree and install it; returns the
    directory to use as ANSIBLE_COLLECTIONS_PATH."""
    base = tmp_path_factory.mktemp("collection")
    build, dest = base / "build", base / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    galaxy = str(VENV / "bin" / "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--output-path", str(build), str(REPO)],
                   check=True, capture_output=True, text=True, env=env)
    tarball = next(build.glob("*.tar.gz"))
    subprocess.run([galaxy, "collection", "install", "--offline", "--force", "-p", str(dest),
                    str(tarball)], check=True, capture_output=True, text=True, env=env)
    return str(dest)


class LabFactory:
    """Starts labs on demand and stops all of them at teardown."""

    def __init__(self, tmp_path_factory, collection_path: str):
        self._tmp = tmp_path_factory
        self._collection_path = collection_path
        self.labs: list[Lab] = []

    def __call__(self, hosts: dict[str, str] | None = None, **kwargs) -> Lab:
        kwargs.setdefault("collections_path", self._collection_path)
        lab = Lab(self._tmp.mktemp("lab"), hosts or DEFAULT_HOSTS, **kwargs)
        self.labs.append(lab)
        return lab.start()

    def stop_all(self) -> None:
        errors = []
        for lab in reversed(self.labs):
            try:
                lab.stop()
            except Exception as e:  # noqa: BLE001 - stop every lab, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def lab_factory(tmp_path_factory, collection_path):
    """Function-scoped: ``lab_factory(hosts=None, **Lab kwargs)`` -> started Lab."""
    factory = LabFactory(tmp_path_factory, collection_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_lab_factory(tmp_path_factory, collection_path):
    """Module-scoped variant of lab_factory (labs live for the whole module)."""
    factory = LabFactory(tmp_path_factory, collection_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def lab(module_lab_factory) -> Lab:
    """A started lab shared by the module: consul + docker0 + docker1, with internet."""
    return module_lab_factory()


_netns_counter = itertools.count()


@pytest.fixture
def netns():
    """Factory for throwaway named netns in the ROOT namespace: ``name = netns()``.

    Names are unique per process; every netns (and any process left in it)
    is removed at teardown even if the test failed.
    """
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        while True:
            name = f"{prefix}{os.getpid()}-{next(_netns_counter)}"
            if not Path("/run/netns", name).exists():
                break
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
        created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in reversed(created):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
