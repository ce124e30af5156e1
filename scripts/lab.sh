#!/usr/bin/env bash
# The main job: the seed's three-host walkthrough, from nothing, printed for a person.
#   scripts/lab.sh                 # VMs when this machine runs them at hardware speed (KVM), else namespaces
#   scripts/lab.sh --vm            # force three qemu VMs (slow without KVM: half an hour on 2 cores)
#   scripts/lab.sh --namespaces    # force simulated hosts (network namespaces + sshd): about a minute
#   scripts/lab.sh --json          # the report as JSON (for scripts) instead of the walkthrough
#   scripts/lab.sh --keep          # leave the lab running afterwards;  scripts/lab.sh --down  stops it
#   scripts/lab.sh --down          # stop whatever the lab left running (VMs, a kept namespace lab)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
LAB_WORK="${LAB_WORK:-$REPO/lab/work}"
export LAB_WORK

mode=auto; keep=""; down=""; json=""
for arg in "$@"; do
  case "$arg" in
    --namespaces) mode=namespaces ;;
    --vm) mode=vm ;;
    --keep) keep=--keep ;;
    --json) json=--json ;;
    --down) down=1 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [ -n "$down" ]; then
  # VMs: only when the VM lab left state behind (down.sh also removes its namespace).
  if compgen -G "$LAB_WORK/vm/*.pid" >/dev/null || [ -e "/run/netns/${LAB_NS:-ovl-vmlab}" ]; then
    lab/vm/down.sh
  fi
  # Namespace labs kept with --keep: detached, so cleanup_stale() rightly leaves them alone;
  # stop every lab whose workdir is under $LAB_WORK, by its recorded PIDs.
  PYTHONPATH=tests/integration .venv/bin/python - "$LAB_WORK" <<'PY'
import sys
from pathlib import Path
from lab import destroy_state, list_states
work = Path(sys.argv[1]).resolve()
stopped = [s for s in list_states() if work in Path(s["workdir"]).parents]
for s in stopped:
    destroy_state(s)
    print("stopped namespace lab %s (%s)" % (s["tag"], s["workdir"]))
if not stopped:
    print("no namespace lab running under %s" % work)
PY
  exit 0
fi

# With --json, stdout carries only the JSON report; everything else goes to stderr.
if [ -n "$json" ]; then exec 3>&1 1>&2; else exec 3>&1; fi

if [ "$mode" = auto ]; then
  if why="$(lab/vm/kvm-probe.sh)"; then
    mode=vm
    echo "lab: VMs, KVM works here ($why); scripts/lab.sh --namespaces runs simulated hosts instead"
  else
    mode=namespaces
    echo "lab: namespace lab (simulated hosts), no VMs: $why; scripts/lab.sh --vm boots VMs anyway"
  fi
elif [ "$mode" = vm ]; then
  if why="$(lab/vm/kvm-probe.sh)"; then :; else
    echo "lab: VMs as asked, without KVM ($why): expect half an hour"
    export LAB_VM_ACCEL="${LAB_VM_ACCEL:-tcg}"
  fi
fi
if [ "$mode" = vm ] && [ -z "${LAB_VM_ACCEL:-}" ]; then export LAB_VM_ACCEL=kvm; fi

mkdir -p "$LAB_WORK"
./scripts/setup.sh

# Build and install the collection as users get it.
collections="$REPO/.cache/collections"
rm -rf "$REPO/.cache/build" "$collections"
mkdir -p "$REPO/.cache/build" "$collections"
.venv/bin/ansible-galaxy collection build --force --output-path "$REPO/.cache/build" "$REPO" >/dev/null
# Output captured, not piped into `grep -v ... >/dev/null` (GNU grep stops at its first line when
# writing to /dev/null, and ansible-galaxy then died of EPIPE while `|| true` hid it).
if ! galaxy_out="$(.venv/bin/ansible-galaxy collection install --offline --force -p "$collections" "$REPO"/.cache/build/overlay-vxlan-*.tar.gz 2>&1)"; then
    printf '%s\n' "$galaxy_out" >&2
    exit 1
fi
echo "collection overlay.vxlan built and installed into $collections"

if [ "$mode" = namespaces ]; then
  exec .venv/bin/python scripts/lab_namespaces.py --collections-path "$collections" $keep $json 1>&3 3>&-
fi
exec scripts/lab_vm.sh --collections-path "$collections" $keep $json 1>&3 3>&-
