"""Shell scripts under `set -o pipefail` must not pipe a producer into a reader that exits early
(`| head`, `| grep -q`, `| grep ... >/dev/null`): the producer takes a SIGPIPE and the pipeline
fails with 141 now and then (issue 12 item 8, scripts/setup.sh after the Consul version)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*REPO.glob("scripts/*.sh"), *REPO.glob("lab/**/*.sh")])
# More than a pipe buffer (64 KiB): the producer is still writing when the reader has exited.
BIG = "seq 1 300000"


def bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], capture_output=True,
                          text=True, timeout=30, check=False)


def test_the_old_pattern_fails_under_pipefail():
    # What setup.sh did with `consul version | head -n1`: deterministic with a big producer.
    assert bash(BIG + " | head -n1").returncode == 141
    assert bash(BIG + " | grep -q '^1$'").returncode == 141


def test_the_captured_pattern_survives():
    r = bash('out="$(%s)"\nprintf "%%s\\n" "${out%%%%$\'\\n\'*}"\n'
             'grep -q "^2999$" <<<"$out"\necho done' % BIG)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1\ndone\n"


# A pipe whose last command stops reading early.
EARLY_READER = re.compile(r"\|\s*(head\b|grep\s+(-\w*\s+)*-\w*[qm]|grep\b[^|]*>\s*/dev/null)")


def test_no_script_pipes_into_an_early_reader():
    offenders = []
    for path in SCRIPTS:
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            if EARLY_READER.search(code):
                offenders.append("%s:%d: %s" % (path.relative_to(REPO), n, line.strip()))
    assert offenders == []


def test_pid_is_vm_matches_a_long_command_line(tmp_path):
    # lab/vm/common.sh's pid_is_vm on a process whose command line is longer than a pipe buffer
    # and has lines (grep -q stops after the first matching line): `tr | grep -q` under pipefail
    # said "not this VM" (141).
    filler = ["x" * 1000 + "\n"] * 1000   # 1 MB: far more than the pipe and grep's buffers
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "-name", "vmlab-probe", *filler])
    try:
        r = subprocess.run(["bash", "-c", 'set -euo pipefail\nsource "$1"\npid_is_vm "$2" probe && echo yes\n'
                            'pid_is_vm "$2" other || echo no', "-", str(REPO / "lab/vm/common.sh"),
                            str(proc.pid)], capture_output=True, text=True, timeout=30, check=False)
    finally:
        proc.kill()
        proc.wait()
    assert r.stdout.split() == ["yes", "no"], (r.returncode, r.stdout, r.stderr)
