"""Run modules of the installed collection through ansible against localhost.

    from adhoc import run_module, run_batch
    result = run_module(collection_path, "netns_veth", {"name": "a0", ...}, check=True, diff=True)
    assert result["changed"] and not result["failed"]
    check, real, again = run_batch(collection_path, "netns_veth", [
        {"args": args, "check": True, "pause": look_at_the_kernel},
        {"args": args}, {"args": args}])

``run_module`` is one ``ansible localhost -m overlay.vxlan.<module>`` ad hoc run. ``run_batch``
runs several invocations as the tasks of one ``ansible-playbook`` run, which costs about as much
as one ad hoc run (ansible's own start-up is most of it); a run with ``pause`` stops the play
after its task until ``pause(result)`` has returned, to look at the kernel in between.

Results are not scraped from the human-readable stdout (the ``minimal`` callback drops
``diff``): the callback in adhoc_callback/ writes each raw task result as a JSON line to a file,
which is read back. Each result gets ``failed`` (from the task status), ``rc`` (ansible's exit
code) and ``ansible_output`` (its stdout and stderr, for failure messages).
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
CALLBACK_DIR = Path(__file__).resolve().parent / "adhoc_callback"
PAUSE_SUFFIX = " [pause]"  # as in adhoc_callback/adhoc_results.py


class AdhocError(AssertionError):
    """ansible did not produce the expected task results (bad command line, unreachable host...)."""


def run_module(collection_path, module, args, check=False, diff=False, user=None, timeout=120) -> dict:
    """Run ``overlay.vxlan.<module>`` with ``args`` on localhost, ad hoc; return the module's result.

    ``user`` runs the whole ansible command as that (unprivileged) user through setpriv;
    ``collection_path`` must then be readable by it.
    """
    cmd = ["ansible", "localhost", "-m", "overlay.vxlan.%s" % module, "-a", json.dumps(args)]
    cmd += ["--check"] * check + ["--diff"] * diff
    return _run(cmd, collection_path, [None], user=user, timeout=timeout)[0]


def run_batch(collection_path, module, runs, timeout=300) -> list[dict]:
    """Run ``overlay.vxlan.<module>`` once per item of ``runs`` ({"args": ..., "check": bool,
    "diff": bool, "pause": callable}), in order, as the tasks of one playbook; a failing task
    does not stop the ones after it. Returns one result per item."""
    tasks = [{"name": "run %d%s" % (i, PAUSE_SUFFIX if run.get("pause") else ""),
              "overlay.vxlan.%s" % module: run["args"], "check_mode": bool(run.get("check")),
              "diff": bool(run.get("diff")), "ignore_errors": True}
             for i, run in enumerate(runs)]
    play = [{"name": "batch", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    with tempfile.NamedTemporaryFile("w", prefix="batch-", suffix=".yml", delete=False) as f:
        json.dump(play, f)  # JSON is YAML
    try:
        return _run(["ansible-playbook", f.name], collection_path, [run.get("pause") for run in runs],
                    timeout=timeout)
    finally:
        os.unlink(f.name)


def _run(cmd, collection_path, pauses, user=None, timeout=120):
    """Run an ansible command; ``pauses`` has one item per expected task result: None, or a
    callable to call with that result while the run waits."""
    work = Path(tempfile.mkdtemp(prefix="adhoc-"))
    results_file = work / "results.jsonl"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(collection_path),
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
            ANSIBLE_CALLBACKS_ENABLED="adhoc_results",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",   # ad hoc runs load only the stdout callback otherwise
            ANSIBLE_PIPELINING="1",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_HOME=str(work / "home"),
            ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(work / "tmp"),
            ADHOC_RESULTS=str(results_file),
        )
        interpreter = PYTHON
        if user is not None:
            # The venv's python is a symlink into root's home, which other users cannot enter:
            # give them the system python 3 with the venv's packages instead.
            interpreter = Path("/usr/bin/python3")
            env["PYTHONPATH"] = ":".join(str(p) for p in (REPO / ".venv" / "lib").glob("python3*/site-packages"))
            env["HOME"] = str(work)
            os.chmod(work, 0o777)
        cmd = [str(VENV_BIN / cmd[0]), *cmd[1:], "-c", "local", "-i", "localhost,",
               "-e", "ansible_python_interpreter=%s" % interpreter]
        if user is not None:
            pw = pwd.getpwnam(user)
            cmd = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups", "--"] + cmd

        def read():
            text = results_file.read_text() if results_file.exists() else ""
            return [_result(json.loads(line)) for line in text.split("\n")[:-1]]  # complete lines only

        with open(work / "output", "w+", encoding="utf-8") as output:
            proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, text=True, env=env, cwd=work)
            try:
                _serve_pauses(proc, read, pauses, results_file, time.monotonic() + timeout)
                proc.wait(timeout=timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            output.seek(0)
            text = output.read()
        results = read()
        if len(results) != len(pauses):
            raise AdhocError("expected %d task results from %s, got %d\nrc=%s\noutput:\n%s"
                             % (len(pauses), " ".join(cmd), len(results), proc.returncode, text))
        for result in results:
            result["rc"] = proc.returncode
            result["ansible_output"] = text
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _serve_pauses(proc, read, pauses, results_file, deadline):
    """Call each pause hook once its task's result is in, then let the run go on."""
    waiting = {i: hook for i, hook in enumerate(pauses) if hook is not None}
    while waiting and proc.poll() is None:
        if time.monotonic() > deadline:
            raise AdhocError("ansible run timed out")
        results = read()
        for i in sorted(waiting):
            if i < len(results):
                waiting.pop(i)(results[i])
                Path("%s.%d.go" % (results_file, i + 1)).touch()
        time.sleep(0.01)


def _result(record):
    result = record["result"]
    result.setdefault("changed", False)
    result["failed"] = record["status"] in ("failed", "unreachable")
    return result
