"""What a dispatcher run did, told truthfully, and the exit status that goes with it (pure).

The counts do not come from the code paths that fail or finish a task (there are many: retries
used up, a gate, a conflict given up, a person's ``tasks close``), but from comparing the tasks
at the end of the run with the tasks at its start, so no path can be forgotten. What still
needs a person (a failed task, a merge waiting for them, work that can never start, a model
server that does not answer) is listed with what to do, and makes the exit status 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localdispatch.tasks import Task, by_id

EXIT_OK = 0
EXIT_NEEDS_PERSON = 3
EXIT_INTERRUPTED = 130


@dataclass
class RunSummary:
    """A run's figures and what is left for a person. ``--json`` prints it as a dict."""

    started: int = 0
    merged: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    interrupted: bool = False
    failed_tasks: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    model_server: str | None = None  # why no attempt could start, if that is why it ended
    still_open: int = 0  # tasks left open or in progress (a --max-tasks run, an interrupt)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        needs_person = self.failed_tasks or self.waiting or self.blocked or self.model_server
        return EXIT_NEEDS_PERSON if needs_person else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items()}
        data["exit_code"] = self.exit_code
        return data


def tally(
    summary: RunSummary,
    before: Mapping[str, str],
    tasks: Sequence[Task],
    pending: Iterable[Mapping[str, Any]],
) -> RunSummary:
    """Fill ``summary`` from the tasks' statuses ``before`` the run and ``tasks`` after it,
    and the merges still ``pending`` (``PendingMerge.public()`` dicts)."""
    index = by_id(tasks)
    changed = [t for t in tasks if before.get(t.id) != t.status]
    summary.done = sum(
        1 for t in changed if t.status == "done" and t.kind != "epic" and not t.merged_commit
    )
    summary.merged = sum(1 for t in changed if t.status == "done" and t.merged_commit)
    summary.failed = sum(1 for t in changed if t.status == "failed")
    summary.failed_tasks = [
        {
            "task": t.id,
            "title": t.title,
            "reason": t.closed_reason or "",
            "earlier": before.get(t.id) == "failed",
            "steps": [
                f"localdispatch tasks reopen {t.id}   (to try again)",
                f"localdispatch tasks cancel {t.id}   (to give it up)",
            ],
        }
        for t in tasks
        if t.status == "failed"
    ]
    summary.waiting = [
        {
            "task": entry.get("task"),
            "branch": entry.get("branch"),
            "reason": entry.get("reason"),
            "steps": list(entry.get("steps") or []),
        }
        for entry in pending
        if entry.get("person")
    ]
    summary.still_open = sum(
        1 for t in tasks if t.status in ("open", "in_progress") and t.kind != "epic"
    )
    summary.blocked = [
        {"task": t.id, "title": t.title, "waits_for": dead}
        for t in tasks
        if t.status == "open" and t.kind != "epic" and (dead := dead_dependencies(t, index))
    ]
    return summary


def dead_dependencies(task: Task, index: Mapping[str, Task]) -> list[str]:
    """The dependencies of ``task`` that will never be done by themselves: failed,
    cancelled or missing (each one means the task can never start)."""
    return [
        dep
        for dep in task.depends_on
        if dep not in index or index[dep].status in ("failed", "cancelled")
    ]


def format_summary(summary: RunSummary) -> str:
    """The last lines of a run: the figures, then each thing a person must look at."""
    lines = [
        f"Started {summary.started} attempt(s): {summary.merged} merged, {summary.done} done, "
        f"{summary.retried} to retry, {summary.failed} failed."
        + (" Interrupted." if summary.interrupted else "")
    ]
    if summary.model_server:
        lines.append(f"No work started: {summary.model_server}")
    for item in summary.failed_tasks:
        when = " (in an earlier run)" if item["earlier"] else ""
        lines.append(f"Failed{when}: {item['task']} {item['title']}: {_first(item['reason'])}")
        lines.extend(f"    {step}" for step in item["steps"])
    for item in summary.waiting:
        lines.append(f"Waiting for you: {item['task']} ({item['branch']}): {item['reason']}")
        lines.extend(f"    {n}. {step}" for n, step in enumerate(item["steps"], start=1))
    for item in summary.blocked:
        lines.append(
            f"Cannot start: {item['task']} {item['title']}: it waits for "
            f"{', '.join(item['waits_for'])}, which failed, was cancelled or does not exist"
        )
    if summary.exit_code == EXIT_OK:
        left = summary.still_open
        lines.append(
            f"{left} task(s) still open; run again to go on." if left else "Every task is done."
        )
    return "\n".join(lines)


def _first(reason: str, limit: int = 400) -> str:
    """A failed task's reason for one summary line; the whole of it is in `tasks show`."""
    head = reason.strip().splitlines()[0] if reason.strip() else "no reason recorded"
    return head if len(head) <= limit else head[: limit - 1] + "…"


def statuses(tasks: Iterable[Task]) -> dict[str, str]:
    return {task.id: task.status for task in tasks}
