"""Low-level helpers: processes, namespaces, sockets inside a netns, TCP forwarder.

Only the standard library is used here so that this module also works outside
the venv (e.g. from a cleanup script).
"""
from __future__ import annotations

import ctypes
import os
import selectors
import signal
import socket
import threading
import time

CLONE_NEWNET = 0x40000000
NS_KINDS = ("net", "mnt", "uts")

_libc = ctypes.CDLL(None, use_errno=True)


# --- processes -----------------------------------------------------------------

def proc_starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of pid, None if it is gone.

    Recorded next to each PID so a later cleanup never kills a recycled PID.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces/parens: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie is as good as dead
        return None
    return int(fields[19])


def pid_alive(pid: int, starttime: int | None = None) -> bool:
    st = proc_starttime(pid)
    return st is not None and (starttime is None or st == starttime)


def ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def pids_in_namespaces(inodes: dict[str, set[int]]) -> list[int]:
    """All PIDs (except ourselves) that live in any of the given namespaces.

    ``inodes`` maps a namespace kind ("net", "mnt", "uts") to inode numbers.
    This finds processes the lab did not start directly: sshd session
    children, ssh ControlPersist masters in the controller netns, daemons
    started by modules on a simulated host, `ip netns exec` children...
    """
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        for kind, wanted in inodes.items():
            if wanted and ns_inode(entry, kind) in wanted:
                found.append(int(entry))
                break
    return found


def kill_and_wait(pids: list[tuple[int, int | None]], timeout: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``timeout/2``; returns PIDs still alive at the end.

    ``pids`` holds (pid, starttime-or-None) pairs; a mismatching starttime
    means the PID was recycled and it is left alone.
    """
    live = [(p, st) for p, st in pids if pid_alive(p, st)]
    for sig, wait in ((signal.SIGTERM, timeout / 2), (signal.SIGKILL, timeout / 2)):
        for p, _starttime in live:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            live = [(p, st) for p, st in live if pid_alive(p, st)]
            if live:
                time.sleep(0.02)
        if not live:
            break
    return [p for p, _starttime in live]


# --- sockets inside another network namespace --------------------------------------

def socket_in_netns(ns_path: str, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """Create a socket that lives in the netns at ``ns_path``.

    setns(CLONE_NEWNET) only affects the calling thread, so it is done in a
    short-lived thread; the socket keeps its netns for its whole life.
    (pyroute2.netns.create_socket does the same by forking, which is slower.)
    """
    box: dict = {}

    def worker():
        try:
            fd = os.open(ns_path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns_path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, type, proto)
        except BaseException as e:  # noqa: BLE001 - re-raised in caller
            box["err"] = e

    t = threading.Thread(target=worker, name="setns")
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["sock"]


def connect_in_netns(ns_path: str, addr: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    s = socket_in_netns(ns_path)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def wait_tcp(ns_path: str, addr: tuple[str, int], timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on addr inside a netns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect_in_netns(ns_path, addr, timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {addr[0]}:{addr[1]} in {ns_path}")
            time.sleep(0.02)


class TcpForwarder:
    """Listen on 127.0.0.1:<ephemeral> in our netns, forward each connection
    to ``target`` from inside the netns at ``ns_path``.

    Lets the pytest process (root netns) talk to services inside the lab
    without routes or veths into the root namespace.
    """

    def __init__(self, ns_path: str, target: tuple[str, int]):
        self.ns_path = ns_path
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address: tuple[str, int] = self._listener.getsockname()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"fwd-{target[0]}:{target[1]}")
        self._thread.start()

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            if not sel.select(timeout=0.2):
                continue
            try:
                client, _address = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()
        sel.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = connect_in_netns(self.ns_path, self.target, timeout=5.0)
            upstream.settimeout(None)
        except OSError:
            client.close()  # the client sees a closed connection, as if refused
            return
        with self._lock:
            self._socks.update((client, upstream))
        t = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        t.start()
        self._pump(client, upstream)
        t.join()
        with self._lock:
            self._socks.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Stop accepting and drop live connections (their sockets pin the netns)."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            for s in list(self._socks):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
