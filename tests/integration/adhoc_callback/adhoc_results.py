# Aggregate callback for tests/integration/adhoc.py: one JSON line per task result, appended to
# $ADHOC_RESULTS and flushed at once. After the result of a task whose name ends in " [pause]"
# the run waits until the file "$ADHOC_RESULTS.<number of results so far>.go" exists, so that
# the test can look at the kernel between two tasks of one playbook.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: adhoc_results
type: aggregate
short_description: task results as JSON lines for tests/integration/adhoc.py
description: Writes to the file named by the ADHOC_RESULTS environment variable.
requirements: [enable in callbacks_enabled]
"""

PAUSE_SUFFIX = " [pause]"
PAUSE_TIMEOUT = 300


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "adhoc_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ["ADHOC_RESULTS"]
        self._count = 0

    def _record(self, result, status):
        task = result.task if hasattr(result, "task") else result._task
        res = result.result if hasattr(result, "result") else result._result
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"status": status, "result": dict(res)}, default=str) + "\n")
        self._count += 1
        if (task.name or "").endswith(PAUSE_SUFFIX):
            go = "%s.%d.go" % (self._path, self._count)
            deadline = time.monotonic() + PAUSE_TIMEOUT
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.01)

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")
