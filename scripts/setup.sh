#!/usr/bin/env bash
# Prepare this machine for development and CI: system packages, .venv, consul.
# Idempotent and fast when everything is already in place.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache"
VENV="$REPO/.venv"
CONSUL_VERSION="1.8.7"   # what Debian 11 ships; Debian 12 has no consul package

log() { printf '[setup] %s\n' "$*"; }
# pip -q, minus the warnings this machine's pip.conf (missing local indexes) emits per package.
pip_q() { "$VENV/bin/python" -m pip -q "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }

# --- 1. system packages (apt-get only for what is missing) -------------------
PKGS=(iproute2 iputils-ping iperf3 openssh-server openssh-client iptables nftables tcpdump
      python3-venv python3-dev gcc git curl ca-certificates graphviz netcat-openbsd
      # real containers in the simulated hosts (tests/integration/lab/containers.py)
      docker.io podman busybox-static containernetworking-plugins)
missing=()
for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "system packages: ok"
fi

# --- 2. virtualenv --------------------------------------------------------------
req_hash="$(cat "$REPO/requirements.txt" "$REPO/requirements-target.txt" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv with $(command -v python3) ($(python3 --version 2>&1))"
    python3 -m venv "$VENV"
fi
if [[ "$(cat "$VENV/.req-hash" 2>/dev/null || true)" != "$req_hash" ]]; then
    log "pip install -r requirements.txt"
    pip_q install --upgrade pip
    (cd "$REPO" && pip_q install -r requirements.txt)
    echo "$req_hash" >"$VENV/.req-hash"
else
    log "venv: ok"
fi

# --- 3. consul from Debian 11, via a private apt configuration -----------------
# The system's apt sources are left untouched: a separate sources.list, state
# and cache dir under .cache/apt are used just to fetch the consul .deb.
# The .deb is kept too: a role serves it to the VMs.
if [[ ! -x "$CACHE/bin/consul" ]] || ! compgen -G "$CACHE/debs/consul_*.deb" >/dev/null; then
    APT_DIR="$CACHE/apt"
    mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial" \
             "$CACHE/debs" "$CACHE/bin"
    echo "deb http://deb.debian.org/debian bullseye main" >"$APT_DIR/sources.list"
    touch "$APT_DIR/state/status"   # empty dpkg status: we only download
    APT_OPTS=(-o "Dir::State=$APT_DIR/state"
              -o "Dir::State::status=$APT_DIR/state/status"
              -o "Dir::Cache=$APT_DIR/cache"
              -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
              -o "Dir::Etc::SourceParts=/dev/null"
              -o "APT::Sandbox::User=root")
    log "fetching consul $CONSUL_VERSION from Debian bullseye (private apt config)"
    apt-get "${APT_OPTS[@]}" update -qq
    (cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" download -qq consul)
    # No `| head` under pipefail: a reader that exits early SIGPIPEs the writer (awk reads it all).
    deb="$(find "$CACHE/debs" -maxdepth 1 -name 'consul_*.deb' -printf '%T@ %p\n' | sort -rn | awk 'NR == 1' | cut -d' ' -f2-)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    dpkg -x "$deb" "$tmp"
    install -m 0755 "$tmp/usr/bin/consul" "$CACHE/bin/consul"
    log "installed $CACHE/bin/consul from $(basename "$deb")"
else
    log "consul: ok"
fi
# Captured first: `consul version | head -n1` under pipefail failed the script now and then
# (head exits after one line, consul takes a SIGPIPE writing the rest).
consul_version="$("$CACHE/bin/consul" version)"
log "${consul_version%%$'\n'*}"

# --- 4. wheels of the target hosts' Python dependencies --------------------------
# Hosts without internet (the lab's VMs) get pyroute2 from these, pushed by the
# overlay_host role (overlay_python_install: wheels). Debian 12's Python is 3.11.
req_hash="$(sha256sum "$REPO/requirements-target.txt" | cut -c1-16)"
if [[ "$(cat "$CACHE/wheels/.req-hash" 2>/dev/null)" != "$req_hash" ]]; then
    log "downloading target wheels into .cache/wheels"
    rm -rf "$CACHE/wheels" && mkdir -p "$CACHE/wheels"
    pip_q download -d "$CACHE/wheels" -r "$REPO/requirements-target.txt" \
        --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 --implementation cp
    echo "$req_hash" > "$CACHE/wheels/.req-hash"
else
    log "target wheels: ok"
fi
log "done"
