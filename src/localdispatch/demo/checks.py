"""What a demo run left behind, read back and checked the way a person would check it.

The tasks and the event log say what the dispatcher did (merges, the conflict, how it was
resolved); git says what reached ``main``. Each check is plain data with a one-line detail, so
the command can print it and ``--json`` can carry it. Nothing here prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localdispatch import processes
from localdispatch.config import Config
from localdispatch.git.commands import git_out, run_git
from localdispatch.processes.supervisor import repo_marker
from localdispatch.processes.trees import marked_processes
from localdispatch.tasks import Task
from localdispatch.testing import demo_project as project
from localdispatch.testing.demo_worker import has_markers

LOG_LINES = 30


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class DemoResult:
    """Everything the demo shows at the end; ``as_dict`` is the ``--json`` output."""

    ok: bool
    repo: str
    goal: str
    model_server: str
    workers: int
    elapsed_secs: float
    split_secs: float
    dispatch_secs: float
    epic: str
    tasks: list[dict[str, Any]]
    counts: dict[str, int]
    merges: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]
    summary: dict[str, Any]
    report_output: str
    main_log: list[str]
    checks: list[Check]
    interrupted: bool = False
    timed_out: bool = False
    kept: bool = True
    cause: str = ""  # why it failed, in one sentence (empty when ok)

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = self.problems
        return data


# ---- what the dispatcher did (pure) ----------------------------------------------------------


def task_data(task: Task) -> dict[str, Any]:
    keys = ("id", "title", "kind", "status", "files", "depends_on", "parent", "branch")
    data = {key: getattr(task, key) for key in keys}
    data.update(merged_commit=task.merged_commit, closed_reason=task.closed_reason)
    return data


def status_counts(tasks: list[Task]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.status] = counts.get(task.status, 0) + 1
    return counts


def merges(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every merge outcome the dispatcher reported, in order."""
    keys = ("task", "branch", "status", "commit", "conflict_task", "retried", "message")
    return [
        {key: event.get(key) for key in keys}
        for event in events
        if event.get("event") == "merge_outcome"
    ]


