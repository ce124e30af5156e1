#!/usr/bin/env bash
# The seed's walkthrough on three qemu VMs (lab/vm): consul 10.0.0.5, docker0 10.0.0.10, docker1 10.0.0.11.
# Called by scripts/lab.sh --vm: one line per step, then the same walkthrough report as the namespace
# lab (scripts/lab_report.py; --json for the JSON).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
collections=""; keep=""; json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --collections-path) collections="$2"; shift ;;
    --keep) keep=1 ;;
    --json) json=--json ;;
  esac
  shift
done
export ANSIBLE_COLLECTIONS_PATH="$collections"
export ANSIBLE_HOST_KEY_CHECKING=false ANSIBLE_PIPELINING=true ANSIBLE_FORKS=5
# --json: stdout carries only the JSON report, the progress lines go to stderr.
if [ -n "$json" ]; then exec 3>&1 1>&2; else exec 3>&1; fi
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

cleanup() { [ -n "$keep" ] || lab/vm/down.sh >/dev/null 2>&1 || true; }
trap cleanup EXIT

logs="lab/work/vm-logs"
mkdir -p "$logs"
t=$(now); lab/vm/build-image.sh >"$logs/image.log" 2>&1 || { tail -n 30 "$logs/image.log"; exit 1; }
echo "lab: VM image ready in $(took "$t")"
t=$(now); lab/vm/up.sh >"$logs/up.log" 2>&1 || { tail -n 30 "$logs/up.log"; exit 1; }
echo "lab: 3 VMs booted and reachable over SSH in $(took "$t") (consul 10.0.0.5, docker0 10.0.0.10, docker1 10.0.0.11)"

# Each step as one line, as the namespace lab prints them; Ansible's own log goes to $logs.
inv=(-i lab/work/vm-inventory.ini -i playbooks/inventory/seed.yml -e @playbooks/inventory/vm-lab.yml)
step() {  # step NAME LOG PLAYBOOK [ARGS...]
  local name="$1" log="$logs/$2" t rc=0 changed
  shift 2
  t=$(now)
  .venv/bin/ansible-playbook "${inv[@]}" "$@" >"$log" 2>&1 || rc=$?
  changed="$(awk '/ changed=/ { for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { sub("changed=", "", $i); n += $i } }
                  END { print n + 0 }' "$log")"
  echo "lab: $name: rc=$rc, $changed changed, $(took "$t") (log: $log)"
  if [ "$rc" -ne 0 ]; then tail -n 40 "$log"; exit 1; fi
}
step "site.yml converged" converge.log playbooks/site.yml
step "site.yml again (idempotence)" idempotence.log playbooks/site.yml
step "walkthrough gathered" walkthrough.log playbooks/walkthrough.yml -e "walkthrough_out=$REPO/lab/work/walkthrough.json"

.venv/bin/python scripts/lab_report.py lab/work/walkthrough.json --collections-path "$collections" $json 1>&3
if [ -n "$keep" ]; then
  echo
  echo "VMs left running: ssh -F lab/work/vm-ssh_config docker1; stop them with scripts/lab.sh --down"
fi
