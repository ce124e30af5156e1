#!/usr/bin/env bash
# ansible-test sanity for the collection, in ansible-test's own virtual environments.
#   ./scripts/sanity.sh                 # every sanity test
#   ./scripts/sanity.sh --test pylint   # extra arguments go to ansible-test sanity
#
# ansible-test only runs from a tree at .../ansible_collections/<namespace>/<name> that is not
# inside this git checkout (it would skip everything .gitignore'd, .cache included), so the
# working tree is copied (without .venv, .cache, .git and outputs) to a temporary
# .../ansible_collections/overlay/vxlan, removed afterwards. ansible-test's venvs live under a
# private HOME in .cache/sanity-home and are reused by later runs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/overlay-vxlan-sanity.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
DEST="$TMP/ansible_collections/overlay/vxlan"
PYTHON_VERSION="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# ---- a copy of the working tree ---------------------------------------------------------------
mkdir -p "$DEST"
tar -C "$REPO" -cf - \
    --exclude=./.venv --exclude=./.cache --exclude=./.git --exclude=./.ansible \
    --exclude=./lab/work --exclude=./tests/output --exclude=./.pytest_cache \
    --exclude=__pycache__ --exclude='*.pyc' --exclude='*.tar.gz' . | tar -C "$DEST" -xf -

# ---- pip bootstrap without ci-files.testing.ansible.com ---------------------------------------
# ansible-test creates its venvs without pip and installs pip with a get-pip.py it downloads
# from ci-files.testing.ansible.com (not reachable here), cached as ~/.ansible/test/cache/
# get_pip_<version>.py. A stand-in there bootstraps pip from Python's own ensurepip instead,
# then installs the pinned pip from the package index like get-pip.py would.
export HOME="$REPO/.cache/sanity-home"
pip_version="$(grep -m1 -oE "pip='[0-9.]+'" "$("$VENV/bin/python" -c \
    'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py" \
    | grep -oE '[0-9.]+')"
mkdir -p "$HOME/.ansible/test/cache"
cat >"$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py" <<'EOF'
"""Stand-in for get-pip.py, written by scripts/sanity.sh: pip from ensurepip, then the pinned pip."""
import ensurepip
import os
import runpy
import sys

environ = dict(os.environ)
ensurepip.bootstrap()  # it also sets PIP_CONFIG_FILE=/dev/null, hiding pip.conf (index, certificates)
os.environ.clear()
os.environ.update(environ)
sys.argv = ["pip", "install"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
EOF

cd "$DEST"
"$VENV/bin/ansible-test" sanity --venv --python "$PYTHON_VERSION" --color no "$@"
