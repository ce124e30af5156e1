#!/usr/bin/env bash
# Build (or reuse) the Debian 12 base image for the VM lab.
#
#   lab/vm/build-image.sh [--force]
#
# Output, under ${LAB_VM_CACHE:-<repo>/.cache/vm}:
#   base.qcow2        ext4 filesystem image (no partition table, root=/dev/vda)
#   vmlinuz, initrd.img  kernel + initrd taken from the image's /boot
#   id_ed25519[.pub]  root SSH key baked into the image
#   base.hash         hash of everything the image depends on
#
# The image is rebuilt only when base.hash changes: it covers this script,
# the package list, requirements-target.txt and the SSH public key.
# VMs have no network access to mirrors, so everything is baked in, including
# /opt/overlay-venv with the Python target dependencies (wheels downloaded on
# the host with pip, installed offline in the chroot).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VM_CACHE="${LAB_VM_CACHE:-$REPO/.cache/vm}"
SUITE="bookworm"
MIRROR="${LAB_VM_MIRROR:-http://deb.debian.org/debian}"
IMAGE_SIZE="${LAB_VM_IMAGE_SIZE:-3G}"
TARGET_REQS="$REPO/requirements-target.txt"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# Packages baked into the image. Keep sorted; changing this list rebuilds.
#  - pipexec, adduser, procps, init-system-helpers: dependencies of Debian 11's
#    consul .deb, so `apt install ./consul_*.deb` works offline in the VM.
#  - python3-apt: ansible.builtin.apt (used for .deb installs) needs it.
#  - dbus: hostnamectl/timedatectl and friends.
#  - docker.io (20.10, with containerd and runc), busybox-static: the seed's Docker commands with the
#    host agent as plugin (Molecule scenario seed). apparmor (a Recommends of docker.io): Debian's
#    kernel enables AppArmor, and then dockerd refuses to start containers without apparmor_parser. Docker's units are installed disabled (the other
#    users of the image do not pay for a dockerd); the scenario enables and starts them. busybox
#    also becomes the image /usr/local/share/vmlab/busybox.tar (no registry in the lab): imported,
#    it is tagged `debian` so the seed's `docker run ... debian ping|sleep` run as written.
PACKAGES=(
    adduser apparmor busybox-static ca-certificates curl dbus docker.io gnupg init-system-helpers iperf3
    iproute2 iptables iputils-ping kmod less linux-image-amd64 netcat-openbsd nftables
    openssh-server pipexec procps python3 python3-apt python3-pip python3-venv
    systemd systemd-sysv tcpdump udev unzip
)
HOST_PACKAGES=(qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client
               netcat-openbsd iproute2 python3-pip)

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot)"
mkdir -p "$VM_CACHE"

# Serialise concurrent builds (up.sh calls us too).
exec 9>"$VM_CACHE/.build.lock"
flock 9

# --- 1. host tools ------------------------------------------------------------
missing=()
for p in "${HOST_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. SSH key -----------------------------------------------------------------
if [[ ! -s "$VM_CACHE/id_ed25519" ]]; then
    log "generating $VM_CACHE/id_ed25519"
    rm -f "$VM_CACHE/id_ed25519" "$VM_CACHE/id_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C overlay-vmlab -f "$VM_CACHE/id_ed25519"
fi

# --- 3. cache check -------------------------------------------------------------
want_hash="$( {
    cat "${BASH_SOURCE[0]}"
    printf '%s\n' "$SUITE" "$MIRROR" "$IMAGE_SIZE" "${PACKAGES[@]}"
    cat "$TARGET_REQS"
    cat "$VM_CACHE/id_ed25519.pub"
} | sha256sum | cut -d' ' -f1)"
have_hash="$(cat "$VM_CACHE/base.hash" 2>/dev/null || true)"
if ((!FORCE)) && [[ "$want_hash" == "$have_hash" && -s "$VM_CACHE/base.qcow2" \
      && -s "$VM_CACHE/vmlinuz" && -s "$VM_CACHE/initrd.img" ]]; then
    log "cached image is up to date ($VM_CACHE/base.qcow2)"
    exit 0
fi
log "building image (hash ${want_hash:0:12}, was ${have_hash:0:12})"
t0=$SECONDS

