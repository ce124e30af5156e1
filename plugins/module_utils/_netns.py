# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find network namespaces by name, path or PID, and hold one netlink socket per namespace per run.

Nothing here creates a namespace unless asked to: pyroute2's IPRoute(netns=...) would,
so every socket is opened with flags=0.
"""
from __future__ import annotations

import errno
import os
import re

from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError


def _lazy_pyroute2_package():
    """Register pyroute2's package without running its ``__init__``, which imports every library it
    has (NDB, IPDB, conntrack, nl80211, ipset, ...): about a third of what importing pyroute2 costs
    a module run (benchmarks/README.md), for nothing this collection uses. Submodules import as
    usual; the first attribute that is not a submodule (``pyroute2.IPRoute`` from other code in the
    same process, say) runs the real ``__init__`` into the package, so that code sees pyroute2 as
    always. Does nothing when pyroute2 is imported already or cannot be found."""
    import importlib
    import importlib.util
    import sys
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)
    state = {"initialised": False}

    def __getattr__(name):
        if not name.startswith("__"):
            try:
                return importlib.import_module("pyroute2." + name)
            except ModuleNotFoundError as e:
                if e.name != "pyroute2." + name:
                    raise
        if not state["initialised"]:
            state["initialised"] = True
            spec.loader.exec_module(package)
            if name in package.__dict__:
                return package.__dict__[name]
        raise AttributeError("module 'pyroute2' has no attribute %r" % name)

    package.__getattr__ = __getattr__
    sys.modules["pyroute2"] = package


try:
    _lazy_pyroute2_package()
    from pyroute2.netlink.exceptions import NetlinkError
    from ansible_collections.overlay.vxlan.plugins.module_utils import _rtnl
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as e:  # reported by require_pyroute2 with the module's own message
    _rtnl = None
    NetlinkError = OSError
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = e


# pyroute2's IPRoute and its netns helpers are imported when first used: with them, pyroute2's
# socket layer and asyncio (about 100 ms of every module run's start, -X importtime), which a run
# served by _rtnl alone never needs.

def IPRoute():  # noqa: N802 - stands for the class
    from pyroute2.iproute.linux import IPRoute as _IPRoute
    return _IPRoute()


def _pyroute2_netns():
    from pyroute2 import netns
    return netns


NETNS_RUN_DIR = "/run/netns"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def require_pyroute2():
    if not HAS_PYROUTE2:
        raise OverlayError("the Python library pyroute2 (0.9.x) is required on the target host: %s; "
                           "install it (the overlay_host role does) or set ansible_python_interpreter"
                           % PYROUTE2_IMPORT_ERROR)


def require_root():
    if os.geteuid() != 0:
        raise OverlayError("this module changes network namespaces and links and must run as root "
                           "(use become: true); running as uid %d" % os.geteuid())


class Namespace:
    """A resolved network namespace: ``path`` is None for the namespace the module runs in."""

    def __init__(self, spec, path, kind, label=None):
        self.spec = spec
        self.path = path
        self.kind = kind  # host | name | path | pid
        self.label = label  # what holds it, for messages: "docker container C0"

    @property
    def is_host(self):
        return self.path is None

    @property
    def name(self):
        return self.spec if self.kind == "name" else None

    def exists(self):
        return self.path is None or os.path.exists(self.path)

    def describe(self):
        if self.label:
            return "the namespace of %s (%s)" % (self.label, self.spec)
        return "the host namespace" if self.is_host else "namespace %s" % self.spec

    def __eq__(self, other):
        return isinstance(other, Namespace) and self.path == other.path

    def __hash__(self):
        return hash(self.path)

    def __repr__(self):
        return "Namespace(%r)" % (self.spec,)


def resolve(spec, field):
    """Turn a user's namespace spec into a Namespace without touching the kernel.

    ``None``/"" is the host; an integer or digits is a PID; anything with a '/' is a path
    (``/proc/PID/ns/net``, a Docker SandboxKey); anything else is an ``ip netns`` name.
    """
    if spec is None or spec == "":
        return Namespace(None, None, "host")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        pid = int(spec)
        if pid <= 0:
            raise OverlayError("PID %d is not a process id" % pid, field)
        return Namespace(str(pid), "/proc/%d/ns/net" % pid, "pid")
    spec = str(spec)
    if "/" in spec:
        if not spec.startswith("/"):
            raise OverlayError("namespace path %r must be absolute" % spec, field)
        return Namespace(spec, os.path.normpath(spec), "path")
    if not _NAME.match(spec) or spec in (".", ".."):
        raise OverlayError("%r is not a valid namespace name (letters, digits, '_', '.', '-'; at most 64)" % spec,
                           field)
    return Namespace(spec, os.path.join(NETNS_RUN_DIR, spec), "name")


def of_container(info, field):
    """The network namespace of a running container as _runtime.inspect reported it: its PID's,
    /proc/PID/ns/net (the spec stored in the endpoint's record; a restart gives a new PID, and the
    next run moves the endpoint there). When the runtime's SandboxKey is visible here too, both
    must be the same namespace: otherwise the PID is not the container's in this PID namespace."""
    label = "%s container %s" % (info["runtime"], info["name"])
    ns = Namespace("/proc/%d/ns/net" % info["pid"], "/proc/%d/ns/net" % info["pid"], "path", label)
    if not os.path.exists(ns.path):
        raise OverlayError("%s runs as PID %d, which this host does not have (does the module run in the "
                           "runtime's PID namespace?)" % (label, info["pid"]), field)
    key = info.get("sandbox_key")
    if key and is_netns(key) and not same_namespace(ns, Namespace(key, key, "path")):
        raise OverlayError("%s runs as PID %d, whose network namespace is not its sandbox %s (does the module "
                           "run in the runtime's PID namespace?)" % (label, info["pid"], key), field)
    return ns


