# Shared settings and helpers for lab/vm/*.sh (sourced, not executed).
# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts

VM_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$VM_HERE/../.." && pwd)"
VM_CACHE="${LAB_VM_CACHE:-$REPO/.cache/vm}"
LAB_WORK="${LAB_WORK:-$REPO/lab/work}"
VM_STATE="$LAB_WORK/vm"                      # pid files, overlays, console logs
LAB_NS="${LAB_NS:-ovl-vmlab}"                  # network namespace of the lab
LAB_BRIDGE="${LAB_VM_BRIDGE:-vmbr0}"           # bridge inside $LAB_NS
LAB_GW="${LAB_VM_GW:-10.0.0.1}"                # bridge address = VMs' gateway
LAB_PREFIX="${LAB_VM_PREFIX:-24}"
LAB_INVENTORY="${LAB_VM_INVENTORY:-$LAB_WORK/vm-inventory.ini}"
SSH_KEY="$VM_CACHE/id_ed25519"
# Who uses the VMs (e.g. a Molecule scenario). up.sh will not share running
# VMs, and down.sh will not stop them, across different owners.
LAB_VM_OWNER="${LAB_VM_OWNER:-}"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ssh options for reaching a VM from the root namespace through the lab one.
ssh_opts() {
    printf '%s\n' -i "$SSH_KEY" -o BatchMode=yes -o IdentitiesOnly=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ConnectTimeout=3 \
        -o "ProxyCommand=ip netns exec $LAB_NS nc %h %p"
}

# tap device name for a VM (IFNAMSIZ is 16 including the NUL).
tap_name() { local n="vt-$1"; printf '%s' "${n:0:15}"; }

# True when PID is alive and is the qemu process of VM NAME.
pid_is_vm() {
    local pid="$1" name="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    # Read first, then match: `tr | grep -q` under pipefail returned 141 (tr SIGPIPEd once grep
    # had its match) for a long qemu command line, i.e. "not this VM" for a VM that is.
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")" || return 1
    grep -q -- "-name vmlab-$name\b" <<<"$cmdline"
}

# Recorded owner of VM NAME (empty: none).
vm_owner() { cat "$VM_STATE/$1.owner" 2>/dev/null || true; }

# Names of VMs with a pid file whose process is alive.
running_vms() {
    local f name
    for f in "$VM_STATE"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        pid_is_vm "$(cat "$f" 2>/dev/null)" "$name" && echo "$name"
    done
    return 0
}