# --- 4. work area and cleanup -------------------------------------------------------
WORK="$(realpath "$(mktemp -d "$VM_CACHE/build.XXXXXX")")"  # as /proc/mounts names it (cleanup)
ROOT="$WORK/rootfs"
cleanup() {
    # Unmount anything still mounted below the chroot before deleting it.
    local m
    awk -v r="$ROOT" '$2 ~ "^"r {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    if awk -v r="$ROOT" '$2 ~ "^"r {f=1} END {exit !f}' /proc/mounts; then
        log "WARNING: mounts remain under $ROOT; not deleting $WORK"
    else
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT

# --- 5. wheels for /opt/overlay-venv (the VM has no network) ---------------------------
log "downloading wheels for $(tr '\n' ' ' <"$TARGET_REQS" | sed 's/#[^ ]*//g')"
mkdir -p "$WORK/wheels"
PIP="python3 -m pip"
[[ -x "$REPO/.venv/bin/python" ]] && PIP="$REPO/.venv/bin/python -m pip"
# bookworm's python3 is 3.11 on x86_64; ask for wheels for exactly that.
$PIP download -q --disable-pip-version-check -d "$WORK/wheels" \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    -r "$TARGET_REQS"

# --- 6. debootstrap + packages --------------------------------------------------------
log "debootstrap $SUITE (minbase)"
debootstrap --variant=minbase --components=main "$SUITE" "$ROOT" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

in_root() { LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
echo "deb $MIRROR $SUITE main" >"$ROOT/etc/apt/sources.list"

# Small initrd: only what a virtio disk with ext4 needs (the host's hardware is
# irrelevant, so MODULES=dep would be wrong in a chroot).
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
echo "MODULES=list" >"$ROOT/etc/initramfs-tools/conf.d/vmlab.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >>"$ROOT/etc/initramfs-tools/modules"

log "apt-get install (${#PACKAGES[@]} packages)"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" \
    >"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; die "apt-get install failed"; }
in_root apt-get clean

# --- 7. Python target venv ----------------------------------------------------------------
log "creating /opt/overlay-venv"
cp -r "$WORK/wheels" "$ROOT/tmp/wheels"
cp "$TARGET_REQS" "$ROOT/tmp/requirements-target.txt"
in_root python3 -m venv /opt/overlay-venv
in_root /opt/overlay-venv/bin/pip install -q --disable-pip-version-check --no-index \
    --find-links /tmp/wheels -r /tmp/requirements-target.txt
# The modules need pyroute2 only (they speak Consul's HTTP API themselves).
in_root /opt/overlay-venv/bin/python -c 'import pyroute2; print("pyroute2", pyroute2.__version__)' >&2
rm -rf "$ROOT/tmp/wheels" "$ROOT/tmp/requirements-target.txt"

# --- 8. system configuration --------------------------------------------------------------
log "configuring the image"
echo vmlab >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
echo "/dev/vda / ext4 rw,noatime,errors=remount-ro 0 1" >"$ROOT/etc/fstab"
: >"$ROOT/etc/resolv.conf"           # no DNS in the lab
: >"$ROOT/etc/machine-id"            # given per VM by systemd.machine_id= (up.sh)
rm -f "$ROOT/var/lib/dbus/machine-id"

# root: key login only
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$VM_CACHE/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
in_root passwd -l root >/dev/null
cat >"$ROOT/etc/ssh/sshd_config.d/vmlab.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
# Host keys are generated once at build time and shared by all lab VMs (they
# are throw-away and reached with StrictHostKeyChecking=no); this saves the
# per-boot key generation that is slow under TCG.

# Per-VM settings come from the kernel command line written by up.sh:
#   lab.ip=10.0.0.10/24 lab.gw=10.0.0.1 lab.hosts=consul:10.0.0.5,docker0:10.0.0.10
cat >"$ROOT/usr/local/sbin/vmlab-init" <<'EOF'
#!/bin/sh
# Configure eth0 and /etc/hosts from lab.* kernel parameters (see lab/vm/up.sh).
ip=; gw=; hosts=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        lab.ip=*)    ip="${arg#lab.ip=}" ;;
        lab.gw=*)    gw="${arg#lab.gw=}" ;;
        lab.hosts=*) hosts="${arg#lab.hosts=}" ;;
    esac