def check_exists(ns, field, create=False, check_mode=False):
    """Fail clearly on a missing namespace; create a missing named one only when asked.

    Returns True when the namespace was (or in check mode would be) created.
    """
    if ns.exists():
        if not ns.is_host and not is_netns(ns.path):
            raise OverlayError("%s is not a network namespace (not an nsfs file)" % ns.path, field)
        return False
    if ns.kind == "pid":
        raise OverlayError("no process with PID %s (its namespace %s does not exist)" % (ns.spec, ns.path), field)
    if ns.kind == "path" or not create:
        raise OverlayError("network namespace %s does not exist%s" % (
            ns.spec, "" if ns.kind == "path" else " (set create_namespaces: true to create it)"), field)
    if not check_mode:
        _pyroute2_netns().create(ns.spec)
    return True


def is_netns(path):
    # Namespace files all live on nsfs, the same device as our own /proc/self/ns/net; a plain
    # file left in /run/netns by a failed `ip netns add` does not.
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def same_namespace(a, b):
    """True when two resolved namespaces are the same kernel object (a name and a PID may be)."""
    try:
        sa = os.stat(a.path or "/proc/self/ns/net")
        sb = os.stat(b.path or "/proc/self/ns/net")
    except OSError:
        return a == b
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def identity(ns):
    """A key equal for two namespaces exactly when same_namespace says so (for a dict or a set:
    comparing each of n endpoints with every other costs n squared stats)."""
    try:
        st = os.stat(ns.path or "/proc/self/ns/net")
    except OSError:
        return ("path", ns.path)
    return (st.st_dev, st.st_ino)


def inode(ns):
    st = os.stat(ns.path or "/proc/self/ns/net")
    return st.st_ino


class Netlink:
    """One netlink socket per namespace for the whole run; close them all at the end. Each is an
    _rtnl.Socket: IPRoute's calls, the frequent ones served without pyroute2's asyncio request
    path, the rest by an IPRoute it opens in the same namespace when first needed.

    Until the run's first write, link and address reads are served from one dump per namespace
    (see ``Snapshot``): a re-run with nothing to change reads each namespace once. The first write
    anywhere ends that for every namespace (deleting a veth end changes its peer's namespace too),
    and from then on every read goes to the kernel, as it always did."""

    def __init__(self):
        self._sockets = {}
        self.snapshots = True
        self.netnsids = {}  # (namespace path, other's path) -> nsid, read once until a write

    def wrote(self):
        if self.snapshots:
            self.snapshots = False
            for sock in self._sockets.values():
                sock.drop()
        self.netnsids = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get(self, ns):
        key = ns.path
        sock = self._sockets.get(key)
        if sock is None:
            try:
                sock = Snapshot(_open(ns.path), self)
            except (OSError, NetlinkError) as e:
                raise OverlayError("cannot open %s: %s" % (ns.describe(), e))
            self._sockets[key] = sock
        return sock

    def links_moved(self):
        """A link was deleted, renamed or moved: names may now name other links (or none)."""
        for sock in self._sockets.values():
            sock.bridges.clear()

    def forget(self, ns):
        """Close the socket of a namespace about to go; the peers of its veths go with it."""
        self.wrote()
        self.links_moved()
        sock = self._sockets.pop(ns.path, None)
        if sock is not None:
            sock.close()

    def close(self):
        for sock in self._sockets.values():
            try:
                sock.close()
            except Exception:  # closing is best effort; the run's result is already decided
                pass
        self._sockets = {}


READS = {"get", "dump", "show"}
MOVES = {"ifname", "net_ns_fd", "net_ns_pid", "IFLA_IFNAME", "IFLA_NET_NS_FD", "IFLA_NET_NS_PID"}


