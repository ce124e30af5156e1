#!/usr/bin/env bash
# Boot lab VMs (qemu, direct kernel boot) on a bridge inside the lab's own
# network namespace, wait until each answers SSH, write an Ansible inventory.
#
#   lab/vm/up.sh                       # the hosts in lab/vm/hosts
#   lab/vm/up.sh -f my-hosts           # NAME IP [MEM_MIB] per line
#   lab/vm/up.sh consul=10.0.0.5 docker0=10.0.0.10:768
#
# Environment: LAB_NS (ovl-vmlab), LAB_VM_MEM (640), LAB_VM_SMP (1),
#   LAB_VM_ACCEL (tcg | kvm), LAB_VM_TB_MIB (256, TCG translation cache),
#   LAB_VM_MAX (3), LAB_VM_BOOT_TIMEOUT (300 s),
#   LAB_WORK (<repo>/lab/work), LAB_VM_CACHE (<repo>/.cache/vm),
#   LAB_VM_OWNER (a label such as the Molecule scenario: a VM running for
#   another owner is neither reused by up.sh nor stopped by down.sh).
#
# Idempotent: VMs already running (by their recorded PID) are left alone;
# stale PID files, taps and overlays of dead VMs are replaced. Each VM boots
# from a fresh qcow2 overlay on top of the cached base image.
# Reach a VM:  ssh -F lab/work/vm-ssh_config docker0
set -euo pipefail
# shellcheck source=lab/vm/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

MEM_DEFAULT="${LAB_VM_MEM:-640}"
SMP="${LAB_VM_SMP:-1}"
ACCEL="${LAB_VM_ACCEL:-tcg}"
MAX_VMS="${LAB_VM_MAX:-3}"
BOOT_TIMEOUT="${LAB_VM_BOOT_TIMEOUT:-300}"
HOSTS_FILE="$VM_HERE/hosts"

[[ $EUID -eq 0 ]] || die "must run as root (network namespace, taps)"

# --- arguments -> NAMES / IPS / MEMS -----------------------------------------------
names=(); declare -A IP=() MEM=()
add_host() {  # name ip [mem]
    [[ "$1" =~ ^[a-z][a-z0-9-]{0,11}$ ]] || die "bad VM name '$1' (a-z0-9-, max 12 chars)"
    if ! [[ "$2" =~ ^10\.0\.0\.([0-9]+)$ ]] || ((BASH_REMATCH[1] < 2 || BASH_REMATCH[1] > 254)); then
        die "bad address '$2' for $1: use 10.0.0.2-254"
    fi
    [[ -n "${IP[$1]:-}" ]] || names+=("$1")
    IP[$1]="$2"; MEM[$1]="${3:-$MEM_DEFAULT}"
}
args=()
while (($#)); do
    case "$1" in
        -f) HOSTS_FILE="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
        *) args+=("$1"); shift ;;
    esac
