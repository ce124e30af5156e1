#!/usr/bin/env bash
# Stop lab VMs by their recorded PIDs and remove their taps and overlays.
# With no argument (or when no VM is left), also remove the bridge and the
# network namespace. The cached base image in .cache/vm is kept.
#
#   lab/vm/down.sh              # everything
#   lab/vm/down.sh docker1      # one VM
#
# VMs recorded for another LAB_VM_OWNER than ours are left running
# (LAB_VM_FORCE=1 stops them anyway).
#
# Safe to run at any time, also after a half-finished up.sh.
set -euo pipefail
# shellcheck source=lab/vm/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

[[ $EUID -eq 0 ]] || die "must run as root"

if (($#)); then
    targets=("$@")
else
    targets=()
    for f in "$VM_STATE"/*.pid "$VM_STATE"/*.ip "$VM_STATE"/*.qcow2; do
        [[ -e "$f" ]] && targets+=("$(basename "${f%.*}")")
    done
    mapfile -t targets < <(printf '%s\n' "${targets[@]+"${targets[@]}"}" | sed '/^$/d' | sort -u)
fi

mkdir -p "$VM_STATE"
exec 8>"$VM_STATE/.lock"
flock 8

for n in "${targets[@]+"${targets[@]}"}"; do
    pidf="$VM_STATE/$n.pid"
    pid="$(cat "$pidf" 2>/dev/null || true)"
    if pid_is_vm "$pid" "$n" && [[ "$(vm_owner "$n")" != "$LAB_VM_OWNER" && "${LAB_VM_FORCE:-0}" != 1 ]]; then
        log "not stopping $n: it runs for owner '$(vm_owner "$n")', not '$LAB_VM_OWNER' (LAB_VM_FORCE=1 overrides)"
        continue
    fi
    if pid_is_vm "$pid" "$n"; then
        log "stopping $n (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do pid_is_vm "$pid" "$n" || break; sleep 0.2; done
        if pid_is_vm "$pid" "$n"; then
            log "$n did not stop, sending SIGKILL to $pid"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    elif [[ -n "$pid" ]]; then
        log "$n: recorded pid $pid is not running (stale pid file)"
    fi
    if [[ -e "/run/netns/$LAB_NS" ]]; then
        ip -n "$LAB_NS" link del "$(tap_name "$n")" 2>/dev/null || true
    fi
    rm -f "$pidf" "$VM_STATE/$n.qcow2" "$VM_STATE/$n.ip" "$VM_STATE/$n.owner"
done

if [[ -z "$(running_vms)" ]]; then
    if [[ -e "/run/netns/$LAB_NS" ]]; then
        log "removing network namespace $LAB_NS"
        ip netns del "$LAB_NS"
    fi
    rm -f "$LAB_INVENTORY" "$LAB_WORK/vm-ssh_config"
else
    log "still running: $(running_vms | paste -sd' ' -)"
fi
log "done"
