# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One lock per host: module runs, the peers service and garbage collection on one host never
interleave their reads and kernel changes (attach racing detach of the same endpoint; a peer sync
from an old read removing entries a newer one added).

The lock is an abstract unix socket bound in the host's network namespace: it belongs to that
namespace (simulated hosts on one machine each have their own), needs no file, and the kernel
releases it when the holder dies, so a crashed run never leaves it behind.
"""
from __future__ import annotations

import errno
import os
import socket
import time

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

NAME = b"\0overlay.vxlan/host-lock"
DEFAULT_TIMEOUT = 120.0
MARK_DIR = "/run/overlay-vxlan"


def _mark_path():
    """One file per host network namespace (simulated hosts share a filesystem, not a namespace)."""
    return os.path.join(MARK_DIR, "host-writes-%d" % os.stat("/proc/self/ns/net").st_ino)


def write_mark():
    """Say that a holder of the lock changed this host's overlay state on its own terms (a module
    run, a detach, the garbage collection): the agent's next peers pass is a full one."""
    try:
        os.makedirs(MARK_DIR, mode=0o755, exist_ok=True)
        with open(_mark_path(), "w") as f:
            f.write(os.urandom(8).hex())
    except OSError:  # no new mark: make sure no old one is read either (None means "changed")
        try:
            os.unlink(_mark_path())
        except OSError:
            pass


def read_mark():
    """The last mark, or None when there is none readable (the caller treats None as changed)."""
    try:
        with open(_mark_path()) as f:
            return f.read() or None
    except OSError:
        return None


class HostLock:
    """``marks``: leave a mark (write_mark) on release. Only the agent's own passes and a runtime's
    scoped attach (which changes nothing the agent's difference sync does not expect) say False."""

    def __init__(self, timeout=DEFAULT_TIMEOUT, name=NAME, marks=True):
        self.timeout = timeout
        self.name = name
        self.marks = marks
        self.sock = None

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self.name)
                self.sock = sock
                return self
            except OSError as e:
                sock.close()
                if e.errno != errno.EADDRINUSE:
                    raise OverlayError("cannot take this host's overlay.vxlan lock: %s" % e)
            if time.monotonic() > deadline:
                raise OverlayError("another overlay.vxlan run on this host held its lock for over %ds; "
                                   "try again when it is done" % self.timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)  # a bind is cheap: a short holder is not waited for long

    def __exit__(self, *exc):
        if self.sock is not None:
            if self.marks:
                write_mark()
            self.sock.close()
            self.sock = None
