"""The merge queue: finished branches land in the base branch one at a time, safely.

One merge, under the merge slot (a ``filelock`` lock in .dispatch/locks that the operating
system releases if its holder dies):

1. read the tips of the base branch and the task branch;
2. merge the branch into the base tip in the integration tree (.dispatch/integration, a private
   clone with a detached HEAD; never the user's checkout). A conflict is aborted and checked
   away; with ``on_conflict: "auto_rebase"`` a rebase is tried first; otherwise a conflict
   task is created and the branch waits in pending_merges.json;
3. the gates on exactly what would land, base tip against merge (``gates.py``): protected
   paths and state files, a .gitignore that would expose state, the sanity gate;
4. test gate on the merged tree; then the merge commit is fetched into the user's repository
   (nothing of an unapproved merge ever is);
5. move the base branch from the old tip to the merge, as a compare-and-swap. If a checkout
   that is not ours has the base branch checked out, the move is ``git merge --ff-only`` *in
   that checkout*: git moves the branch and the files together and refuses when a local
   change, an untracked or an ignored file would be overwritten; the merge then waits and
   says which files. If the base moved meanwhile (the user committed), the merge is redone;
6. records: the task is done with its merged commit, the branch deleted, the events logged.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from localdispatch.config import Config
from localdispatch.errors import DispatchError, GitError, TaskNotFound
from localdispatch.events import EventLog
from localdispatch.git.clones import TamperedClone
from localdispatch.git.commands import commit_args, run_git
from localdispatch.layout import Layout, ensure_state_ignored, protected_patterns
from localdispatch.merge.gates import PathGate, refusal, state_samples
from localdispatch.merge.integration import (
    Advance,
    IntegrationTree,
    Worktree,
    advance,
    checked_out,
    foreign_lock,
    list_worktrees,
    lock_steps,
)
from localdispatch.merge.pending import (
    MergeOutcome,
    MergeRecords,
    PendingMerge,
    Step,
    merge_state_of,
    next_step,
    resolve_steps,
    tested_merge,
)
from localdispatch.merge.sanity import ParserProcess
from localdispatch.merge.test_command import GateResult
from localdispatch.statefile import StateLock
from localdispatch.store import TaskStore
from localdispatch.tasks import Task, by_id, now_iso

log = logging.getLogger(__name__)

MAX_BASE_RACES = 5

# ---- the queue -----------------------------------------------------------------------------


class MergeQueue:
    """Merges finished task branches into ``config.branch``, one at a time.

    Outcomes (of ``merge`` and of ``retry_pending``):

    - ``merged``: the base moved to ``commit``; the task is done with ``merged_commit``.
    - ``conflict``: nothing moved; a conflict task ``conflict_task_id`` was created, the task
      stays in_progress and its branch waits until that task is closed.
    - ``rejected``: the path gate or the test gate refused the branch; the task's status is
      unchanged and the caller counts it as a failed attempt. ``message`` says why.
    - ``waiting``: the base cannot move yet (``message`` says why); the merge is retried by
      ``retry_pending`` and the task stays in_progress.
    - ``failed``: the task was marked failed (merges exhausted, branch gone, ...).
    """

    def __init__(self, config: Config, layout: Layout, store: TaskStore, events: EventLog) -> None:
        self.config = config
        self.layout = layout
        self.store = store
        self.events = events
        self.base = config.branch
        self.state = merge_state_of(layout)
        self.records = MergeRecords(config, store, events, self.state)
        self.path_gate = PathGate(protected_patterns(config, layout))
        self.state_samples = state_samples(layout.ignore_patterns())
        # Long enough to wait behind the longest merge another process may be doing.
        self.slot_timeout = config.test_timeout_secs + 120.0
        self.slot_path = layout.merge_slot_lock
        self.integration_path = layout.integration
        self._slot_lock = StateLock(self.slot_path, what="the merge slot")
        self._thread_lock = threading.RLock()
        self._tree: IntegrationTree | None = None
        # The sanity gate's parser child, kept from merge to merge (it exits with us: its
        # input closes).
        self._parsers = ParserProcess()

    # -- the interface the dispatcher uses -------------------------------------------------
    def merge(self, task: Task, branch: str) -> MergeOutcome:
        """Merge ``branch`` (the work of ``task``) into the base branch."""
        log.info("task %s: merging %s into %s", task.id, branch, self.base)
        with self.slot() as held:
            if not held:
                reason = f"the merge slot {self.slot_path} stayed busy (another merge is running)"
                return self.records.waiting(task, branch, reason)
            with self.state.edit() as book:
                # The journal entry: a crash from here on leaves the task pending, not lost.
                book.put(PendingMerge(task.id, branch, "merging", "merging", now_iso()))
            return self._guarded(task, branch, None)

    def retry_pending(self) -> list[MergeOutcome]:
        """Move every pending merge on as far as it can go; called every dispatcher tick.

        Returns the outcomes that changed something (a merge still waiting for the same
        reason is not repeated).
        """
        book = self.state.read()
        if not book.pending and not book.delete_later:
            return []
        plan = self._plan()
        if not book.delete_later and not any(s.action != "skip" or e.person for e, s in plan):
            return []
        outcomes: list[MergeOutcome] = []
        with self.slot() as held:
            if not held:
                return []
            for entry, step in self._plan():  # again: another process may have moved on
                outcome = self._act(entry, step)
                if outcome is not None:
                    outcomes.append(outcome)
            self._delete_deferred()
        return outcomes

    def pending_task_ids(self) -> set[str]:
        """Tasks whose branch waits in the queue; they stay in_progress meanwhile."""
        return {entry.task for entry in self.state.read().pending}

    def pending(self) -> list[dict[str, object]]:
        """Pending merges for ``--status``: task, branch, state, reason, since, ..."""
        return [entry.public() for entry in self.state.read().pending]

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Hold the merge slot; yields False if another process kept it past slot_timeout."""
        with self._thread_lock:
            if not self.config.merge_slot:
                yield True
                return
            with self._slot_lock.attempt(self.slot_timeout) as held:
                if not held:
                    log.warning("merge slot %s busy for %.0f s", self.slot_path, self.slot_timeout)
                yield held

    # -- one merge -------------------------------------------------------------------------
    def _guarded(self, task: Task, branch: str, resume: PendingMerge | None) -> MergeOutcome:
        """Land the branch; an unexpected git failure leaves it waiting, never lost."""
        started = time.perf_counter()
        try:
            outcome = self._land(task, branch, resume)
        except (DispatchError, OSError, subprocess.SubprocessError) as exc:
            log.error("task %s: merging %s failed: %s", task.id, branch, exc)
            self.events.emit("merge_error", task=task.id, branch=branch, error=str(exc))
            if self._tree is not None:
                self._tree.forget()
            lock = foreign_lock(str(exc))
            steps = (
                lock_steps(lock, self.layout.repo)
                if lock
                else [f"fix what the error says, then run the dispatcher again ({exc})"]
            )
            reason = f"the merge stopped on an error: {exc}"
            outcome = self.records.waiting(task, branch, reason, steps=steps)
        log.info(
            "task %s: %s %s in %.0f ms",
            task.id,
            branch,
            outcome.status,
            (time.perf_counter() - started) * 1000,
        )
        return outcome

    def _land(self, task: Task, branch: str, resume: PendingMerge | None) -> MergeOutcome:
        for _ in range(MAX_BASE_RACES):
            base_sha, branch_sha = self._tips(branch)
            if branch_sha is None:
                return self.records.failed(task, branch, f"its branch {branch} no longer exists")
            reuse = tested_merge(resume, base_sha, branch_sha)
            made = (
                (reuse, branch_sha, "") if reuse else self._make(task, branch, base_sha, branch_sha)
            )
            if isinstance(made, MergeOutcome):
                return made
            merged, branch_sha, note = made
            if self._overruled(task):
                return self.records.dropped_by_user(task, branch)
            advance = self._advance(base_sha, merged)
            if advance.base_moved:
                resume = None  # the user committed meanwhile: merge onto the new tip
                continue
            if not advance.moved:
                shas = (base_sha, branch_sha, merged)
                why = advance.reason
                return self.records.waiting(task, branch, why, *shas, steps=advance.steps)
            return self._finish(task, branch, merged, branch_sha, list(advance.trees), note)
        return self.records.waiting(
            task, branch, f"{self.base} kept moving during {MAX_BASE_RACES} tries"
        )

    def _overruled(self, task: Task) -> bool:
        """Whether a person closed, cancelled or reopened the task since its merge began:
        their word wins, so nothing of it lands."""
        try:
            return self.store.get(task.id).status != "in_progress"
        except TaskNotFound:
            return True

    def _make(
        self, task: Task, branch: str, base_sha: str, branch_sha: str
    ) -> tuple[str, str, str] | MergeOutcome:
        """Merge (or rebase), the gates on what would land, the test gate, and only then
        the merge into the user's repository: (merge commit, branch tip, note) or the end."""
        made = self._merge_or_rebase(task, branch, base_sha, branch_sha)
        if isinstance(made, MergeOutcome):
            return made
        merged, rebased_tip, note = made
        if merged == base_sha:  # already merged: nothing to judge
            return merged, branch_sha, note
        assert self._tree is not None
        why = refusal(
            self._tree.path,
            base_sha,
            merged,
            path_gate=self.path_gate,
            samples=self.state_samples,
            sanity=self.config.sanity_gate,
            parsers=self._parsers,
        )
        if why is not None:
            return self.records.rejected(task, branch, why)
        gate = self._run_gate(task, branch, merged)
        if gate is not None:
            try:
                self._tree.check_after_untrusted()
            except TamperedClone as exc:
                return self.records.rejected(task, branch, f"its test run tampered with git: {exc}")
            if not gate.passed:
                tail = f"\nEnd of the test output ({gate.log_path}):\n{gate.tail}"
                return self.records.rejected(task, branch, gate.summary, detail=tail)
        self._tree.publish(merged, base_sha, branch_sha)
        if rebased_tip is not None:
            branch_sha = self._point_branch(branch, branch_sha, rebased_tip)
        return merged, branch_sha, note

    def _tips(self, branch: str) -> tuple[str, str | None]:
        base_ref, branch_ref = f"refs/heads/{self.base}", f"refs/heads/{branch}"
        out = run_git(
            ["for-each-ref", "--format=%(objectname) %(refname)", base_ref, branch_ref],
            self.layout.repo,
        ).stdout
        tips: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition(" ")
            tips[ref] = sha
        if base_ref not in tips:
            raise GitError(
                f"The base branch {self.base!r} does not exist in {self.layout.repo}.",
                hint='Create it, or set "branch" in dispatch_config.json to the right one.',
                key="branch",
            )
        return tips[base_ref], tips.get(branch_ref)

    def _advance(self, old: str, new: str) -> Advance:
        journal = self.layout.checkout_journal
        return advance(self.layout.repo, self.base, old, new, self.integration_path, journal)

    def _integration(self, base_sha: str) -> IntegrationTree:
        if self._tree is None:
            ensure_state_ignored(self.layout)
            git_args = ["-c", "rerere.enabled=false", *commit_args(self.layout.repo)]
            self._tree = IntegrationTree(
                self.layout.repo, self.integration_path, git_args, self.layout.ignore_patterns()
            )
        self._tree.ensure(base_sha)
        return self._tree

    def _merge_or_rebase(
        self, task: Task, branch: str, base_sha: str, branch_sha: str
    ) -> tuple[str, str | None, str] | MergeOutcome:
        """(merge commit, rebased branch tip or None, note) or the outcome that ends it."""
        tree = self._integration(base_sha)
        tree.reset(base_sha)
        message = f"Merge {branch} ({task.id}: {task.title[:60]})"
        step = tree.merge(branch_sha, message, base_sha)
        if step.error is not None:
            # Blame the branch only once a freshly reset and cleaned tree fails the same way.
            tree.forget()
            tree.reset(base_sha)
            step = tree.merge(branch_sha, message, base_sha)
        if step.head is not None:
            return step.head, None, ""
        if step.error is not None:
            return self.records.rejected(
                task, branch, f"git could not merge {branch}: {step.error}"
            )
        if self.config.on_conflict == "auto_rebase":
            rebased = self._rebase(tree, task, branch, base_sha, branch_sha, message)
            if rebased is not None:
                return rebased
        return self.records.conflict(task, branch, base_sha, branch_sha, step.conflicts)

    def _rebase(
        self,
        tree: IntegrationTree,
        task: Task,
        branch: str,
        base_sha: str,
        branch_sha: str,
        message: str,
    ) -> tuple[str, str | None, str] | None:
        new_tip = tree.rebase(branch_sha, base_sha)
        ok = new_tip is not None
        self.events.emit("merge_rebase", task=task.id, branch=branch, ok=ok, base_commit=base_sha)
        if new_tip is None:
            log.info("task %s: rebasing %s onto %s conflicts too", task.id, branch, self.base)
            return None
        tree.reset(base_sha)
        step = tree.merge(new_tip, message, base_sha)
        if step.head is None:
            return None
        return step.head, new_tip, f" after rebasing it onto {base_sha[:12]}"

    def _point_branch(self, branch: str, old: str, new: str) -> str:
        """Point the branch at its rebased commits (published with the merge) so it reads as
        merged; a branch that a worktree has checked out is left alone (moving it would dirty
        that worktree). Returns where the branch now is."""
        if checked_out(branch, list_worktrees(self.layout.repo)):
            return old
        cas = ["update-ref", f"refs/heads/{branch}", new, old]
        return new if run_git(cas, self.layout.repo, check=False).returncode == 0 else old

    def _run_gate(self, task: Task, branch: str, merged: str) -> GateResult | None:
        argv = self.config.test_argv()
        if not argv:
            return None
        assert self._tree is not None
        log_path = self.layout.test_log(task.id)
        gate = self._tree.run_gate(argv, self.config.test_timeout_secs, log_path)
        self.events.emit(
            "test_gate",
            task=task.id,
            branch=branch,
            commit=merged,
            passed=gate.passed,
            exit_code=gate.exit_code,
            timed_out=gate.timed_out,
            seconds=round(gate.seconds, 3),
            log=str(gate.log_path),
        )
        return gate

    def _finish(
        self,
        task: Task,
        branch: str,
        commit: str,
        branch_sha: str,
        trees: list[Worktree],
        note: str,
    ) -> MergeOutcome:
        defer = self.config.delete_merged_branches and checked_out(branch, trees)
        outcome = self.records.merged(task, branch, commit, branch_sha, note, defer)
        if self.config.delete_merged_branches and not defer:
            self._delete_branch(branch, branch_sha)
        return outcome

    def _delete_branch(self, branch: str, sha: str) -> None:
        # Compare-and-swap: a branch that moved since (new commits) is kept.
        ref = f"refs/heads/{branch}"
        if run_git(["update-ref", "-d", ref, sha], self.layout.repo, check=False).returncode:
            log.info("kept branch %s: it moved after it was merged", branch)

    # -- pending merges --------------------------------------------------------------------
    def _plan(self) -> list[tuple[PendingMerge, Step]]:
        book = self.state.read()
        index = by_id(self.store.all())
        auto = self.config.auto_retry_merge_on_conflict_close
        return [
            (
                entry,
                next_step(entry, index.get(entry.task), index.get(entry.conflict_task or ""), auto),
            )
            for entry in sorted(book.pending, key=lambda e: e.since)
        ]

    def _act(self, entry: PendingMerge, step: Step) -> MergeOutcome | None:
        if step.action == "skip":
            if entry.person:  # its conflict task went back to a worker
                self.records.set_person(entry, None)
            return None
        if step.action == "drop":
            self.records.dropped(entry, step.reason)
            return None
        task = self.store.get(entry.task)
        if step.action == "fail":
            return self.records.failed(task, entry.branch, step.reason)
        if step.action == "create_task":
            conflict = self.records.conflict_task(task, entry)
            return MergeOutcome(
                task.id, entry.branch, "conflict", entry.reason, conflict_task_id=conflict.id
            )
        if step.action == "check_merged":
            return self._merged_by_hand(task, entry)
        if step.action == "person":
            steps = resolve_steps(entry, entry.conflict_task or "", self.base)
            self.records.set_person(entry, step.reason, steps)
            return None
        if entry.state == "conflict":
            self.events.emit(
                "merge_retry", task=task.id, branch=entry.branch, conflict_task=entry.conflict_task
            )
        outcome = self._guarded(task, entry.branch, entry)
        unchanged = entry.state == "waiting" and outcome.status == "waiting"
        return None if unchanged and outcome.message == entry.reason else outcome

    def _merged_by_hand(self, task: Task, entry: PendingMerge) -> MergeOutcome | None:
        """auto_retry off: the conflict task is closed; done once a person merged the branch."""
        base_sha, branch_sha = self._tips(entry.branch)
        tip = branch_sha or entry.branch_commit
        if tip is None:
            return None
        ancestor = run_git(
            ["merge-base", "--is-ancestor", tip, base_sha], self.layout.repo, check=False
        )
        if ancestor.returncode != 0:
            return None
        return self._finish(
            task, entry.branch, base_sha, tip, list_worktrees(self.layout.repo), " (merged by hand)"
        )

    def _delete_deferred(self) -> None:
        if not self.state.read().delete_later:
            return
        trees = list_worktrees(self.layout.repo)
        with self.state.edit() as book:
            for branch, sha in list(book.delete_later.items()):
                if not checked_out(branch, trees):
                    self._delete_branch(branch, sha)
                    del book.delete_later[branch]