def conflicts(tasks: list[Task], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each conflict task: whose merge it came from, where, how it ended, what the worker did."""
    index = {task.id: task for task in tasks}
    result = []
    for task in tasks:
        if task.kind != "conflict":
            continue
        origin = next(
            (
                e
                for e in events
                if e.get("event") == "conflict_task" and e.get("conflict_task") == task.id
            ),
            {},
        )
        source = index.get(str(origin.get("task") or task.discovered_from or ""))
        landed = [
            e
            for e in events
            if source is not None
            and e.get("event") == "merge_outcome"
            and e.get("status") == "merged"
            and e.get("task") == source.id
        ]
        result.append(
            {
                "task": task.id,
                "title": task.title,
                "status": task.status,
                "branch": task.branch,
                "files": list(task.files),
                "for_task": source.id if source else None,
                "for_task_status": source.status if source else None,
                "resolution": resolution(events, task.id),
                "merged_after_retry": bool(landed),
                "merged_commit": landed[-1].get("commit") if landed else None,
            }
        )
    return result


def resolution(events: list[dict[str, Any]], task_id: str) -> list[str]:
    """What the worker said it did, from the log of its last attempt."""
    starts = [e for e in events if e.get("event") == "start" and e.get("task") == task_id]
    if not starts or not starts[-1].get("log"):
        return []
    try:
        text = Path(str(starts[-1]["log"])).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    said = ("resolved ", f"{task_id}: committed")
    return [line.strip() for line in text.splitlines() if line.startswith(said)]


def check_tasks(tasks: list[Task]) -> Check:
    failed = [t.id for t in tasks if t.status == "failed"]
    other = [t.id for t in tasks if t.status not in ("done", "failed")]
    parts = [f"{len(failed)} failed ({_ids(failed)})"] if failed else []
    parts += [f"{len(other)} not finished ({_ids(other)})"] if other else []
    if not tasks:
        parts = ["there are no tasks"]
    return Check("tasks", not parts, ", ".join(parts) or f"all {len(tasks)} done")


def check_conflict(found: list[dict[str, Any]]) -> Check:
    if len(found) != 1:
        return Check("conflict", False, f"expected one conflict task, found {len(found)}")
    (conflict,) = found
    ok = conflict["status"] == "done" and conflict["merged_after_retry"]
    landed = "was retried and landed" if conflict["merged_after_retry"] else "did not land"
    detail = f"{conflict['task']} {conflict['status']}; the merge of {conflict['branch']} {landed}"
    return Check("conflict", ok, detail)


def check_report(output: str) -> Check:
    command = f"`python -m statkit {' '.join(project.REPORT_ARGS)}`"
    if output == project.EXPECTED_REPORT:
        return Check("report", True, f"{command} prints the expected report")
    last = output.splitlines()[-1] if output.strip() else "nothing"
    return Check("report", False, f"{command} printed {last!r}")


def first_failure(tasks: list[Task]) -> str | None:
    """The task that failed first, with its reason: usually the cause of the rest."""
    failed = sorted((t for t in tasks if t.status == "failed"), key=lambda t: t.updated_at)
    if not failed:
        return None
    task = failed[0]
    return f"task {task.id} ({task.title}) failed: {task.closed_reason or 'no reason given'}"


def _ids(ids: list[str], limit: int = 6) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# ---- what reached main (git) -----------------------------------------------------------------


def repo_checks(repo: Path, config: Config) -> list[Check]:
    """The checks that read the repository: edits, markers, processes, state files, checkout."""
    out = git_out(["ls-tree", "-r", "-z", "--name-only", "main"], repo)
    names = [name for name in out.split("\0") if name]
    return [
        check_edits(repo),
        check_markers(repo, names),
        check_processes(repo),
        check_untracked_state(names, config),
        check_checkout(repo),
    ]


def check_edits(repo: Path) -> Check:
    """Every edit a worker was asked to make is on main."""
    edits = [edit for sub in project.SUBTASKS for edit in sub.edits]
    missing: list[str] = []
    for edit in edits:
        text = show(repo, edit.path)
        if (text is None or edit.text not in text) and edit.path not in missing:
            missing.append(edit.path)
    if missing:
        return Check("edits", False, f"edits to {len(missing)} file(s) are not on main")
    return Check("edits", True, f"all {len(edits)} edits are on main")


def check_markers(repo: Path, names: list[str]) -> Check:
    marked = [name for name in names if has_markers(show(repo, name) or "")]
    detail = "conflict markers in " + ", ".join(marked) if marked else "no conflict markers"
    return Check("markers", not marked, detail)


def check_processes(repo: Path) -> Check:
    alive = marked_processes(repo_marker(repo))
    if alive:
        pids = ", ".join(str(p.pid) for p in alive)
        return Check("processes", False, f"worker processes still alive: {pids}")
    return Check("processes", True, "no worker process left")


def check_untracked_state(names: list[str], config: Config) -> Check:
    state = {config.task_queue_file, config.suggested_tasks_file}
    tracked = [n for n in names if n in state or n.startswith(".dispatch/")]
    detail = "tracked state files: " + ", ".join(tracked) if tracked else "none tracked"
    return Check("state files", not tracked, detail)


def check_checkout(repo: Path) -> Check:
    """The folder's own checkout is on main, up to date and clean (merges moved it along)."""
    status = git_out(["status", "--porcelain", "--untracked-files=all"], repo)
    branch = git_out(["symbolic-ref", "--quiet", "--short", "HEAD"], repo)
    changed = "clean" if not status else "changed: " + status.replace("\n", "; ")
    return Check("checkout", not status and branch == "main", f"on {branch}, {changed}")


def show(repo: Path, path: str) -> str | None:
    result = run_git(["show", f"main:{path}"], repo, check=False)
    return result.stdout if result.returncode == 0 else None


def report_output(repo: Path) -> str:
    """Run the finished project's new command in the repository's checkout of main."""
    try:
        done = processes.run(
            [sys.executable, "-B", "-m", "statkit", *project.REPORT_ARGS],
            cwd=repo,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"},
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run: {exc}"
    output: str = done.stdout if done.returncode == 0 else done.stderr
    return output.strip()


def main_log(repo: Path) -> list[str]:
    out = run_git(
        ["log", "--graph", "--oneline", "--no-decorate", f"-{LOG_LINES}", "main"],
        repo,
        check=False,
    ).stdout
    return out.rstrip().splitlines()
