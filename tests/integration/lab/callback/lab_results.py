# Aggregate callback used by the test lab: appends one JSON line per task
# result (and a final stats line) to the file named by $LAB_RESULTS_FILE.
# ansible-core has no built-in json stdout callback, and keeping the normal
# human-readable stdout makes failing tests easier to read.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: lab_results
type: aggregate
short_description: write every task result as JSON lines for the test lab
description: Writes to the file named by the LAB_RESULTS_FILE environment variable.
requirements: [enable in callbacks_enabled]
"""


def _attr(obj, name):
    # ansible-core >= 2.19 has public .host/.task/.result; older only _host/...
    return getattr(obj, name) if hasattr(obj, name) else getattr(obj, "_" + name)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lab_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("LAB_RESULTS_FILE")
        self._out = open(path, "a", encoding="utf-8") if path else None
        self._play = None

    def _write(self, record):
        if self._out is None:
            return
        self._out.write(json.dumps(record, default=str, sort_keys=True) + "\n")
        self._out.flush()  # keep what we have even if ansible-playbook is killed

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def _task(self, result, status, **extra):
        task = _attr(result, "task")
        res = dict(_attr(result, "result"))
        self._write({
            "type": "task",
            "play": self._play,
            "host": _attr(result, "host").get_name(),
            "task": task.get_name(),       # with "role : " prefix for role tasks
            "name": task.name or "",       # bare name as written in the task
            "action": task.action,
            "handler": type(task).__name__ == "Handler",
            "status": status,
            "result": res,
            **extra,
        })

    def v2_runner_on_ok(self, result):
        changed = bool(_attr(result, "result").get("changed"))
        self._task(result, "changed" if changed else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task(result, "failed", ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result):
        self._task(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._task(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        self._write({"type": "stats", "hosts": {h: stats.summarize(h) for h in hosts}})
        if self._out is not None:
            self._out.close()
            self._out = None
