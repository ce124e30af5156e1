"""Real dockerd and Podman inside the simulated hosts.

What it takes is written down in ../shared/reference/containers-in-the-lab.md; in short:

- each host gets its own sysfs (so /sys/class/net lists its interfaces) with the cgroup v1
  hierarchies mounted back on top, and private tmpfs over the paths dockerd, containerd, runc,
  Podman and CNI would otherwise share between hosts (the plugin socket directory among them);
- each dockerd has its own socket, pidfile, data root, TMPDIR and cgroup parent; each Podman its
  own containers.conf and storage.conf (CNI backend, cgroupfs, vfs);
- images come from a local busybox tree (no registry here), imported as ``local/busybox`` and
  tagged ``debian`` so the seed's commands run as written (``ping``, ``sleep``, ``nslookup`` and
  ``ip`` are busybox applets).

Every daemon is started through ``Lab._spawn`` (PID recorded, stopped by PID). Containers live in
their own namespaces, where the lab's stranger sweep cannot see them: ``stop`` removes them
through the runtime first and then kills whatever is left in their cgroups.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .core import REPO, LabError, SimHost

DOCKER = "/usr/bin/docker"      # Debian's docker.io (20.10); /usr/local/bin may hold another CLI
DOCKERD = "/usr/sbin/dockerd"
PODMAN = "/usr/bin/podman"
BUSYBOX = "/bin/busybox"
IMAGE = "local/busybox"
IMAGE_ALIASES = ("debian",)
CACHE = REPO / ".cache" / "images"
SERVICE_SOCKET = "/run/podman/podman.sock"   # rootful Podman's API socket (podman.socket)

# Paths the hosts would share without a private tmpfs each (see the module docstring).
PRIVATE_DIRS = ("/run/docker", "/etc/docker", "/run/containerd", "/run/runc", "/run/crun",
                "/var/lib/cni", "/etc/cni/net.d", "/opt/cni", "/run/containers", "/run/libpod",
                "/var/lib/containers", "/run/podman")
CGROUP_V1 = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


def missing() -> list[str]:
    """The binaries this module needs that this machine lacks (scripts/setup.sh installs them)."""
    return [p for p in (DOCKER, DOCKERD, PODMAN, BUSYBOX) if not os.access(p, os.X_OK)]


def require() -> None:
    gone = missing()
    if gone:
        raise LabError("missing %s: run scripts/setup.sh (it installs docker.io, podman, "
                       "busybox-static)" % ", ".join(gone))


def busybox_tar() -> Path:
    """A rootfs tarball holding busybox and one symlink per applet (built once, cached)."""
    tar = CACHE / "busybox.tar"
    if tar.exists():
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="busybox-", dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for a in applets:
            if a != "busybox":
                (root / "bin" / a).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        part = Path(tmp) / "busybox.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(part), "."], check=True)
        os.replace(part, tar)
    return tar


def prepare_host(host: SimHost) -> None:
    """Own sysfs, cgroup mounts and private runtime directories inside ``host`` (once)."""
    if getattr(host, "_containers_ready", False):
        return
    lines = ["set -e",
             # A holder made by unshare keeps the root namespace's sysfs: mount its own.
             "mount -t sysfs sysfs /sys",
             "mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup"]
    for c in CGROUP_V1:
        lines += [f"mkdir -p /sys/fs/cgroup/{c}", f"mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"]
    lines += ["mkdir -p /sys/fs/cgroup/systemd /sys/fs/cgroup/unified",
              "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd",
              "mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified"]
    for d in PRIVATE_DIRS:
        lines += [f"mkdir -p {d}", f"mount -t tmpfs -o mode=0755 lab-private {d}"]
    host.run("\n".join(lines))
    host._containers_ready = True


def _kill_cgroup(path: str) -> None:
    """Kill every process in the pids cgroup ``path`` and below (from the root namespace)."""
    root = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
    if not root.is_dir():
        return
    for _attempt in range(20):
        pids = set()
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    for c in CGROUP_V1:
        base = Path("/sys/fs/cgroup") / c / path.lstrip("/")
        if base.is_dir():
            for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                base.rmdir()
            except OSError:
                pass


class Dockerd:
    """One dockerd (20.10) inside a simulated host, with its own socket and state."""

    def __init__(self, lab, host: SimHost, *, live_restore: bool = False, dns: tuple[str, ...] = (),
                 extra: tuple[str, ...] = ()):
        require()
        self.lab, self.host = lab, host
        self.dir = lab.workdir / "docker" / host.name
        self.sock = str(self.dir / "docker.sock")
        self.cgroup = f"/{lab.tag}-{host.name}-docker"
        self.live_restore = live_restore
        self.dns = tuple(dns)
        self.extra = tuple(extra)
        self.proc = None
        prepare_host(host)   # now: whatever starts before dockerd (the plugin) must see the same mounts
        lab.add_stop_hook(self.close)

    @property
    def url(self) -> str:
        return "unix://" + self.sock

    def argv(self) -> list[str]:
        a = [DOCKERD, "-H", self.url, "--pidfile", str(self.dir / "docker.pid"),
             "--data-root", str(self.dir / "data"), "--storage-driver", "vfs",
             "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", self.cgroup,
             "--log-level", "warn"]
        if self.live_restore:
            a.append("--live-restore")
        for d in self.dns:
            a += ["--dns", d]
        return a + list(self.extra)

    def start(self, timeout: float = 90) -> "Dockerd":
        prepare_host(self.host)
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.proc = self.lab._spawn("dockerd", self.host.name, self.host.nsenter_cmd() + [
            "env", f"TMPDIR={self.dir / 'tmp'}", *self.argv()])
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.popen.poll() is not None:
                raise LabError(f"dockerd on {self.host.name} exited: see "
                               f"{self.lab._log_path('dockerd', self.host.name)}")
            try:
                if self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass   # the socket is there, the API not yet (dockerd waits for plugins before serving)
            if time.monotonic() > deadline:
                raise LabError(f"dockerd on {self.host.name} did not answer in {timeout} s")
            time.sleep(0.1)
        if IMAGE not in self.docker("images", "--format", "{{.Repository}}").stdout.split():
            self.docker("import", str(busybox_tar()), IMAGE, timeout=120)
            for alias in IMAGE_ALIASES:
                self.docker("tag", IMAGE, alias)
        return self

    def docker(self, *args, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
        return self.host.run([DOCKER, "-H", self.url, *args], check=check, timeout=timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    def stop(self, *, remove_containers: bool = True, timeout: float = 30) -> None:
        """Stop dockerd by its PID (SIGTERM; it stops its containers first). With
        ``remove_containers`` every container is removed before, quickly (``-t 1``)."""
        if self.running():
            if remove_containers:
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            self.lab._stop_procs([self.proc], timeout=timeout, strict=False)
        self.proc = None

    def close(self) -> None:
        """Stop dockerd and kill whatever is left in its containers' cgroups (the lab's stop hook)."""
        if self.lab.hosts.get(self.host.name) is self.host:
            self.stop()
        _kill_cgroup(self.cgroup)

    def restart(self, **kw) -> "Dockerd":
        self.stop(remove_containers=False, **kw)
        return self.start()


class Podman:
    """Podman 4.3 inside a simulated host: CNI backend, cgroupfs, vfs, state of its own."""

    def __init__(self, lab, host: SimHost):
        require()
        self.lab, self.host = lab, host
        self.dir = lab.workdir / "podman" / host.name
        self.cgroup = f"/{lab.tag}-{host.name}-podman"
        self._ready = False
        self.service = None
        prepare_host(host)
        lab.add_stop_hook(self.stop)

    def _write_conf(self) -> None:
        d = self.dir
        for sub in ("tmp", "storage", "run", "static"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "containers.conf").write_text(f"""\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
