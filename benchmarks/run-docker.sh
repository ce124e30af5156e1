#!/usr/bin/env bash
# Docker with the overlay.vxlan plugin: docker run -> first ping, and 50 sequential docker runs.
#   sudo benchmarks/run-docker.sh [--rounds N] [--count N]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$REPO/scripts/setup.sh" >/dev/null
exec "$REPO/.venv/bin/python" "$REPO/benchmarks/bench_docker.py" "$@"
