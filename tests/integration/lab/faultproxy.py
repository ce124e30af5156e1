"""A small fault-injecting HTTP proxy in front of Consul, for tests.

Each accepted connection carries one HTTP request (the proxy asks upstream for ``Connection:
close``, so the client opens a new connection for the next one). What happens to a request
depends on the proxy's current mode:

- ``pass``: forwarded, the answer relayed;
- ``delay``: forwarded, the answer held for ``delay`` seconds (past the client's timeout) before it
  is relayed;
- ``cut``: forwarded, the whole answer read from Consul (so the request was applied), then the
  client's connection reset without a byte of it;
- ``status``: answered by the proxy itself with ``status`` and ``body`` (e.g. 500, 429, 503),
  nothing forwarded;
- ``freeze``: nothing forwarded or answered; the connection held open and silent. Connections that
  were relaying when the freeze began go silent too and stay silent (a partition that dropped them).

``set(mode, times=N, ...)`` applies a mode to the next N requests, then returns to ``pass``.
Only the standard library; the listener and the upstream connection may live in other network
namespaces (see nsutil.socket_in_netns).
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time

from .nsutil import connect_in_netns, socket_in_netns


class FaultProxy:
    def __init__(self, target: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0),
                 listen_ns: str | None = None, target_ns: str | None = None):
        self.target = target
        self.target_ns = target_ns
        sock = socket_in_netns(listen_ns) if listen_ns else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(listen)
        sock.listen(64)
        self._listener = sock
        self.address = sock.getsockname()
        self._lock = threading.Lock()
        self._mode, self._times, self._opts = "pass", None, {}
        self._generation = 0  # bumped by every freeze: relays started before it go silent
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self.log: list[tuple[str, str, str]] = []  # (mode, method, path) of every request seen
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="faultproxy")
        self._thread.start()

    # -- control -----------------------------------------------------------------------------
    def set(self, mode: str, times: int | None = None, **opts) -> None:
        assert mode in ("pass", "delay", "cut", "status", "freeze"), mode
        with self._lock:
            self._mode, self._times, self._opts = mode, times, opts
            if mode == "freeze":
                self._generation += 1

    @property
    def mode(self) -> str:
        return self._mode

    def _take(self):
        with self._lock:
            mode, opts = self._mode, dict(self._opts)
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._mode, self._times, self._opts = "pass", None, {}
            return mode, opts

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            for s in list(self._socks):
                try:
                    s.close()
                except OSError:
                    pass

    # -- serving -----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            r, _w, _x = select.select([self._listener], [], [], 0.2)
            if not r:
                continue
            try:
                client, _addr = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *socks):
        with self._lock:
            self._socks.update(socks)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        upstream = None
        try:
            request = _read_request(client)
            if request is None:
                return
            head, body = request
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            mode, opts = self._take()
            self.log.append((mode, line[0], line[1] if len(line) > 1 else ""))
            if mode == "status":
                text = opts.get("body", "injected failure").encode()
                client.sendall(b"HTTP/1.1 %d Injected\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                               b"Connection: close\r\n\r\n%s" % (opts.get("status", 500), len(text), text))
                return
            if mode == "freeze":
                self._hold()
                return
            upstream = (connect_in_netns(self.target_ns, self.target, timeout=5.0) if self.target_ns
                        else socket.create_connection(self.target, timeout=5.0))
            self._track(upstream)
            upstream.sendall(_close_header(head) + body)
            if mode == "pass":
                self._relay(upstream, client)
                return
            answer = _read_all(upstream)
            if mode == "delay":
                time.sleep(opts.get("delay", 30))
                client.sendall(answer)
            elif mode == "cut":
                # RST instead of FIN: SO_LINGER with a zero timeout.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    with self._lock:
                        self._socks.discard(s)
                    try:
                        s.close()
                    except OSError:
                        pass

    def _hold(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.1)

    def _relay(self, upstream: socket.socket, client: socket.socket) -> None:
        generation = self._generation
        upstream.settimeout(None)
        while not self._stop.is_set():
            if self._generation != generation:
                self._hold()  # frozen mid-answer: this connection stays silent for good
                return
            r, _w, _x = select.select([upstream], [], [], 0.1)
            if not r:
                continue
            data = upstream.recv(65536)
            if not data:
                return
            if self._generation != generation:
                self._hold()
                return
            client.sendall(data)


def _read_request(sock: socket.socket):
    """(head, body) of one HTTP request, or None if the client closed first."""
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _sep, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n", rest


def _close_header(head: bytes) -> bytes:
    lines = [line for line in head.rstrip(b"\r\n").split(b"\r\n")
             if not line.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n"


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk
