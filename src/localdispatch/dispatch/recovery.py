"""Crash recovery: settle what an earlier dispatcher left before this one starts any work.

state.json names every attempt the earlier dispatcher watched. Its workers are killed (matched
by pid *and* creation time, and by the environment marker every worker's descendants
inherit), the work they committed is judged like any finished attempt, and the rest goes back
to open: no task is lost, none runs twice at once, and no commit is thrown away. The
dispatcher drives the steps (it owns the merges a verdict may start); this module does them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import psutil

from localdispatch.config import Config
from localdispatch.dispatch.attempt import Emit, findings_of, verdict_for
from localdispatch.dispatch.state import RunRecord
from localdispatch.dispatch.verdict import (
    Verdict,
)
from localdispatch.errors import DispatchError
from localdispatch.events import EventLog
from localdispatch.git import branches
from localdispatch.git.clones import remove_stale_locks
from localdispatch.layout import Layout
from localdispatch.merge import checkout_journal
from localdispatch.merge.queue import MergeQueue
from localdispatch.processes.supervisor import repo_marker
from localdispatch.processes.trees import (
    MARKER_ENV,
    ProcessKey,
    find_process,
    kill_tree,
    marked_processes,
)
from localdispatch.statefile import StateLock
from localdispatch.store import TaskStore
from localdispatch.tasks import Task


def _is_gate(proc: psutil.Process) -> bool:
    try:
        return "/gate/" in proc.environ().get(MARKER_ENV, "")
    except (psutil.Error, OSError):
        return False


class Recovery:
    """One recovery, at start-up, while the dispatcher lock is held."""

    def __init__(
        self, config: Config, layout: Layout, store: TaskStore, events: EventLog, emit: Emit
    ) -> None:
        self.config, self.layout, self.store = config, layout, store
        self.events, self.emit = events, emit

    def kill_leftovers(self, records: list[RunRecord]) -> None:
        """Kill the earlier run's workers: first each recorded tree, then any process that
        still carries this repository's worker marker (a grandchild that outlived its
        parent, or a worker started after the last save of state.json)."""
        grace = self.config.worker_kill_grace_secs
        for record in records:
            if record.pid is None or record.create_time is None:
                continue
            proc = find_process(ProcessKey(record.pid, record.create_time))
            if proc is not None:
                pids = kill_tree(proc, grace=grace, marker=record.marker)
                self.emit(
                    "kill",
                    task=record.task_id,
                    pid=record.pid,
                    pids=pids,
                    reason="left running by an earlier dispatcher",
                )
        strays = marked_processes(repo_marker(self.layout.repo))
        gates = [proc for proc in strays if _is_gate(proc)]
        if gates and not self._merge_slot_free():
            strays = [proc for proc in strays if proc not in gates]  # a live merge's gate
        if strays:
            pids = kill_tree(None, grace=grace, known=strays)
            self.emit("kill", pids=pids, reason="worker processes of an earlier run")

    def _merge_slot_free(self) -> bool:
        """Whether no process holds the merge slot: then a test gate still running is a
        leftover of a killed run, not the gate of a merge in progress elsewhere."""
        with StateLock(self.layout.merge_slot_lock, what="the merge slot").attempt() as free:
            return free

    def clear_stale_locks(self) -> None:
        """git lock files that the killed run left in the trees it owns (slots, integration):
        with its processes gone, nothing can hold them, and git would refuse to work there."""
        pattern = re.compile(re.escape(self.layout.worktree_prefix) + r"\d+")
        trees = [self.layout.integration]
        if self.layout.worktrees.is_dir():
            trees += [p for p in self.layout.worktrees.iterdir() if pattern.fullmatch(p.name)]
        for tree in trees:
            git_dir = tree / ".git"
            if git_dir.is_dir() and not git_dir.is_symlink():
                removed = remove_stale_locks(git_dir)
                if removed:
                    self.emit("stale_lock_removed", paths=removed, reason="left by a killed run")

    def settle_checkout_update(self) -> None:
        """An update of the user's checkout that the crash cut off: finish it, or say why not."""
        settled = checkout_journal.settle(self.layout.checkout_journal, self.layout.repo)
        if settled.removed:
            self.emit("stale_lock_removed", paths=list(settled.removed), reason="ours")
        if settled.state == "finished":
            self.emit("checkout_update_finished", reason="interrupted by a crash")
        elif settled.state == "person":
            self.emit("checkout_update_stuck", reason=settled.reason, steps=list(settled.steps))

    def pending_task_ids(self) -> set[str]:
        """Tasks waiting in the merge queue: theirs are settled by the queue, not here."""
        merge_queue = MergeQueue(self.config, self.layout, self.store, self.events)
        return set(merge_queue.pending_task_ids())

    def settle(self, record: RunRecord, task: Task) -> Verdict | None:
        """Judge an attempt the earlier run left exactly as a finished one is judged
        (``attempt.verdict_for``); None when it left no work and went back to open."""
        try:
            found = findings_of(self.layout, record, task, self.emit)
        except DispatchError as exc:  # a slot git cannot read: its work is lost, not us
            self.put_back(task, f"interrupted; its slot could not be read: {exc}")
            return None
        if not found.commits and not found.refusal:
            self.put_back(task, "interrupted: the dispatcher stopped while it ran")
            return None
        verdict = verdict_for(self.config, record, task, found, self.emit)
        self.emit(
            "recovered",
            task=task.id,
            branch=record.branch,
            commits=len(found.commits),
            outcome=verdict.outcome,
        )
        return verdict

    def put_back_orphans(self, known: set[str]) -> None:
        """Tasks left in progress that no record (and no pending merge) accounts for."""
        for task in self.store.all():
            if task.status == "in_progress" and task.id not in known:
                self.put_back(task, "orphaned: in progress, but no worker was running it")

    def put_back(self, task: Task, reason: str) -> None:
        self.store.update(task.id, status="open", closed_reason=reason)
        self.emit("requeue", task=task.id, attempts=task.attempts, reason=reason)

    def cleanup_git(self, merging: Iterable[str]) -> None:
        """Delete fully merged task branches, keeping the branches of open and running tasks
        and of those being merged."""
        keep = {
            t.branch for t in self.store.all() if t.branch and t.status in ("open", "in_progress")
        }
        report = branches.cleanup_stale(self.layout.repo, keep | set(merging), self.config.branch)
        if any(report.values()):
            self.emit("cleanup", **report)