done
mkdir -p /run/systemd/network
if [ -n "$ip" ]; then
    {
        printf '[Match]\nName=eth0\n\n[Network]\nAddress=%s\n' "$ip"
        [ -n "$gw" ] && printf 'Gateway=%s\n' "$gw"
        printf 'LinkLocalAddressing=no\nIPv6AcceptRA=no\n'
    } >/run/systemd/network/10-vmlab.network
fi
name="$(cat /proc/sys/kernel/hostname)"
{
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n'
    found=
    for h in $(echo "$hosts" | tr ',' ' '); do
        printf '%s\t%s\n' "${h#*:}" "${h%%:*}"
        [ "${h%%:*}" = "$name" ] && found=1
    done
    if [ -z "$found" ]; then printf '127.0.1.1\t%s\n' "$name"; fi
} >/etc/hosts
exit 0
EOF
chmod 0755 "$ROOT/usr/local/sbin/vmlab-init"
cat >"$ROOT/etc/systemd/system/vmlab-init.service" <<'EOF'
[Unit]
Description=VM lab per-host settings from the kernel command line
DefaultDependencies=no
After=systemd-remount-fs.service
Before=systemd-networkd.service network-pre.target ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vmlab-init

[Install]
WantedBy=sysinit.target
EOF
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' >"$ROOT/etc/systemd/journald.conf.d/vmlab.conf"

in_root systemctl enable -q vmlab-init.service systemd-networkd.service ssh.service
# Docker is there but not started at boot: `systemctl enable --now docker` where it is wanted (the
# Molecule scenario seed does, in its prepare step). overlay-vxlan-agent is ordered before it.
in_root systemctl disable -q docker.service docker.socket containerd.service

# The container image of the lab: busybox and one link per applet, as a rootfs tarball for
# `docker import` (the same tree as tests/integration/lab/containers.py builds for the namespace lab).
bbroot="$WORK/busybox-root"
mkdir -p "$bbroot"/{bin,etc,tmp,proc,sys,dev,root} "$ROOT/usr/local/share/vmlab"
cp "$ROOT/bin/busybox" "$bbroot/bin/busybox"
for a in $("$ROOT/bin/busybox" --list); do
    [[ "$a" == busybox ]] || ln -s busybox "$bbroot/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$bbroot/etc/passwd"
echo 'root:x:0:' >"$bbroot/etc/group"
tar -C "$bbroot" --numeric-owner --owner=0 --group=0 -cf "$ROOT/usr/local/share/vmlab/busybox.tar" .
# Nothing periodic or slow at boot in a throw-away lab VM.
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
         e2scrub_reap.service fstrim.timer dpkg-db-backup.timer logrotate.timer \
         systemd-timesyncd.service getty@tty1.service; do
    in_root systemctl mask -q "$u" 2>/dev/null || true
done

# --- 9. kernel, initrd and the filesystem image -------------------------------------------
kver="$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)"
log "kernel $kver"
cp "$ROOT/boot/vmlinuz-$kver" "$WORK/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$WORK/initrd.img"

rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/tmp/* "$ROOT"/var/log/*.log
umount "$ROOT/sys" "$ROOT/proc"

log "mkfs.ext4 -d ($IMAGE_SIZE)"
truncate -s "$IMAGE_SIZE" "$WORK/base.raw"
mkfs.ext4 -q -F -L vmroot -d "$ROOT" "$WORK/base.raw"
qemu-img convert -O qcow2 "$WORK/base.raw" "$WORK/base.qcow2"

# Replace atomically; the hash goes last so a half-built cache never looks valid.
rm -f "$VM_CACHE/base.hash"
mv -f "$WORK/base.qcow2" "$VM_CACHE/base.qcow2"
mv -f "$WORK/vmlinuz" "$VM_CACHE/vmlinuz"
mv -f "$WORK/initrd.img" "$VM_CACHE/initrd.img"
echo "$kver" >"$VM_CACHE/kernel.version"
echo "$want_hash" >"$VM_CACHE/base.hash"
log "done in $((SECONDS - t0)) s: $VM_CACHE/base.qcow2 ($(du -h "$VM_CACHE/base.qcow2" | cut -f1))"
