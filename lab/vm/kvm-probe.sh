#!/usr/bin/env bash
# Can this machine run the VM lab at hardware speed? Boot something small with KVM and see.
#
#   lab/vm/kvm-probe.sh        # exit 0 and print "kvm: ..." when KVM works, exit 1 and the reason otherwise
#
# /dev/kvm being there proves nothing (nested setups emulate it, containers lack permission):
#  1. kvm_probe.py runs a tiny real-mode guest (400 k instructions, then hlt) and times it;
#  2. when qemu is installed, qemu -enable-kvm boots a kernel that panics at once (no root
#     device, panic=-1, -no-reboot), which a working KVM finishes within seconds.
# Environment: LAB_KVM_PROBE_TIMEOUT (15 s).
set -uo pipefail
timeout_s="${LAB_KVM_PROBE_TIMEOUT:-15}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LAB_VM_CACHE:-$here/../../.cache/vm}"

[[ -e /dev/kvm ]] || { echo "no /dev/kvm"; exit 1; }
why="$(timeout 10 python3 "$here/kvm_probe.py" 2>&1)"
rc=$?
((rc == 124)) && why="a 400 k instruction KVM guest did not finish in 10 s"
((rc == 0)) || { echo "$why"; exit 1; }

qemu="$(command -v qemu-system-x86_64 || true)"
kernel=""
for k in "$cache"/vmlinuz* /boot/vmlinuz-*; do
    [[ -r "$k" ]] && { kernel="$k"; break; }
done
if [[ -z "$qemu" || -z "$kernel" ]]; then
    echo "$why"; exit 0
fi
log="$(mktemp)"; trap 'rm -f "$log"' EXIT
start=$SECONDS
timeout "$timeout_s" "$qemu" -enable-kvm -cpu host -machine pc -m 128 -nodefaults -display none \
    -serial none -no-reboot -kernel "$kernel" -append "panic=-1 quiet" >"$log" 2>&1
rc=$?
if ((rc == 0)); then
    echo "kvm: qemu booted $(basename "$kernel") to its panic in $((SECONDS - start)) s"; exit 0
fi
((rc == 124)) && { echo "a qemu KVM boot did not finish in ${timeout_s} s"; exit 1; }
echo "qemu -enable-kvm failed: $(grep -m1 -v '^$' "$log" | cut -c1-120)"
exit 1