done
if ((${#args[@]})); then
    for a in "${args[@]}"; do
        [[ "$a" =~ ^([^=]+)=([0-9.]+)(:([0-9]+))?$ ]] || die "bad argument '$a' (NAME=IP[:MEM])"
        add_host "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]}"
    done
else
    [[ -r "$HOSTS_FILE" ]] || die "no hosts file $HOSTS_FILE"
    while read -r n a m _; do
        [[ -z "$n" || "$n" == \#* ]] && continue
        add_host "$n" "$a" "${m:-}"
    done <"$HOSTS_FILE"
fi
((${#names[@]})) || die "no VMs requested"

mkdir -p "$VM_STATE"
exec 8>"$VM_STATE/.lock"
flock 8

# --- image -----------------------------------------------------------------------------
"$VM_HERE/build-image.sh"
for f in base.qcow2 vmlinuz initrd.img id_ed25519; do
    [[ -s "$VM_CACHE/$f" ]] || die "missing $VM_CACHE/$f"
done
command -v nc >/dev/null || die "nc (netcat-openbsd) is needed on the controller"

# --- never share a running VM between owners --------------------------------------------
for n in "${names[@]}"; do
    if pid_is_vm "$(cat "$VM_STATE/$n.pid" 2>/dev/null || true)" "$n" \
            && [[ "$(vm_owner "$n")" != "$LAB_VM_OWNER" ]]; then
        die "$n is running for owner '$(vm_owner "$n")', not '$LAB_VM_OWNER' (LAB_VM_OWNER): stop it first"
    fi
done

# --- how many VMs may run --------------------------------------------------------------
mapfile -t already < <(running_vms)
new=0
for n in "${names[@]}"; do
    grep -qx -- "$n" <<<"$(printf '%s\n' "${already[@]}")" || new=$((new + 1))   # no pipe into grep -q (SIGPIPE)
done
if ((${#already[@]} + new > MAX_VMS)); then
    die "would run $((${#already[@]} + new)) VMs (running: ${already[*]:-none}); LAB_VM_MAX=$MAX_VMS"
fi

# --- namespace + bridge ----------------------------------------------------------------------
if ! [[ -e "/run/netns/$LAB_NS" ]]; then
    log "creating network namespace $LAB_NS"
    ip netns add "$LAB_NS"
fi
ip -n "$LAB_NS" link set lo up
if ! ip -n "$LAB_NS" link show "$LAB_BRIDGE" >/dev/null 2>&1; then
    ip -n "$LAB_NS" link add "$LAB_BRIDGE" type bridge
fi
ip -n "$LAB_NS" addr replace "$LAB_GW/$LAB_PREFIX" dev "$LAB_BRIDGE"
ip -n "$LAB_NS" link set "$LAB_BRIDGE" up
# The namespace is a dead end: nothing is forwarded anywhere.
ip netns exec "$LAB_NS" sysctl -qw net.ipv4.ip_forward=0

# --- boot --------------------------------------------------------------------------------------
hosts_param="$(for n in "${names[@]}" "${already[@]}"; do
    ip_="${IP[$n]:-$(cat "$VM_STATE/$n.ip" 2>/dev/null || true)}"
    [[ -n "$ip_" ]] && echo "$n:$ip_"
done | sort -u | paste -sd, -)"

accel_args=(-accel "tcg,thread=multi,tb-size=${LAB_VM_TB_MIB:-256}")
[[ "$ACCEL" == kvm ]] && accel_args=(-accel kvm -cpu host)

t_boot=$SECONDS
started=()
for n in "${names[@]}"; do
    pidf="$VM_STATE/$n.pid"
    if pid_is_vm "$(cat "$pidf" 2>/dev/null || true)" "$n"; then
        if [[ "$(cat "$VM_STATE/$n.ip" 2>/dev/null)" != "${IP[$n]}" ]]; then
            die "$n is running with address $(cat "$VM_STATE/$n.ip"), not ${IP[$n]}: run down.sh $n first"
        fi
        log "$n already running (pid $(cat "$pidf"))"
        continue
    fi
    rm -f "$pidf"
    tap="$(tap_name "$n")"
    ip -n "$LAB_NS" link del "$tap" 2>/dev/null || true
    ip -n "$LAB_NS" tuntap add dev "$tap" mode tap
    ip -n "$LAB_NS" link set "$tap" master "$LAB_BRIDGE" up

    overlay="$VM_STATE/$n.qcow2"
    rm -f "$overlay"
    qemu-img create -q -f qcow2 -F qcow2 -b "$VM_CACHE/base.qcow2" "$overlay"

    last_octet="${IP[$n]##*.}"
    mac="$(printf '52:54:00:0a:00:%02x' "$last_octet")"
    machine_id="$(printf '%s' "vmlab-$n" | md5sum | cut -c1-32)"
    append="root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=1 quiet"
    append+=" systemd.hostname=$n systemd.machine_id=$machine_id"
    append+=" lab.ip=${IP[$n]}/$LAB_PREFIX lab.gw=$LAB_GW lab.hosts=$hosts_param"
    echo "${IP[$n]}" >"$VM_STATE/$n.ip"
    printf '%s' "$LAB_VM_OWNER" >"$VM_STATE/$n.owner"
    : >"$VM_STATE/$n.console.log"

    log "booting $n (${IP[$n]}, ${MEM[$n]} MiB, $ACCEL)"
    ip netns exec "$LAB_NS" qemu-system-x86_64 \
        -name "vmlab-$n,process=vmlab-$n" \
        -machine pc "${accel_args[@]}" -smp "$SMP" -m "${MEM[$n]}" \
        -nodefaults -no-user-config -display none -vga none -no-reboot \
        -kernel "$VM_CACHE/vmlinuz" -initrd "$VM_CACHE/initrd.img" -append "$append" \
        -drive "file=$overlay,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
        -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no" \
        -device "virtio-net-pci,netdev=net0,mac=$mac" \
        -device virtio-rng-pci \
        -serial "file:$VM_STATE/$n.console.log" \
        -pidfile "$pidf" -daemonize 8>&-   # qemu must not inherit the lock
    started+=("$n")
done

# --- wait for SSH -----------------------------------------------------------------------------------
mapfile -t SSH_OPTS < <(ssh_opts)
pending=("${names[@]}")
deadline=$((SECONDS + BOOT_TIMEOUT))
while ((${#pending[@]})); do
    still=()
    for n in "${pending[@]}"; do
        if ! pid_is_vm "$(cat "$VM_STATE/$n.pid" 2>/dev/null || true)" "$n"; then
            tail -n 40 "$VM_STATE/$n.console.log" >&2 || true
            die "qemu for $n exited during boot (console: $VM_STATE/$n.console.log)"
        fi
        if timeout 10 ssh "${SSH_OPTS[@]}" "root@${IP[$n]}" true 2>/dev/null; then
            log "$n is up (ssh ready after $((SECONDS - t_boot)) s)"
        else
            still+=("$n")
        fi
    done
    pending=("${still[@]+"${still[@]}"}")
    if ((${#pending[@]})); then
        ((SECONDS < deadline)) || die "timeout waiting for ssh on: ${pending[*]} (see $VM_STATE/*.console.log)"
        sleep 2
    fi
done
((${#started[@]})) && log "booted ${started[*]}: all ssh-ready in $((SECONDS - t_boot)) s"

# --- inventory + ssh config for every running VM ------------------------------------------------------
mapfile -t all < <(running_vms | sort)
tmp="$LAB_INVENTORY.tmp.$$"
{
    echo "# Written by lab/vm/up.sh; reach the hosts only through namespace $LAB_NS."
    echo "[vmlab]"
    for n in "${all[@]}"; do
        echo "$n ansible_host=$(cat "$VM_STATE/$n.ip")"
    done
    echo
    echo "[vmlab:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$SSH_KEY"
    echo "ansible_ssh_common_args='-o ProxyCommand=\"ip netns exec $LAB_NS nc %h %p\" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes'"
    echo "ansible_python_interpreter=/opt/overlay-venv/bin/python"
} >"$tmp"
mv -f "$tmp" "$LAB_INVENTORY"
{
    for n in "${all[@]}"; do
        echo "Host $n"
        echo "  HostName $(cat "$VM_STATE/$n.ip")"
        echo "  User root"
        echo "  IdentityFile $SSH_KEY"
        echo "  IdentitiesOnly yes"
        echo "  StrictHostKeyChecking no"
        echo "  UserKnownHostsFile /dev/null"
        echo "  LogLevel ERROR"
        echo "  ProxyCommand ip netns exec $LAB_NS nc %h %p"
    done
} >"$LAB_WORK/vm-ssh_config"
log "inventory: $LAB_INVENTORY (${all[*]})"
