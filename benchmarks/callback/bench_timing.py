# Aggregate callback for benchmarks/bench_overlay.py: one JSON line per task result with the time
# the controller saw between the task starting on that host and its result arriving.
# Written to the file named by $BENCH_TIMING_FILE. (ansible-core has no profile_tasks built in.)
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_timing
type: aggregate
short_description: per-task, per-host durations as JSON lines for the overlay benchmark
description: Writes to the file named by the BENCH_TIMING_FILE environment variable.
requirements: [enable in callbacks_enabled]
"""


def _attr(obj, name):
    return getattr(obj, name) if hasattr(obj, name) else getattr(obj, "_" + name)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("BENCH_TIMING_FILE")
        self._out = open(path, "a", encoding="utf-8") if path else None
        self._task_start = {}   # task uuid -> monotonic time the task started (all hosts)
        self._host_start = {}   # (task uuid, host) -> monotonic time the runner started on that host

    def _write(self, record):
        if self._out is not None:
            self._out.write(json.dumps(record, sort_keys=True) + "\n")
            self._out.flush()

    def v2_playbook_on_start(self, playbook):
        self._write({"type": "playbook_start", "t": time.monotonic(), "wall": time.time()})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start[task._uuid] = time.monotonic()

    def v2_runner_on_start(self, host, task):
        self._host_start[(task._uuid, host.get_name())] = time.monotonic()

    def _done(self, result, status):
        now = time.monotonic()
        task, host = _attr(result, "task"), _attr(result, "host").get_name()
        start = self._host_start.get((task._uuid, host), self._task_start.get(task._uuid, now))
        self._write({"type": "task", "task": task.get_name(), "host": host, "status": status,
                     "start": start, "end": now, "duration": now - start,
                     "since_task_start": now - self._task_start.get(task._uuid, start)})

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._done(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._done(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._write({"type": "playbook_end", "t": time.monotonic()})
        if self._out is not None:
            self._out.close()
