#!/usr/bin/env bash
# Run the overlay benchmark with the venv and the lab on PYTHONPATH:
#   sudo benchmarks/run.sh [--keep] [--no-profile] [--collections-path DIR] [--only attach|bringup|join|iperf|micro|peers]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $EUID -ne 0 ]]; then
    echo "run.sh: needs root (network namespaces)" >&2
    exit 1
fi
[[ -x "$REPO/.venv/bin/python" && -x "$REPO/.cache/bin/consul" ]] || "$REPO/scripts/setup.sh"
if ! command -v iperf3 >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi
cd "$REPO"
PYTHONPATH="$REPO/tests/integration${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$REPO/.venv/bin/python" "$REPO/benchmarks/bench_overlay.py" "$@"