class Snapshot:
    """An IPRoute socket whose link and address reads come from one dump while ``owner.snapshots``.

    ``link("get", ifname=...)``/``link("get", index=...)``, ``get_links()`` and ``get_addr(index=...)``
    answer from the namespace's links and addresses as dumped at the first read (a missing name
    raises ENODEV, as the kernel does). A write to links, addresses, routes or bridge ports
    (``link("set")``, ``addr("add")``, ``brport("set")``, ...) tells the owner, which drops every
    snapshot before the write goes out. FDB and neighbour entries are neither links nor addresses:
    writing them changes nothing a snapshot holds. ``fdb("dump")`` (whole or for one ``ifindex``)
    is served from one dump as well (anti-spoofing and the peer sync both read the overlay
    namespace's), until a write to the FDB here or to any link (a port's own entries come and go
    with it). Every other call goes to the socket unchanged."""

    def __init__(self, ipr, owner):
        self._ipr = ipr
        self._owner = owner
        self._links = None  # (by name, by index)
        self._addrs = None
        self._fdb = None
        # Bridges' indexes by name (_links.bridge_index), for the whole run: a write changes a
        # bridge's attributes, not its index; only a deleted, renamed or moved link clears them.
        self.bridges = {}

    def __getattr__(self, name):
        return getattr(self._ipr, name)

    def drop(self):
        self._links = self._addrs = self._fdb = None

    def _link_maps(self):
        if self._links is None:
            msgs = self._ipr.get_links()
            self._links = ({m.get("IFLA_IFNAME"): m for m in msgs}, {m["index"]: m for m in msgs})
        return self._links

    def _write(self, cmd):
        if cmd not in READS:
            self._owner.wrote()

    def link(self, cmd, **kwargs):
        if cmd == "get" and self._owner.snapshots and len(kwargs) == 1 and ("ifname" in kwargs or "index" in kwargs):
            by_name, by_index = self._link_maps()
            msg = by_name.get(kwargs["ifname"]) if "ifname" in kwargs else by_index.get(kwargs["index"])
            if msg is None:
                raise NetlinkError(errno.ENODEV, "No such device")
            return [msg]
        self._write(cmd)
        if cmd in ("del", "delete", "remove") or (cmd == "set" and MOVES & set(kwargs)):
            self._owner.links_moved()
        return self._ipr.link(cmd, **kwargs)

    def get_links(self, *args, **kwargs):
        if self._owner.snapshots and not args and not kwargs:
            return list(self._link_maps()[1].values())
        return self._ipr.get_links(*args, **kwargs)

    def get_addr(self, **kwargs):
        if self._owner.snapshots and set(kwargs) <= {"index"}:
            if self._addrs is None:
                self._addrs = self._ipr.get_addr()
            return [m for m in self._addrs if "index" not in kwargs or m["index"] == kwargs["index"]]
        return self._ipr.get_addr(**kwargs)

    def addr(self, cmd, *args, **kwargs):
        self._write(cmd)
        return self._ipr.addr(cmd, *args, **kwargs)

    def route(self, cmd, *args, **kwargs):
        self._write(cmd)
        return self._ipr.route(cmd, *args, **kwargs)

    def brport(self, cmd, *args, **kwargs):
        self._write(cmd)
        return self._ipr.brport(cmd, *args, **kwargs)

    def fdb(self, cmd, *args, **kwargs):
        if cmd == "dump" and self._owner.snapshots and not args and set(kwargs) <= {"ifindex"}:
            if self._fdb is None:
                self._fdb = list(self._ipr.fdb("dump"))
            return [m for m in self._fdb if "ifindex" not in kwargs or m["ifindex"] == kwargs["ifindex"]]
        if cmd not in READS:
            self._fdb = None
        return self._ipr.fdb(cmd, *args, **kwargs)

    def close(self):
        self._ipr.close()


def _open(path):
    """The run's socket for the namespace at ``path`` (None: the namespace we run in)."""
    if path is None:
        return _rtnl.Socket(IPRoute)
    return _in_namespace(path, lambda: _rtnl.Socket(lambda: _in_namespace(path, IPRoute)))


def _in_namespace(path, make):
    """Call ``make`` inside another namespace: enter it, call, come back. A netlink socket made
    there stays in it (_open); a process forked there starts there (_nft's ``nft`` command).

    Entering in-process takes a fraction of
    the fork that IPRoute(netns=...) makes per namespace; only the calling thread moves (the
    agent's other threads stay where they are), and only for the duration of the call.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            return make()
        finally:
            _setns(own)
    finally:
        os.close(own)


CLONE_NEWNET = 0x40000000
_LIBC = []


def _setns(fd):
    """setns(2) into the network namespace open as ``fd``, for the calling thread."""
    if hasattr(os, "setns"):  # Python 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    if not _LIBC:
        import ctypes
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    if _LIBC[0].setns(fd, CLONE_NEWNET) != 0:
        import ctypes
        code = ctypes.get_errno()
        raise OSError(code, "setns: %s" % os.strerror(code))


def delete_named(name):
    _pyroute2_netns().remove(name)


def list_named():
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return []
