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
import socket
import time

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

NAME = b"\0overlay.vxlan/host-lock"
DEFAULT_TIMEOUT = 120.0


class HostLock:
    def __init__(self, timeout=DEFAULT_TIMEOUT, name=NAME):
        self.timeout = timeout
        self.name = name
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
            delay = min(delay * 2, 0.1)

    def __exit__(self, *exc):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
