#!/usr/bin/env bash
# The seed's walkthrough on three qemu VMs (lab/vm): consul 10.0.0.5, docker0 10.0.0.10, docker1 10.0.0.11.
# Called by scripts/lab.sh; prints each step's time.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
collections=""; keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --collections-path) collections="$2"; shift ;;
    --keep) keep=1 ;;
  esac
  shift
done
export ANSIBLE_COLLECTIONS_PATH="$collections"
export ANSIBLE_HOST_KEY_CHECKING=false ANSIBLE_PIPELINING=true ANSIBLE_FORKS=5
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f s", b - a }'; }

cleanup() { [ -n "$keep" ] || lab/vm/down.sh >/dev/null 2>&1 || true; }
trap cleanup EXIT

t=$(now); lab/vm/build-image.sh; echo "== image ready in $(took "$t")"
t=$(now); lab/vm/up.sh; echo "== 3 VMs booted and reachable over SSH in $(took "$t")"

inv=(-i lab/work/vm-inventory.ini -i playbooks/inventory/seed.yml -e @playbooks/inventory/vm-lab.yml)
t=$(now); .venv/bin/ansible-playbook "${inv[@]}" playbooks/site.yml; echo "== site.yml converged in $(took "$t")"
t=$(now); .venv/bin/ansible-playbook "${inv[@]}" playbooks/site.yml | tee lab/work/idempotence.log | tail -n 6
echo "== site.yml again (idempotence) in $(took "$t")"
t=$(now); .venv/bin/ansible-playbook "${inv[@]}" playbooks/seed_checks.yml; echo "== seed checks in $(took "$t")"
if [ -n "$keep" ]; then
  echo "VMs left running: ssh -F lab/work/vm-ssh_config docker1; stop them with scripts/lab.sh --down"
fi
