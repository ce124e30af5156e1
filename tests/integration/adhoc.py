"""Run one module of the installed collection through ``ansible`` ad hoc against localhost.

    from adhoc import run_module
    result = run_module(collection_path, "netns_veth", {"name": "a0", ...}, check=True, diff=True)
    assert result["changed"] and not result["failed"]

The module's result is not scraped from the human-readable stdout (the ``minimal``
callback drops ``diff`` from it): the lab's ``lab_results`` aggregate callback writes the
raw result as a JSON line to a file, which is read back. ``rc`` is ansible's exit code.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
CALLBACK_DIR = Path(__file__).resolve().parent / "lab" / "callback"


class AdhocError(AssertionError):
    """ansible ran but produced no task result (bad command line, unreachable host...)."""


def run_module(collection_path, module, args, check=False, diff=False, user=None, timeout=120) -> dict:
    """Run ``overlay.vxlan.<module>`` with ``args`` on localhost; return the module's result.

    ``user`` runs the whole ansible command as that (unprivileged) user through setpriv;
    ``collection_path`` must then be readable by it.
    """
    work = Path(tempfile.mkdtemp(prefix="adhoc-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(collection_path),
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
            ANSIBLE_CALLBACKS_ENABLED="lab_results",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",   # ad hoc runs load only the stdout callback otherwise
            ANSIBLE_PIPELINING="1",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_HOME=str(work / "home"),
            ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(work / "tmp"),
            LAB_RESULTS_FILE=str(work / "results.jsonl"),
        )
        interpreter = PYTHON
        if user is not None:
            # The venv's python is a symlink into root's home, which other users cannot enter:
            # give them the system python 3 with the venv's packages instead.
            interpreter = Path("/usr/bin/python3")
            env["PYTHONPATH"] = ":".join(str(p) for p in (REPO / ".venv" / "lib").glob("python3*/site-packages"))
        cmd = [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
               "-e", "ansible_python_interpreter=%s" % interpreter,
               "-m", "overlay.vxlan.%s" % module, "-a", json.dumps(args)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if user is not None:
            os.chmod(work, 0o777)
            env["HOME"] = str(work)
            pw = pwd.getpwnam(user)
            cmd = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups", "--"] + cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=work)
        results = work / "results.jsonl"
        records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
        tasks = [r for r in records if r.get("type") == "task"]
        if len(tasks) != 1:
            raise AdhocError("expected one task result from %s, got %d\nrc=%s\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(cmd), len(tasks), proc.returncode, proc.stdout, proc.stderr))
        result = tasks[0]["result"]
        result.setdefault("changed", False)
        result["failed"] = tasks[0]["status"] in ("failed", "unreachable")
        result["rc"] = proc.returncode
        result["ansible_output"] = proc.stdout + proc.stderr
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)

