"""Result of one ansible-playbook run, built from the lab_results callback output."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class PlaybookResult:
    cmd: list[str]
    rc: int
    stdout: str
    stderr: str
    events: list[dict] = field(default_factory=list)  # one per task per host, in order
    stats: dict = field(default_factory=dict)          # host -> {ok, changed, failures, ...}

    @classmethod
    def from_file(cls, cmd, rc, stdout, stderr, path) -> "PlaybookResult":
        events, stats = [], {}
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    if rec["type"] == "task":
                        events.append(rec)
                    elif rec["type"] == "stats":
                        stats = rec["hosts"]
        except FileNotFoundError:
            pass  # ansible-playbook died before running a task (syntax error...)
        return cls(cmd, rc, stdout, stderr, events, stats)

    # --- queries ------------------------------------------------------------
    def _match(self, host, task_name):
        return [e for e in self.events
                if (host is None or e["host"] == host)
                and (task_name is None or task_name in (e["task"], e["name"]))]

    def results(self, host: str, task_name: str) -> dict:
        """Result of the last run of ``task_name`` on ``host``.

        ``task_name`` matches the bare task name or the "role : name" form.
        The dict is the module's return value plus "changed", "failed",
        "skipped", "unreachable" and "status" (ok/changed/failed/skipped/unreachable).
        """
        found = self._match(host, task_name)
        if not found:
            names = sorted({e["task"] for e in self._match(host, None)})
            raise KeyError(f"no result for task {task_name!r} on {host!r}; tasks seen: {names}")
        e = found[-1]
        res = dict(e["result"])
        res.setdefault("changed", False)
        res["failed"] = e["status"] == "failed"
        res["skipped"] = e["status"] == "skipped"
        res["unreachable"] = e["status"] == "unreachable"
        res["status"] = e["status"]
        return res

    def all_results(self, host: str | None = None, task_name: str | None = None) -> list[dict]:
        return self._match(host, task_name)

    def changed_count(self, host: str | None = None) -> int:
        return sum(1 for e in self._match(host, None) if e["status"] == "changed")

    def changed_tasks(self, host: str | None = None) -> list[tuple[str, str]]:
        return [(e["host"], e["task"]) for e in self._match(host, None) if e["status"] == "changed"]

    @property
    def failed(self) -> list[dict]:
        """Failed (not ignore_errors) and unreachable tasks: dicts with host, task, msg."""
        return [{"host": e["host"], "task": e["task"], "msg": e["result"].get("msg", ""),
                 "status": e["status"]}
                for e in self.events
                if e["status"] == "unreachable" or (e["status"] == "failed" and not e.get("ignored"))]

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failed

    def assert_ok(self) -> "PlaybookResult":
        """Raise AssertionError with the failures and output tail unless the run succeeded."""
        if not self.ok:
            raise AssertionError(f"ansible-playbook rc={self.rc}\n{self.summary()}")
        return self

    def summary(self, tail: int = 60) -> str:
        lines = [f"FAILED {f['host']} / {f['task']}: {f['msg']}" for f in self.failed]
        out = self.stdout.splitlines()[-tail:]
        err = self.stderr.splitlines()[-tail:]
        return "\n".join(lines + ["--- stdout (tail) ---", *out, "--- stderr (tail) ---", *err])
