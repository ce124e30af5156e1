#!/usr/bin/env bash
# The main job: the seed's three-host walkthrough, from nothing, printed.
#   scripts/lab.sh                 # VMs (qemu) if the VM lab is available, set up everything, run, tear down
#   scripts/lab.sh --namespaces    # the same on simulated hosts (network namespaces + sshd): seconds, no image
#   scripts/lab.sh --keep          # leave the lab running afterwards;  scripts/lab.sh --down  stops it
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

mode=vm; keep=""; down=""
for arg in "$@"; do
  case "$arg" in
    --namespaces) mode=namespaces ;;
    --vm) mode=vm ;;
    --keep) keep=--keep ;;
    --down) down=1 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [ -n "$down" ]; then
  if [ -x lab/vm/down.sh ]; then lab/vm/down.sh || true; fi
  PYTHONPATH=tests/integration .venv/bin/python -c 'from lab import cleanup_stale; print(cleanup_stale(include_detached=True) if "include_detached" in cleanup_stale.__code__.co_varnames else cleanup_stale())'
  exit 0
fi

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

if [ "$mode" = vm ] && [ ! -x lab/vm/up.sh ]; then
  echo "VM lab scripts missing; using the namespace lab" >&2
  mode=namespaces
fi

if [ "$mode" = namespaces ]; then
  exec .venv/bin/python scripts/lab_namespaces.py --collections-path "$collections" $keep
fi
exec scripts/lab_vm.sh --collections-path "$collections" $keep
