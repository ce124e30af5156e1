# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Container runtimes' HTTP APIs over their unix sockets: Docker's Engine API and Podman's
Docker-compatible one (``podman system service``, or the ``podman.socket`` unit).

One client for the whole collection: overlay_endpoint's ``container`` option (``inspect``) and the
host agent's Docker door (``get_json``). Only the Python standard library (http.client over
AF_UNIX): no runtime CLI, no Docker SDK on the target host."""
from __future__ import annotations

import errno
import http.client
import json
import os
import re
import socket
import stat
from urllib.parse import quote

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

DEFAULT_SOCKETS = {"docker": "/run/docker.sock", "podman": "/run/podman/podman.sock"}
RUNTIMES = tuple(DEFAULT_SOCKETS)
DAEMONS = {"docker": "dockerd (systemctl start docker)",
           "podman": "Podman's API service (systemctl enable --now podman.socket, or podman system service)"}
TIMEOUT = 5
# Docker's names are [a-zA-Z0-9][a-zA-Z0-9_.-]+ (shown with a leading '/'); ids are hex.
_CONTAINER = re.compile(r"^/?[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (the Host header says localhost, as Docker's own CLI sends)."""

    def __init__(self, path, timeout=TIMEOUT):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def socket_path(url):
    """``unix:///run/docker.sock`` or ``/run/docker.sock`` -> ``/run/docker.sock``."""
    return url[len("unix://"):] if url.startswith("unix://") else url


def request(url, method, path, timeout=TIMEOUT, body=None):
    """One request (``body``, when given, sent as JSON): (status, decoded JSON body or None when the
    body is empty or not JSON). Raises OSError (socket missing, refused, permission, timeout) or
    http.client.HTTPException."""
    conn = UnixHTTPConnection(socket_path(url), timeout=timeout)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body) if body.strip() else None
    except ValueError:
        return resp.status, None


def get_json(url, path, timeout=2):
    """GET ``path``: the decoded JSON of a 200 reply, or None for anything else (best effort: the
    agent asks again later)."""
    try:
        status, body = request(url, "GET", path, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None
    return body if status == 200 else None


def container_name(value, field):
    if not isinstance(value, str) or not _CONTAINER.match(value):
        raise OverlayError("%r is not a container name or id (letters, digits, '_', '.', '-'; at most 253)"
                           % (value,), field)
    return value.lstrip("/")


def runtime_name(value, field):
    if value not in RUNTIMES:
        raise OverlayError("%r is not one of %s" % (value, ", ".join(RUNTIMES)), field)
    return value


def _socket_problem(path, runtime, given, socket_field="container_socket"):
    """Why ``path`` cannot be a runtime's API socket, or None when it looks like one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "%s%s does not exist: is %s running?%s" % (
            "" if given else "%s's default socket " % runtime, path, DAEMONS[runtime],
            "" if given else " (set %s if it listens elsewhere)" % socket_field)
    except OSError as e:
        return "cannot stat %s: %s" % (path, e.strerror or e)
    if not stat.S_ISSOCK(st.st_mode):
        return "%s is not a unix socket" % path
    return None


def socket_for(runtime, sock, socket_field):
    """The API socket's path: ``sock`` when given (checked), else the runtime's default. Refuses a
    missing path or one that is not a socket, naming ``socket_field``."""
    given = bool(sock)
    path = socket_path(sock) if given else DEFAULT_SOCKETS[runtime]
    if not os.path.isabs(path):
        raise OverlayError("%r is not an absolute path to a unix socket" % (sock,), socket_field)
    problem = _socket_problem(path, runtime, given, socket_field)
    if problem:
        raise OverlayError(problem, socket_field)
    return path


def api(path, method, api_path, runtime, socket_field, body=None, timeout=TIMEOUT):
    """One request to a runtime's API on the socket ``path``: (status, decoded body). Every problem
    with the socket (refused, permission, no answer, not HTTP) is an OverlayError naming
    ``socket_field``."""
    try:
        return request(path, method, api_path, timeout=timeout, body=body)
    except PermissionError:
        raise OverlayError("permission denied on %s: run the module as root (become: true)" % path, socket_field)
    except ConnectionRefusedError:
        raise OverlayError("nothing listens on %s: is %s running?" % (path, DAEMONS[runtime]), socket_field)
    except socket.timeout:
        raise OverlayError("%s did not answer on %s within %s s" % (runtime, path, timeout), socket_field)
    except OSError as e:
        if e.errno == errno.EACCES:
            raise OverlayError("permission denied on %s: run the module as root (become: true)" % path, socket_field)
        raise OverlayError("cannot talk to %s on %s: %s" % (runtime, path, e.strerror or e), socket_field)
    except http.client.HTTPException as e:
        raise OverlayError("%s on %s did not answer HTTP: %s" % (runtime, path, type(e).__name__), socket_field)


def message(body):
    """The error text of a runtime's reply, or None."""
    return body.get("message") if isinstance(body, dict) else None


def inspect(name, runtime="docker", sock=None, field="container", socket_field="container_socket",
            timeout=TIMEOUT):
    """The running container ``name`` (a name or an id) as ``runtime`` reports it through
    ``GET /containers/<name>/json``: {runtime, name, id, pid, sandbox_key, socket}.

    Every problem is an OverlayError: the socket's (missing, not a socket, refused, permission,
    no answer) names ``socket_field``; the container's (unknown, not running) names ``field``."""
    runtime = runtime_name(runtime, field + "_runtime")
    name = container_name(name, field)
    path = socket_for(runtime, sock, socket_field)
    status, body = api(path, "GET", "/containers/%s/json" % quote(name, safe=""), runtime, socket_field,
                       timeout=timeout)
    text = message(body)
    if status == 404:
        raise OverlayError("%s has no container named %s (%s)" % (runtime, name, path), field)
    if status != 200 or not isinstance(body, dict):
        raise OverlayError("%s on %s answered %s to the inspection of container %s%s"
                           % (runtime, path, status, name, ": %s" % text if text else ""), field)
    state = body.get("State") if isinstance(body.get("State"), dict) else {}
    pid = state.get("Pid")
    if not state.get("Running") or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise OverlayError("container %s is not running (%s %s); start it first: its network namespace exists only "
                           "while it runs" % (name, runtime, state.get("Status") or "state unknown"), field)
    settings = body.get("NetworkSettings") if isinstance(body.get("NetworkSettings"), dict) else {}
    return {"runtime": runtime, "name": str(body.get("Name") or name).lstrip("/"), "id": body.get("Id"),
            "pid": pid, "sandbox_key": settings.get("SandboxKey") or None, "socket": path}
