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

from localdispatch.config import Config
from localdispatch.dispatch.aider_output import give_up_in_log
from localdispatch.dispatch.state import RunRecord
from localdispatch.dispatch.verdict import (
    Verdict,
    accidental_files,
    find_accidental_files,
    judge,
)
from localdispatch.errors import DispatchError
from localdispatch.git import branches
from localdispatch.git.clones import TamperedClone, clone_at
from localdispatch.layout import Layout
from localdispatch.processes.supervisor import WorkerHandle
from localdispatch.tasks import Task

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
    killer: threading.Thread | None = None
    overruled: str | None = None  # the status a person set while it ran


@dataclass(frozen=True)
class Findings:
    """What a finished attempt left: the commits that count as work (now also in the user's
    repository), the accidental files they added, and a refusal that makes the attempt a
    failed one whatever it committed (a tampered slot)."""

    commits: list[str]
    accidental: list[str]
    refusal: str | None = None


@dataclass(frozen=True)
class Ending:
    """How the worker process ended; unknown (the defaults) for an attempt a crash cut off."""

    exit_code: int | None = None
    timed_out: bool = False


def judge_finished(
    config: Config, layout: Layout, run: ActiveRun, task: Task, emit: Emit
) -> Verdict:
    """Judge an attempt whose worker has exited; emits ``finish`` with the verdict."""
    record, handle = run.record, run.handle
    found = findings_of(layout, record, task, emit)
    exit_code = handle.returncode if handle else None
    verdict = verdict_for(config, record, task, found, emit, Ending(exit_code, run.timed_out))
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


def verdict_for(
    config: Config,
    record: RunRecord,
    task: Task,
    found: Findings,
    emit: Emit,
    ending: Ending = Ending(),
) -> Verdict:
    """The one judgement of an attempt's findings, for a live attempt and for one a crash
    cut off alike: its commits, its accidental files, a refusal, and Aider's own words."""
    refusal = found.refusal
    if refusal is None and config.worker_backend == "aider":
        # Aider's own words about why it stopped count even if it committed: code it left
        # with lint errors, or half-applied edits, is not the task done.
        gave_up = give_up_in_log(record.log)
        if gave_up is not None:
            refusal = gave_up.cause
            emit("gave_up", task=task.id, kind=gave_up.kind, cause=gave_up.cause)
    return judge(
        task,
        commits=len(found.commits),
        timed_out=ending.timed_out,
        exit_code=ending.exit_code,
        timeout_secs=config.worker_timeout_secs,
        max_retries=config.max_worker_retries,
        auto_merge=config.auto_merge_worktrees,
        log_path=record.log,
        accidental=found.accidental,
        refusal=refusal,
    )


def findings_of(layout: Layout, record: RunRecord, task: Task, emit: Emit) -> Findings:
    """What an attempt left, wherever it is: in its slot (examined, then published), or, for
    one already sent to the merge queue, on its branch in the user's repository (its slot
    may have been reused since)."""
    if record.phase == "running" and Path(record.worktree).exists():
        return examine(layout, record, task, emit)
    commits = branches.commits_between(layout.repo, record.start_commit, record.branch)
    accidental = find_accidental_files(layout.repo, record.start_commit, record.branch, task)
    return Findings(commits, report_accidental(record, task, accidental, emit))


def examine(layout: Layout, record: RunRecord, task: Task, emit: Emit) -> Findings:
    """Make the attempt's branch honest (see the module docstring), bring it into the user's
    repository if it holds work, and say what it holds.

    Everything up to the fetch happens in the slot's own repository, after checking that the
    worker left it safe to use (``PrivateClone.secure``). This runs between a worker's exit
    and the next start in its slot, so one diff answers every question about its files.
    """
    clone = clone_at(layout.repo, Path(record.worktree))
    try:
        clone.secure()
    except TamperedClone as exc:
        emit("tampered", task=task.id, slot=record.slot, reason=str(exc))
        return Findings(commits=[], accidental=[], refusal=f"{exc} {exc.hint}")
    tree = clone.path
    if record.kind == "conflict" and branches.finish_merge(tree):
        log.info("task %s: committed the merge its worker resolved", record.task_id)
    changes = branches.changed_files(tree, record.start_commit, record.branch)
    for path in drop_state_files(layout, record, changes, emit):
        del changes[path]  # the drop commit made it what it was at the start again
    commits = branches.commits_between(tree, record.start_commit, record.branch)
    if not commits or not changes:  # commits that change nothing (state files) are no work
        return Findings(commits=[], accidental=[])
    branches.publish_branch(
        clone,
        record.branch,
        record.start_commit,
        force=record.kind != "conflict",
        tip=commits[0],  # rev-list lists the newest first
    )
    found = []
    if task.kind != "conflict":  # as in find_accidental_files: its branch has the base's too
        found = accidental_files([p for p, status in changes.items() if status == "A"], task.files)
    return Findings(commits=commits, accidental=report_accidental(record, task, found, emit))


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
    since its start (``branches.changed_files``). Returns the paths dropped."""
    changed = [path for path in layout.state_files() if path in changes]
    try:
        dropped = branches.drop_state_files(Path(record.worktree), record.start_commit, changed)
    except DispatchError as exc:
        # The branch still holds them; the merge queue's path gate refuses it, plainly.
        log.warning("task %s: could not untrack state files: %s", record.task_id, exc)
        return []
    if dropped:
        emit("state_files_dropped", task=record.task_id, files=dropped)
    return dropped
