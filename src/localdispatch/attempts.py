"""A worker attempt as the dispatcher sees it: the run it watches, and how it is judged.

An attempt is judged by the commits on its branch (``workers.judge``), so before they are
counted the branch is made honest: the dispatcher's state files a worker committed are taken
out again, a conflict task's resolved but uncommitted merge is committed, and commits that
change nothing in sum count as no work. New files whose names look like a model's sentences
are named here too, since they make the attempt a failed one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import gitops
from .config import Config
from .dispatch_state import RunRecord
from .errors import DispatchError
from .layout import Layout
from .supervisor import WorkerHandle
from .tasks import Task
from .workers import Verdict, accidental_files, find_accidental_files, judge

log = logging.getLogger(__name__)


class Emit(Protocol):
    """Writes one event to the event log (and shows it to whoever watches the run)."""

    def __call__(self, event: str, **fields: Any) -> None: ...


@dataclass
class ActiveRun:
    """A worker attempt the loop is watching."""

    record: RunRecord
    task: Task
    handle: WorkerHandle | None = None
    deadline: float | None = None
    timed_out: bool = False
    exited: bool = False
    killer: threading.Thread | None = None


@dataclass(frozen=True)
class Findings:
    """What a finished attempt left: the commits that count as work, and the accidental
    files they added (empty when there are no such commits)."""

    commits: list[str]
    accidental: list[str]


def judge_finished(
    config: Config, layout: Layout, run: ActiveRun, task: Task, emit: Emit
) -> Verdict:
    """Judge an attempt whose worker has exited; emits ``finish`` with the verdict."""
    record, handle = run.record, run.handle
    found = examine(layout, record, task, emit)
    exit_code = handle.returncode if handle else None
    verdict = judge(
        task,
        commits=len(found.commits),
        timed_out=run.timed_out,
        exit_code=exit_code,
        timeout_secs=config.worker_timeout_secs,
        max_retries=config.max_worker_retries,
        auto_merge=config.auto_merge_worktrees,
        log_path=record.log,
        accidental=found.accidental,
    )
    exited_at = handle.exited_at if handle and handle.exited_at else time.time()
    emit(
        "finish",
        slot=record.slot,
        task=record.task_id,
        commits=len(found.commits),
        exit_code=exit_code,
        timed_out=run.timed_out,
        exited_at=exited_at,
        secs=round(exited_at - record.started_at, 3),
        outcome=verdict.outcome,
        reason=verdict.reason,
    )
    return verdict


def examine(layout: Layout, record: RunRecord, task: Task, emit: Emit) -> Findings:
    """Make the attempt's branch honest (see the module docstring) and say what it holds.

    This runs between a worker's exit and the next start in its slot, so one diff of the
    branch answers every question about its files (``gitops.changed_files``).
    """
    changes = gitops.changed_files(layout.repo, record.start_commit, record.branch)
    for path in drop_state_files(layout, record, changes, emit):
        del changes[path]  # the drop commit made it what it was at the start again
    commits = collect_commits(layout.repo, record)
    if record.kind == "conflict":  # its worker's merge may have been committed only now
        net_change = gitops.has_net_change(layout.repo, record.start_commit, record.branch)
    else:
        net_change = bool(changes)
    if not commits or not net_change:  # commits that change nothing (state files) are no work
        return Findings(commits=[], accidental=[])
    found = []
    if task.kind != "conflict":  # as in find_accidental_files: its branch has the base's too
        found = accidental_files([p for p, status in changes.items() if status == "A"], task.files)
    return Findings(commits=commits, accidental=report_accidental(record, task, found, emit))


def collect_commits(repo: Path, record: RunRecord) -> list[str]:
    """The attempt's commits, after committing the merge a conflict task's worker resolved."""
    worktree = Path(record.worktree)
    if record.kind == "conflict" and gitops.finish_merge(worktree):
        log.info("task %s: committed the merge its worker resolved", record.task_id)
    return gitops.commits_between(repo, record.start_commit, record.branch)


def find_accidental(repo: Path, record: RunRecord, task: Task, emit: Emit) -> list[str]:
    """New files whose names look like a model's sentences (asking git which files the
    branch added); see :func:`report_accidental`."""
    found = find_accidental_files(repo, record.start_commit, record.branch, task)
    return report_accidental(record, task, found, emit)


def report_accidental(record: RunRecord, task: Task, found: list[str], emit: Emit) -> list[str]:
    """Accidental files are logged, and they block the merge (the judge makes the attempt a
    failed one)."""
    if found:
        emit("accidental_files", task=task.id, branch=record.branch, files=found)
    return found


def drop_state_files(
    layout: Layout, record: RunRecord, changes: dict[str, str], emit: Emit
) -> list[str]:
    """Take the dispatcher's state files out of the attempt's branch, so the protected-path
    gate does not refuse the task's real work for them. ``changes``: what the branch changed
    since its start (``gitops.changed_files``). Returns the paths dropped."""
    changed = [path for path in layout.state_files() if path in changes]
    try:
        dropped = gitops.drop_state_files(Path(record.worktree), record.start_commit, changed)
    except DispatchError as exc:
        # The branch still holds them; the merge queue's path gate refuses it, plainly.
        log.warning("task %s: could not untrack state files: %s", record.task_id, exc)
        return []
    if dropped:
        emit("state_files_dropped", task=record.task_id, files=dropped)
    return dropped
