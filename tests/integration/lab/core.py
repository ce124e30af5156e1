"""Simulated multi-host lab built from Linux namespaces.

Topology (every box is a namespace held by a `sleep infinity` process we start):

    underlay netns: bridge br-under
      +-- controller   (netns only; shares our mount ns so it sees the repo)  .2
      +-- internet     (netns; owns 198.51.100.1 on lo, ip_forward=1)          .254
      +-- SimHost xyz  (net+mount+uts ns; private /run/netns; sshd; eth0 = ip)
      +-- ...          one of them may run `consul agent -dev`

Nothing is created in the root network namespace and no global names are
used, so labs can run in parallel. Every process we start is recorded with
its PID and start time; stop() also kills anything else found living in the
lab's namespaces (sshd session children, ssh ControlPersist masters, daemons
started by modules) so the namespaces really disappear.

Simulated hosts share the machine's filesystem (only /run/netns, /etc/hosts,
/etc/resolv.conf and ``private_dirs`` are per host): a module that writes
e.g. /etc/foo on a "host" writes the real /etc/foo.
"""
from __future__ import annotations

import atexit
import ipaddress
import itertools
import json
import os
import select
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path

from . import nsutil
from .playbook import PlaybookResult

REPO = Path(__file__).resolve().parents[3]
DEFAULT_VENV = REPO / ".venv"
CONSUL_BIN = REPO / ".cache" / "bin" / "consul"
CALLBACK_DIR = Path(__file__).resolve().parent / "callback"
INTERNET_IP = "198.51.100.1"   # TEST-NET-2: the simulated "internet" target
CONSUL_PORT = 8500
# One JSON file per live lab, so a crashed test run can be cleaned up later
# (see cleanup_stale()). /run is a tmpfs: stale files vanish on reboot.
STATE_DIR = Path(os.environ.get("LAB_STATE_DIR", "/run/overlay-vxlan-labs"))

_live_labs: "weakref.WeakSet[Lab]" = weakref.WeakSet()
_tag_counter = itertools.count()


class LabError(RuntimeError):
    pass


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the command's output."""

    def __str__(self):
        cmd = self.cmd if isinstance(self.cmd, str) else shlex.join(map(str, self.cmd))
        return (f"command failed with rc={self.returncode}: {cmd}\n"
                f"stdout: {(self.stdout or '').strip()}\nstderr: {(self.stderr or '').strip()}")


@dataclass
class _Proc:
    role: str                 # "holder", "sshd", "consul", "container"
    name: str
    popen: subprocess.Popen
    pid: int
    starttime: int | None
    ns_kinds: tuple[str, ...] = ()   # namespaces of its own (holders, containers)