network_config_dir = "/etc/cni/net.d"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d / 'events.log'}"
tmp_dir = "{d / 'tmp'}"
static_dir = "{d / 'static'}"
runtime = "runc"
""")
        (d / "storage.conf").write_text(f"""\
[storage]
driver = "vfs"
graphroot = "{d / 'storage'}"
runroot = "{d / 'run'}"
""")

    def env(self) -> list[str]:
        return ["env", f"CONTAINERS_CONF={self.dir / 'containers.conf'}",
                f"CONTAINERS_STORAGE_CONF={self.dir / 'storage.conf'}", f"TMPDIR={self.dir / 'tmp'}"]

    def start(self) -> "Podman":
        prepare_host(self.host)
        self._write_conf()
        if IMAGE not in self.podman("images", "--format", "{{.Repository}}").stdout:
            self.podman("import", str(busybox_tar()), IMAGE, timeout=120)
        self._ready = True
        return self

    def podman(self, *args, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
        args = list(args)
        if args and args[0] in ("run", "create"):
            args[1:1] = ["--cgroup-parent", self.cgroup]
        return self.host.run(self.env() + [PODMAN, *args], check=check, timeout=timeout)

    def serve(self, sock: str = SERVICE_SOCKET, timeout: float = 30) -> str:
        """Podman's API service (Docker-compatible and libpod) on ``sock`` in this host, as the
        podman.socket unit gives it: ``podman system service --time 0``, started through
        ``Lab._spawn`` and stopped by its PID. /run/podman is private to the host. Returns the path."""
        if self.service is not None and self.service.popen.poll() is None:
            return sock
        self.service = self.lab._spawn("podman-service", self.host.name, self.host.nsenter_cmd() + self.env() + [
            PODMAN, "system", "service", "--time", "0", "unix://" + sock])
        deadline = time.monotonic() + timeout
        while self.host.run(["test", "-S", sock], check=False).returncode != 0:
            if self.service.popen.poll() is not None:
                raise LabError(f"podman system service on {self.host.name} exited: see "
                               f"{self.lab._log_path('podman-service', self.host.name)}")
            if time.monotonic() > deadline:
                raise LabError(f"podman system service on {self.host.name}: no socket {sock} in {timeout} s")
            time.sleep(0.1)
        return sock

    def stop(self) -> None:
        if self._ready and self.lab.hosts.get(self.host.name) is self.host:
            self.podman("rm", "-af", "-t", "0", check=False, timeout=60)
        if self.service is not None:
            self.lab._stop_procs([self.service], timeout=10, strict=False)
            self.service = None
        _kill_cgroup(self.cgroup)
        self._ready = False