def _run(cmd, *, check=True, timeout=60, input=None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and r.returncode != 0:
        raise CommandError(r.returncode, cmd, r.stdout, r.stderr)
    return r


class SimHost:
    """A simulated host (or the controller) inside the lab."""

    def __init__(self, lab: "Lab", name: str, ip: str, pid: int, *, full: bool = True):
        self.lab = lab
        self.name = name
        self.ip = ip
        self.pid = pid
        # full=False: controller/internet, which only have their own netns.
        self._ns_flags = ["-m", "-n", "-u"] if full else ["-n"]
        self.full = full

    def __repr__(self):
        return f"<SimHost {self.name} {self.ip} pid={self.pid}>"

    def nsenter_cmd(self) -> list[str]:
        """Prefix that runs a command inside this host."""
        return ["nsenter", "-t", str(self.pid), *self._ns_flags, "--"]

    def run(self, cmd: list[str] | str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run cmd (argv list, or a string for `sh -c`) inside this host, text mode."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        return _run(self.nsenter_cmd() + argv, check=check, timeout=timeout, input=input)

    def netns_path(self, name: str | None = None) -> str:
        """Path, usable from the root namespace, of this host's netns or of one
        of its named netns (works with open()/setns and pyroute2
        ``IPRoute(netns=path, flags=0)``)."""
        if name is None:
            return f"/proc/{self.pid}/ns/net"
        if not self.full:
            raise LabError(f"{self.name} has no private /run/netns")
        # /proc/PID/root resolves paths through that process's mount namespace.
        return f"/proc/{self.pid}/root/run/netns/{name}"

    def add_netns(self, name: str) -> str:
        """`ip netns add` inside this host (a test "container"); returns its path."""
        if not self.full:
            raise LabError(f"{self.name} has no private /run/netns")
        self.run(["ip", "netns", "add", name])
        self.run(["ip", "-n", name, "link", "set", "lo", "up"])
        return self.netns_path(name)

    def del_netns(self, name: str) -> None:
        self.run(["ip", "netns", "del", name])

    def list_netns(self) -> list[str]:
        try:
            return sorted(os.listdir(f"/proc/{self.pid}/root/run/netns"))
        except FileNotFoundError:
            return []

    def spawn_container(self) -> int:
        """Start a process with its own netns inside this host; returns its PID.

        Its netns is /proc/PID/ns/net. It is killed by stop_container() or lab.stop().
        """
        proc = self.lab._spawn("container", f"{self.name}-container",
                               self.nsenter_cmd() + ["unshare", "--net", "--"],
                               script="ip link set lo up", ns_kinds=("net",))
        return proc.pid

    def stop_container(self, pid: int) -> None:
        self.lab._stop_procs([p for p in self.lab._procs if p.role == "container" and p.pid == pid])


class Lab:
    """A set of simulated hosts on a shared underlay, reachable over SSH."""

    def __init__(self, workdir: str | os.PathLike, hosts: dict[str, str], *,
                 prefix: str = "10.0.0.0/24", consul: str | None = "consul",
                 internet: bool = True, venv: str | os.PathLike = DEFAULT_VENV,
                 collections_path: str | os.PathLike | None = None,
                 groups: dict[str, list[str]] | None = None,
                 inventory_vars: dict | None = None,
                 private_dirs: list[str] | tuple[str, ...] = (),
                 consul_hcl: list[str] | tuple[str, ...] = ()):
        self.workdir = Path(workdir).resolve()
        self.net = ipaddress.ip_network(prefix)
        self.venv = Path(venv)
        self.collections_path = str(collections_path) if collections_path else None
        self.internet = internet
        self.private_dirs = list(private_dirs)
        self.consul_hcl = list(consul_hcl)   # extra `-hcl` snippets for the dev agent (ACLs, encrypt)
        self.inventory_vars = dict(inventory_vars or {})
        # Unique per lab and per process: names only ever used inside our own
        # namespaces or files, but this keeps logs and state files distinct.
        self.tag = f"lab{os.getpid()}x{next(_tag_counter)}"

        self.host_ips = {n: str(ipaddress.ip_address(ip)) for n, ip in hosts.items()}
        used = set(self.host_ips.values())
        for n, ip in self.host_ips.items():
            if ipaddress.ip_address(ip) not in self.net:
                raise ValueError(f"{n}: {ip} is not in {self.net}")
        if len(used) != len(self.host_ips):
            raise ValueError("duplicate host IPs")
        if consul is not None and consul not in self.host_ips:
            raise ValueError(f"consul host {consul!r} is not among hosts")
        self.consul_host = consul
        free = (str(a) for a in self.net.hosts() if str(a) not in used)
        self.controller_ip = str(self.net[2]) if str(self.net[2]) not in used else next(free)
        self.internet_ip = str(self.net[-2])   # .254 in a /24
        if self.internet_ip in used or self.internet_ip == self.controller_ip:
            raise ValueError(f"{self.internet_ip} is reserved for the internet host")

        default_groups = {"consul_servers": [consul] if consul else [],
                          "overlay_hosts": [n for n in hosts if n != consul]}
        self.groups = default_groups if groups is None else groups

        self.hosts: dict[str, SimHost] = {}
        self.controller: SimHost | None = None
        self.internet_host: SimHost | None = None
        self.underlay_pid: int | None = None
        self._procs: list[_Proc] = []
        self._forwarders: list[nsutil.TcpForwarder] = []
        self._consul_fwd: nsutil.TcpForwarder | None = None
        self._run_counter = itertools.count(1)
        self._lock = threading.Lock()
        self._own_ns = {k: nsutil.ns_inode("self", k) for k in nsutil.NS_KINDS}
        self.timings: dict[str, float] = {}
        self.consul_addr = f"{self.host_ips[consul]}:{CONSUL_PORT}" if consul else None
        self.inventory_path = str(self.workdir / "inventory.yml")
        self.ansible_cfg = str(self.workdir / "ansible.cfg")
        self.ssh_key = str(self.workdir / "ssh" / "id_ed25519")
        self._started = False
        self.detached = False
        self._stop_hooks: list = []

    # --- context manager ------------------------------------------------------
    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self):
        return f"<Lab {self.tag} hosts={list(self.host_ips)} workdir={self.workdir}>"

    @property
    def all_ips(self) -> dict[str, str]:
        ips = {"controller": self.controller_ip, **self.host_ips}
        if self.internet:
            ips["internet"] = self.internet_ip
        return ips

    # --- start ---------------------------------------------------------------------
    def start(self) -> "Lab":
        if self._started:
            return self
        self._started = True
        _live_labs.add(self)
        t0 = time.monotonic()
        try:
            self._prepare_files()
            self._start_network()
            self.timings["network"] = time.monotonic() - t0
            t1 = time.monotonic()
            for h in self.hosts.values():
                self._start_sshd(h)
            if self.consul_host:
                self._spawn_consul()
            for h in self.hosts.values():
                nsutil.wait_tcp(self.controller.netns_path(), (h.ip, 22), timeout=15)
            if self.consul_host:
                self._wait_consul()
            self.timings["services"] = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _prepare_files(self) -> None:
        for d in ("ssh", "logs", "runs", "hosts", "ansible-local"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        ssh = self.workdir / "ssh"
        for key in ("id_ed25519", "host_ed25519"):
            if not (ssh / key).exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.tag}-{key}",
                      "-f", str(ssh / key)])
        shutil.copyfile(ssh / "id_ed25519.pub", ssh / "authorized_keys")
        hosts_lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        hosts_lines += [f"{ip} {n}" for n, ip in self.all_ips.items()]
        (self.workdir / "etc-hosts").write_text("\n".join(hosts_lines) + "\n")
        # No real resolver is reachable (or wanted) from inside the lab.
        (self.workdir / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        # ControlPath sockets must stay below ~108 bytes: fall back to /tmp.
        cp = self.workdir / "cp"
        if len(str(cp)) > 50:
            cp = Path(tempfile.mkdtemp(prefix=f"{self.tag}-cp-"))
            self._tmp_cp = cp
        cp.mkdir(exist_ok=True)
        self._cp_dir = cp
        self._write_ansible_files()

    def _node_script(self, ifname_peer: str, ip: str, *, gateway: str | None,
                     host: str | None = None, extra: str = "") -> str:
        plen = self.net.prefixlen
        lines = []
        if host is not None:
            # Private /run/netns so `ip netns add` inside the host stays its own;
            # /var/run is a symlink to /run on Debian so it follows.
            lines += [
                "mkdir -p /run/netns /run/sshd",
                "mount -t tmpfs -o mode=0755,size=1m lab-netns /run/netns",
                f"mount --bind {shlex.quote(str(self.workdir / 'etc-hosts'))} /etc/hosts",
                f"mount --bind {shlex.quote(str(self.workdir / 'resolv.conf'))} /etc/resolv.conf",
                f"hostname {shlex.quote(host)}",
            ]
            for d in self.private_dirs:
                lines += [f"mkdir -p {shlex.quote(d)}",
                          f"mount -t tmpfs -o mode=0755 lab-private {shlex.quote(d)}"]
        lines += [
            "ip link set lo up",
            # Create the veth from inside: the peer end lands directly in the underlay.
            f"ip link add eth0 type veth peer name {ifname_peer} netns {self.underlay_pid}",
            f"ip addr add {ip}/{plen} dev eth0",
            "ip link set eth0 up",
        ]
        if gateway:
            lines.append(f"ip route add default via {gateway} dev eth0 onlink")
        if extra:
            lines.append(extra)
        return "\n".join(lines)

    def _start_network(self) -> None:
        under = self._spawn("holder", "underlay", ["unshare", "--net", "--"], ns_kinds=("net",),
                            script="ip link set lo up\nip link add br-under type bridge\n"
                                   "ip link set br-under up")
        self.underlay_pid = under.pid
        gw = self.internet_ip if self.internet else None
        specs = [("controller", self.controller_ip, None, ["--net"], None, "")]
        if self.internet:
            specs.append(("internet", self.internet_ip, None, ["--net"], None,
                          f"ip addr add {INTERNET_IP}/32 dev lo\n"
                          "echo 1 > /proc/sys/net/ipv4/ip_forward"))
        for name, ip in self.host_ips.items():
            specs.append((name, ip, gw, ["--mount", "--propagation", "private", "--net", "--uts"],
                          name, ""))
        # Spawn all holders first, then wait for all: they configure in parallel.
        pending = []
        for i, (name, ip, gateway, flags, host, extra) in enumerate(specs):
            script = self._node_script(f"u{i}", ip, gateway=gateway, host=host, extra=extra)
            proc = self._spawn("holder", name, ["unshare", *flags, "--"], script=script, wait=False,
                               ns_kinds=("net", "mnt", "uts") if host else ("net",))
            pending.append((name, ip, host, proc))
        for name, ip, host, proc in pending:
            self._wait_ready(proc)
            if nsutil.ns_inode(proc.pid, "net") == self._own_ns["net"]:
                raise LabError(f"{name}: holder {proc.pid} is in our own netns")
            sim = SimHost(self, name, ip, proc.pid, full=host is not None)
            if host is None:
                if name == "controller":
                    self.controller = sim
                else:
                    self.internet_host = sim
            else:
                for kind in ("mnt", "uts"):
                    if nsutil.ns_inode(proc.pid, kind) == self._own_ns[kind]:
                        raise LabError(f"{name}: holder {proc.pid} shares our {kind} ns")
                self.hosts[name] = sim
        batch = "".join(f"link set u{i} master br-under\nlink set u{i} up\n"
                        for i in range(len(specs)))
        _run(["nsenter", "-t", str(self.underlay_pid), "-n", "--", "ip", "-batch", "-"],
             input=batch)

    def _sshd_config(self, h: SimHost) -> Path:
        ssh = self.workdir / "ssh"
        d = self.workdir / "hosts" / h.name
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "sshd_config"
        cfg.write_text(f"""\
ListenAddress {h.ip}
Port 22
HostKey {ssh / 'host_ed25519'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {ssh / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# key files live under a tmp dir that sshd's owner checks would reject
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        return cfg

    def _start_sshd(self, h: SimHost) -> None:
        cfg = self._sshd_config(h)
        # nsenter execs sshd (no fork without -p), so the recorded PID is sshd's.
        self._spawn("sshd", h.name, h.nsenter_cmd() + ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)])

    # --- consul -----------------------------------------------------------------------------
    def _spawn_consul(self) -> None:
        if not CONSUL_BIN.exists():
            raise LabError(f"{CONSUL_BIN} missing: run scripts/setup.sh")
        h = self.hosts[self.consul_host]
        self._spawn("consul", h.name, h.nsenter_cmd() + [
            str(CONSUL_BIN), "agent", "-dev", "-node", h.name,
            "-client", h.ip, "-bind", h.ip,
            "-hcl", "disable_update_check = true",
            *[a for hcl in self.consul_hcl for a in ("-hcl", hcl)]])

    def _consul_proc(self) -> _Proc | None:
        return next((p for p in self._procs if p.role == "consul"), None)

    def _wait_consul(self, timeout: float = 30) -> None:
        fwd = self._consul_forwarder()
        url = f"http://{fwd.address[0]}:{fwd.address[1]}/v1/status/leader"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            proc = self._consul_proc()
            if proc is None or proc.popen.poll() is not None:
                raise LabError(f"consul exited; see {self._log_path('consul', self.consul_host)}")
            try:
                if opener.open(url, timeout=2).read().strip() not in (b"", b'""'):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LabError("consul elected no leader in time")
            time.sleep(0.05)

    def stop_consul(self) -> None:
        """Kill the consul agent (by PID). Connections through consul_client() then fail."""
        self._stop_procs([p for p in self._procs if p.role == "consul"])

    def start_consul(self) -> None:
        """(Re)start consul. It runs in -dev mode, which keeps data in memory:
        a restarted agent starts EMPTY (a persistent single server would take
        7-10 s to elect itself; dev mode takes ~0.2 s)."""
        if not self.consul_host:
            raise LabError("this lab has no consul host")
        proc = self._consul_proc()
        if proc is not None and proc.popen.poll() is None:
            return
        self._spawn_consul()
        self._wait_consul()

    def _consul_forwarder(self) -> nsutil.TcpForwarder:
        if self._consul_fwd is None:
            self._consul_fwd = self.forward(self.host_ips[self.consul_host], CONSUL_PORT)
        return self._consul_fwd

    def consul_client(self, **kwargs):
        """A python-consul client usable from the root namespace (via a forwarder)."""
        import consul  # py-consul, from the venv
        if not self.consul_host:
            raise LabError("this lab has no consul host")
        host, port = self._consul_forwarder().address
        client = consul.Consul(host=host, port=port, **kwargs)
        session = getattr(getattr(client, "http", None), "session", None)
        if session is not None:
            session.trust_env = False   # an http_proxy in the env must not catch 127.0.0.1
        return client

    def forward(self, ip: str, port: int) -> nsutil.TcpForwarder:
        """Forward 127.0.0.1:<ephemeral> in our netns to ip:port as seen from the controller.

        The returned object has ``.address`` (host, port); it is closed at stop().
        """
        fwd = nsutil.TcpForwarder(self.controller.netns_path(), (ip, port))
        self._forwarders.append(fwd)
        return fwd

    # --- ansible ----------------------------------------------------------------------
    def _write_ansible_files(self) -> None:
        py = str(self.venv / "bin" / "python")
        hostvars = {n: {"ansible_host": ip, "lab_underlay_ip": ip} for n, ip in self.host_ips.items()}
        inventory = {"all": {
            "hosts": hostvars,
            "vars": {
                "ansible_user": "root",
                "ansible_connection": "ssh",
                "ansible_ssh_private_key_file": self.ssh_key,
                "ansible_python_interpreter": py,
                "ansible_ssh_pipelining": True,
                "ansible_host_key_checking": False,
                "lab_consul_addr": self.consul_addr,
                "lab_internet_ip": INTERNET_IP if self.internet else None,
                **self.inventory_vars,
            },
            "children": {g: {"hosts": {m: {} for m in members}}
                         for g, members in self.groups.items()},
        }}
        # JSON is valid YAML: typed values without needing PyYAML here.
        Path(self.inventory_path).write_text(json.dumps(inventory, indent=2) + "\n")
        ssh_args = ("-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null "
                    "-o StrictHostKeyChecking=no -o IdentitiesOnly=yes -o LogLevel=ERROR")
        cfg = [
            "[defaults]",
            f"inventory = {self.inventory_path}",
            "host_key_checking = False",
            "retry_files_enabled = False",
            f"callback_plugins = {CALLBACK_DIR}",
            "callbacks_enabled = lab_results",
            f"local_tmp = {self.workdir / 'ansible-local'}",
            f"interpreter_python = {py}",
            "forks = 10",
            "nocolor = True",
        ]
        if self.collections_path:
            cfg.append(f"collections_path = {self.collections_path}")
        cfg += ["", "[ssh_connection]", "pipelining = True",
                f"control_path_dir = {self._cp_dir}", f"ssh_args = {ssh_args}", ""]
        Path(self.ansible_cfg).write_text("\n".join(cfg))

    def ansible_env(self, results_file: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env["ANSIBLE_CONFIG"] = self.ansible_cfg
        if self.collections_path:
            env["ANSIBLE_COLLECTIONS_PATH"] = self.collections_path
        if results_file:
            env["LAB_RESULTS_FILE"] = results_file
        return env

    def ansible_playbook(self, playbook: str | os.PathLike, *, extra_vars: dict | None = None,
                         check: bool = False, diff: bool = False, limit: str | None = None,
                         tags: str | None = None, verbosity: int = 0,
                         env: dict | None = None, timeout: float = 600,
                         cwd: str | os.PathLike | None = None,
                         args: list[str] | None = None) -> PlaybookResult:
        """Run <venv>/bin/ansible-playbook inside the controller netns against the lab inventory.

        Never raises on playbook failure (check .rc / .failed / .assert_ok());
        raises LabError on timeout after killing the run.
        """
        n = next(self._run_counter)
        stem = f"{n:03d}-{Path(playbook).stem}"
        runs = self.workdir / "runs"
        results_file = runs / f"{stem}.jsonl"
        results_file.unlink(missing_ok=True)
        cmd = [str(self.venv / "bin" / "ansible-playbook"), "-i", self.inventory_path, str(playbook)]
        if extra_vars:
            ev = runs / f"{stem}.extra-vars.json"
            ev.write_text(json.dumps(extra_vars))
            cmd += ["-e", f"@{ev}"]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if limit:
            cmd += ["--limit", limit]
        if tags:
            cmd += ["--tags", tags]
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        cmd += list(args or [])
        full_env = self.ansible_env(str(results_file))
        full_env.update(env or {})
        argv = self.controller.nsenter_cmd() + cmd
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=full_env, cwd=str(cwd or self.workdir), start_new_session=True)
        timed_out = False
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, 9)
            out, err = p.communicate()
        (runs / f"{stem}.log").write_text(f"$ {shlex.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}")
        result = PlaybookResult.from_file(cmd, p.returncode, out, err, results_file)
        if timed_out:
            raise LabError(f"ansible-playbook timed out after {timeout}s\n{result.summary()}")
        return result

    # --- processes ----------------------------------------------------------------------
    def _log_path(self, role: str, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.{role}.log"

    def _spawn(self, role: str, name: str, argv: list[str], *, script: str | None = None,
               wait: bool = True, ns_kinds: tuple[str, ...] = ()) -> _Proc:
        """Start argv (followed by `sh -c script` if given) and record its PID.

        A script runs with `set -e`, then prints 'ready' and `exec`s
        `sleep infinity`, so the recorded PID is the long-lived process itself
        and 'ready' means its namespaces exist and are configured.
        """
        if script is not None:
            argv = argv + ["sh", "-c", f"set -e\n{script}\necho ready\nexec sleep infinity"]
        log = open(self._log_path(role, name), "ab")
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if script is not None else log,
                                     stderr=log, start_new_session=True)
        finally:
            log.close()
        proc = _Proc(role, name, popen, popen.pid, nsutil.proc_starttime(popen.pid), ns_kinds)
        with self._lock:
            self._procs.append(proc)
        self._save_state()
        if script is not None and wait:
            self._wait_ready(proc)
        return proc

    def _wait_ready(self, proc: _Proc, timeout: float = 15) -> None:
        out = proc.popen.stdout
        if out is None:
            return
        line = b""
        if select.select([out], [], [], timeout)[0]:
            line = out.readline()
        out.close()   # the long-lived process never writes to it again
        proc.popen.stdout = None
        if line.strip() != b"ready":
            log = self._log_path(proc.role, proc.name)
            raise LabError(f"{proc.role} {proc.name} failed to start: "
                           f"{log.read_text(errors='replace').strip()[-2000:]}")
        proc.starttime = nsutil.proc_starttime(proc.pid)

    def _stop_procs(self, procs: list[_Proc], timeout: float = 4.0, strict: bool = True) -> None:
        left = nsutil.kill_and_wait([(p.pid, p.starttime) for p in procs], timeout=timeout)
        for p in procs:
            if p.popen.stdout is not None:   # a holder that never got ready
                p.popen.stdout.close()
            try:
                p.popen.wait(timeout=1)   # reap our child
            except subprocess.TimeoutExpired:
                pass
            with self._lock:
                if p in self._procs and p.pid not in left:
                    self._procs.remove(p)
        self._save_state()
        if left and strict:
            raise LabError(f"processes survived SIGKILL: {left}")

    def namespace_inodes(self) -> dict[str, set[int]]:
        """Inodes of every namespace this lab created that is still alive."""
        inodes: dict[str, set[int]] = {k: set() for k in nsutil.NS_KINDS}
        for p in self._procs:
            if not nsutil.pid_alive(p.pid, p.starttime):
                continue
            for k in p.ns_kinds:
                ino = nsutil.ns_inode(p.pid, k)
                if ino is not None:
                    inodes[k].add(ino)
        for h in self.hosts.values():   # named netns inside hosts (`ip netns add`)
            for n in h.list_netns():
                try:
                    inodes["net"].add(os.stat(h.netns_path(n)).st_ino)
                except OSError:
                    pass
        # Never, ever match our own namespaces (that would kill the whole machine).
        for k, ino in self._own_ns.items():
            inodes[k].discard(ino)
        return inodes

    def processes(self) -> list[int]:
        """PIDs of every live process inside the lab's namespaces (plus recorded ones)."""
        pids = set(nsutil.pids_in_namespaces(self.namespace_inodes()))
        pids |= {p.pid for p in self._procs if nsutil.pid_alive(p.pid, p.starttime)}
        return sorted(pids)

    # --- stop ---------------------------------------------------------------------------
    def add_stop_hook(self, fn) -> None:
        """Call ``fn()`` first thing in stop(), while the hosts still exist (last added, first
        called): daemons whose children leave the lab's namespaces (containers) stop cleanly."""
        self._stop_hooks.append(fn)

    def stop(self) -> None:
        """Remove everything this lab created (idempotent, safe after a partial start)."""
        while self._stop_hooks:
            fn = self._stop_hooks.pop()
            try:
                fn()
            except Exception as e:   # noqa: BLE001 - the rest of the teardown must still run
                print(f"lab stop hook {fn!r} failed: {e}")
        for fwd in self._forwarders:
            fwd.close()
        self._forwarders.clear()
        self._consul_fwd = None
        # Services and strangers (processes we did not start but that live in
        # our namespaces) first, while the holders keep the namespaces
        # enumerable; then the holders, which makes the namespaces go away.
        for _attempt in range(5):
            inodes = self.namespace_inodes()
            holders = {p.pid for p in self._procs if p.role == "holder"}
            mine = {p.pid for p in self._procs}
            strangers = [pid for pid in nsutil.pids_in_namespaces(inodes) if pid not in mine]
            services = [p for p in self._procs if p.role != "holder"]
            if not strangers and not services:
                break
            nsutil.kill_and_wait([(pid, None) for pid in strangers], timeout=2)
            self._stop_procs(services, timeout=2, strict=False)
            if not set(nsutil.pids_in_namespaces(inodes)) - holders:
                break
        self._stop_procs(list(self._procs), timeout=2, strict=False)
        if getattr(self, "_tmp_cp", None):
            shutil.rmtree(self._tmp_cp, ignore_errors=True)
        if not self._procs:
            (STATE_DIR / f"{self.tag}.json").unlink(missing_ok=True)
        self.hosts.clear()
        self.controller = self.internet_host = None
        self._started = False
        _live_labs.discard(self)

    def _save_state(self) -> None:
        """Record PIDs so cleanup_stale() can remove this lab if our process dies."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {"tag": self.tag, "workdir": str(self.workdir), "detached": self.detached,
                 "owner": [os.getpid(), nsutil.proc_starttime(os.getpid())],
                 "procs": [[p.role, p.name, p.pid, p.starttime] for p in self._procs],
                 "ips": self.all_ips, "consul_addr": self.consul_addr,
                 "inventory": self.inventory_path, "ansible_cfg": self.ansible_cfg}
        tmp = STATE_DIR / f".{self.tag}.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(STATE_DIR / f"{self.tag}.json")

    def detach(self) -> dict:
        """Keep the lab running after this process exits (for scripts/lab.sh).

        Remove it later with destroy_state(find_state(workdir)). Forwarders die
        with this process. Returns the state record.
        """
        self.detached = True
        _live_labs.discard(self)
        self._save_state()
        return json.loads((STATE_DIR / f"{self.tag}.json").read_text())


def list_states(state_dir: Path = STATE_DIR) -> list[dict]:
    states = []
    for f in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            states.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return states


def find_state(workdir: str | os.PathLike, state_dir: Path = STATE_DIR) -> dict | None:
    wd = str(Path(workdir).resolve())
    return next((s for s in list_states(state_dir) if s["workdir"] == wd), None)


def destroy_state(state: dict, state_dir: Path = STATE_DIR) -> None:
    """Kill a lab from its state record, e.g. from another process.

    Only processes whose PID *and* start time match the record are touched,
    plus everything living in a namespace held by one of its live holders.
    """
    own = {k: nsutil.ns_inode("self", k) for k in nsutil.NS_KINDS}
    inodes: dict[str, set[int]] = {k: set() for k in nsutil.NS_KINDS}
    procs = []
    for role, _name, pid, st in state["procs"]:
        if not nsutil.pid_alive(pid, st):
            continue
        procs.append((pid, st))
        if role in ("holder", "container"):
            for k in nsutil.NS_KINDS:
                ino = nsutil.ns_inode(pid, k)
                if ino is not None and ino != own[k]:
                    inodes[k].add(ino)
    strangers = nsutil.pids_in_namespaces(inodes)
    nsutil.kill_and_wait([(p, None) for p in strangers] + procs, timeout=2)
    (state_dir / f"{state['tag']}.json").unlink(missing_ok=True)


def cleanup_stale(state_dir: Path = STATE_DIR) -> list[str]:
    """Destroy labs whose owning process is gone (e.g. a test run killed hard).

    Detached labs (scripts/lab.sh) are left alone.
    """
    cleaned = []
    for state in list_states(state_dir):
        owner_pid, owner_st = state["owner"]
        if state.get("detached") or nsutil.pid_alive(owner_pid, owner_st):
            continue
        destroy_state(state, state_dir)
        cleaned.append(state["tag"])
    return cleaned


@atexit.register
def _stop_all_labs() -> None:
    for lab in list(_live_labs):
        try:
            lab.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
