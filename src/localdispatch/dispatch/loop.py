"""The dispatcher: keep ``num_workers`` workers busy until the work is done, and survive crashes.

One loop on the main thread owns every decision. Worker exits, merge outcomes and Ctrl+C
arrive on one queue as typed wake-ups (``wakeups.py``), posted the moment they happen, so a
free slot is refilled within milliseconds instead of at the next poll. Merges run on a thread
of their own, because a merge (and its test gate) must never hold a slot empty.

What runs where is kept in ``.dispatch/state.json`` (written atomically after every change).
A dispatcher started after a crash kills the previous run's workers (matched by pid *and*
creation time, and by the environment marker every worker's descendants inherit), merges the
work they had committed, and puts the rest back to open: no task is lost, none runs twice at
once, and no commit is thrown away (``recovery.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from localdispatch import processes
from localdispatch.config import Config
from localdispatch.dispatch.attempt import ActiveRun, examine, judge_finished
from localdispatch.dispatch.merger import MergeJob, MergeRunner, RetryJob
from localdispatch.dispatch.model_watch import ModelWatch
from localdispatch.dispatch.recovery import Recovery
from localdispatch.dispatch.scheduling import pick_next
from localdispatch.dispatch.state import RunRecord, StateFile, dispatcher_lock
from localdispatch.dispatch.summary import RunSummary, statuses, tally
from localdispatch.dispatch.verdict import (
    Verdict,
    retry_or_fail,
)
from localdispatch.dispatch.views import pending_merges
from localdispatch.dispatch.wakeups import (
    Interrupted,
    MergeDone,
    RetryDone,
    WakeQueue,
    Wakeup,
    WorkerExited,
    WorkerKilled,
    unhandled,
)
from localdispatch.dispatch.worker import (
    check_worker_program,
    launch_attempt,
    model_server_problem,
)
from localdispatch.errors import DispatchError, TaskNotFound
from localdispatch.events import EventLog
from localdispatch.git import branches
from localdispatch.layout import Layout, ensure_state_ignored
from localdispatch.processes.supervisor import WorkerHandle
from localdispatch.store import TaskStore, open_store
from localdispatch.suggestions.feed import SuggestionFeed
from localdispatch.tasks import Task

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, Any]], None]

# How often merges that wait for a person are tried again (a person may have committed or
# removed a lock file): often enough to notice soon, rarely enough to cost nothing.
PERSON_RECHECK_SECS = 2.0


class Dispatcher:
    """Runs the loop; see the module docstring. Only ``interrupt`` may be called from a
    signal handler or another thread."""

    def __init__(
        self,
        config: Config,
        layout: Layout,
        store: TaskStore | None = None,
        *,
        workers: int | None = None,
        max_tasks: int | None = None,
        until_idle: bool = False,
        reporter: Reporter | None = None,
    ) -> None:
        self.config, self.layout = config, layout
        self.store = store or open_store(config, layout)
        self.events = EventLog(layout.events)
        self.slots = max(1, workers or config.num_workers)
        self.max_tasks, self.until_idle = max_tasks, until_idle
        self.reporter = reporter
        self.summary = RunSummary()
        self._before: dict[str, str] = {}
        self._watch = ModelWatch(
            lambda: model_server_problem(config, layout),
            enabled=config.worker_backend == "aider",
        )
        self.state = StateFile(layout)
        self._wake: WakeQueue = queue.Queue()
        self._runs: dict[int, ActiveRun] = {}
        self._merging: dict[str, ActiveRun] = {}
        self._merger: MergeRunner | None = None
        self._interrupts = 0
        self._last_retry = 0.0
        # Every change that could let a pending merge move on bumps the generation; idle
        # means the merge queue answered "nothing to do" for the current generation.
        self._generation = 0
        self._settled: int | None = None
        self._feed = SuggestionFeed(config, layout, self.store)

    # ---- public ---------------------------------------------------------------------------
    def interrupt(self) -> int:
        """Ctrl+C: the first stops new work, the second kills the workers. Thread-safe."""
        self._interrupts += 1
        self._wake.put(Interrupted())
        return self._interrupts

    def run(self) -> RunSummary:
        """Run until idle (or interrupted); the summary says what is left for a person and
        carries the exit status (``RunSummary.exit_code``)."""
        branches.check_repository(self.layout.repo, self.config.branch)
        check_worker_program(self.config)
        with dispatcher_lock(self.layout):
            ensure_state_ignored(self.layout)
            self._before = statuses(self.store.all())
            self.state.claim_owner()
            clean = False
            try:
                self._recover()
                self._check_model_server()
                self._loop()
                clean = True
            finally:
                self._shutdown(clean)
        tally(self.summary, self._before, self.store.all(), self._pending())
        if self._watch.down and not self.summary.interrupted:
            self.summary.model_server = self._watch.down
        return self.summary

    # ---- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        timeout = 0.0  # the first pass starts work at once instead of after a poll interval
        while True:
            self._drain(timeout)
            timeout = self._wait_timeout()
            if self._interrupts >= 2:
                self.summary.interrupted = True
                return
            self._check_timeouts()
            self._check_overruled()
            processes.sweep()  # orphans that left a worker's tree and dropped their marker
            self._maybe_ingest()
            self._maybe_retry_pending()
            if self._interrupts == 0 and not self._quota_reached():
                self._fill_slots()
            if self._should_exit():
                self.summary.interrupted = self._interrupts > 0
                return

    def _wait_timeout(self) -> float:
        timeout = self.config.poll_interval_secs
        now = time.monotonic()
        for run in self._runs.values():
            if run.deadline is not None and not run.timed_out:
                timeout = min(timeout, max(0.0, run.deadline - now))
        return timeout

    def _drain(self, timeout: float) -> None:
        """Handle everything that has happened, waiting up to ``timeout`` for the first."""
        try:
            wakeup = self._wake.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(wakeup)
            try:
                wakeup = self._wake.get_nowait()
            except queue.Empty:
                return

    def _handle(self, wakeup: Wakeup) -> None:
        match wakeup:
            case WorkerExited(slot, handle):
                self._worker_ended(slot, handle, killed=False)
            case WorkerKilled(slot, handle):
                self._worker_ended(slot, handle, killed=True)
            case MergeDone():
                self._merge_done(wakeup)
            case RetryDone():
                self._retry_done(wakeup)
            case Interrupted():
                if self._interrupts == 1:  # the second one ends the loop instead
                    self._report("stopping", running=len(self._runs))
            case _:
                unhandled(wakeup)

    def _worker_ended(self, slot: int, handle: WorkerHandle, *, killed: bool) -> None:
        run = self._runs.get(slot)
        if run is None or run.handle is not handle:
            return  # news of an earlier attempt in this slot, already finished
        # After a timeout the tree is gone only when the killer says so.
        if killed or run.killer is None:
            del self._runs[slot]
            self._finish(run)

    def _quota_reached(self) -> bool:
        return self.max_tasks is not None and self.summary.started >= self.max_tasks

    def _should_exit(self) -> bool:
        """--until-idle: exit once nothing can move by itself any more. What is left then
        needs a person (a failed task, a merge waiting for them, a dead model server)."""
        if self._runs or self._merging or (self._merger is not None and self._merger.busy):
            return False
        if self._interrupts or self._quota_reached():
            return True
        if not self.until_idle or self._settled != self._generation:
            return False
        if any(not entry.get("person") for entry in self._pending()):
            return False  # a busy merge slot, a base that moved: it goes on by itself
        return self._watch.down is not None or not pick_next(self.store.all(), [], self.slots)

    def _pending(self) -> Sequence[Mapping[str, object]]:
        return pending_merges(self.layout)

    # ---- starting -------------------------------------------------------------------------
    def _fill_slots(self) -> None:
        free = [slot for slot in range(1, self.slots + 1) if slot not in self._runs]
        if not free or not self._model_server_up():
            return
        tasks = self.store.all()
        index = {task.id: task for task in tasks}
        busy = [
            index[r.task.id]
            for r in [*self._runs.values(), *self._merging.values()]
            if r.task.id in index
        ]
        for slot, task in zip(free, pick_next(tasks, busy, len(free)), strict=False):
            if self._quota_reached():
                return
            self._start(slot, task)

    def _start(self, slot: int, task: Task) -> None:
        attempt = task.attempts + 1
        branch = branches.task_branch(task)
        changes: dict[str, int | str] = {"attempts": attempt}
        if task.kind != "conflict":
            changes["branch"] = branch
        claimed = self.store.claim(task.id, **changes)
        if claimed is None:
            return
        try:
            run = self._launch(slot, claimed, branch, attempt)
        except (DispatchError, OSError):
            # Not the task's fault (a missing program, a missing base branch): put it back
            # as it was and stop, since every other task would fail the same way.
            self.store.update(task.id, status="open", attempts=task.attempts)
            raise
        self._runs[slot] = run
        self.summary.started += 1
        self.state.save(self._records())
        self._emit(
            "start",
            slot=slot,
            task=task.id,
            title=task.title,
            branch=branch,
            attempt=attempt,
            pid=run.record.pid,
            log=run.record.log,
            started_at=run.record.started_at,
        )

    def _launch(self, slot: int, task: Task, branch: str, attempt: int) -> ActiveRun:
        record, handle = launch_attempt(
            self.config,
            self.layout,
            slot,
            task,
            branch=branch,
            attempt=attempt,
            on_exit=lambda h: self._wake.put(WorkerExited(slot, h)),
        )
        run = ActiveRun(record=record, task=task, handle=handle)
        if self.config.worker_timeout_secs > 0:
            run.deadline = time.monotonic() + self.config.worker_timeout_secs
        return run

    # ---- finishing ------------------------------------------------------------------------
    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for slot, run in self._runs.items():
            if run.handle is not None:
                run.handle.observe()
            if run.deadline is None or run.timed_out or now < run.deadline:
                continue
            run.timed_out = True
            self._stop(slot, run, f"timeout after {self.config.worker_timeout_secs:g} s")

    def _check_overruled(self) -> None:
        """The user's word wins: a running task that a person cancelled, closed, failed or
        reopened has its worker's whole tree stopped, and nothing of it is merged."""
        for slot, run in self._runs.items():
            if run.killer is not None:
                continue
            task = self._current(run.task.id)
            if task is not None and task.status == "in_progress":
                continue
            run.overruled = task.status if task is not None else "deleted"
            self._stop(slot, run, f"the task is {run.overruled} now (set by a person)")

    def _stop(self, slot: int, run: ActiveRun, reason: str) -> None:
        """Kill the attempt's whole tree on a thread of its own; its exit reaches the loop."""
        self._emit("kill", slot=slot, task=run.task.id, pid=run.record.pid, reason=reason)
        run.killer = threading.Thread(
            target=self._kill_and_report, args=(slot, run), name=f"kill-{slot}", daemon=True
        )
        run.killer.start()

    def _kill_and_report(self, slot: int, run: ActiveRun) -> None:
        assert run.handle is not None
        run.handle.kill(self.config.worker_kill_grace_secs)
        self._wake.put(WorkerKilled(slot, run.handle))

    def _finish(self, run: ActiveRun) -> None:
        """Judge a finished attempt by its commits and act on the verdict."""
        self._generation += 1
        record = run.record
        if run.overruled is not None:  # a person decided: nothing of it is judged or merged
            self._emit("overruled", task=record.task_id, status=run.overruled)
            self.state.save(self._records())
            return
        note = self._feed.harvest(Path(record.worktree), record.task_id)
        if note:
            self._emit("suggestions_refused", task=record.task_id, reason=note)
        task = self._current(record.task_id) or run.task
        try:
            verdict = judge_finished(self.config, self.layout, run, task, self._emit)
        except DispatchError as exc:  # its slot's git failed: the attempt, not the loop, ends
            why = f"its work could not be read from {record.worktree}: {exc}"
            verdict = retry_or_fail(task, why, self.config.max_worker_retries)
        if verdict.outcome in ("retry", "failed") and self._blame_model_server(task, verdict):
            return
        if note:
            verdict = Verdict(verdict.outcome, f"{verdict.reason} (note: {note})")
        self._apply(run, task, verdict)

    # ---- the model server -----------------------------------------------------------------
    def _check_model_server(self) -> None:
        problem = self._watch.check()
        if problem:
            self._emit("model_down", reason=problem)

    def _model_server_up(self) -> bool:
        was_down = self._watch.down
        if self._watch.may_start():
            if was_down:
                self._emit("model_up", reason="the model server answers again")
            return True
        return False

    def _blame_model_server(self, task: Task, verdict: Verdict) -> bool:
        """An attempt without work: if the model server does not answer now, the attempt
        is not counted (the task goes back to open as it was) and no new one starts."""
        was_down = self._watch.down
        problem = self._watch.check()
        if problem is None:
            return False
        self.store.update(
            task.id,
            status="open",
            attempts=max(0, task.attempts - 1),
            closed_reason=f"not counted: {problem}",
        )
        self._emit("requeue", task=task.id, reason=f"not counted: {problem}")
        if not was_down:
            self._emit("model_down", reason=problem)
        self.state.save(self._records())
        return True

    def _apply(self, run: ActiveRun, task: Task, verdict: Verdict) -> None:
        if verdict.outcome == "merge":
            self._send_to_merge(run)
            return
        if verdict.outcome == "done":
            self.store.close(task.id, reason=verdict.reason)
            self._emit("done", task=task.id, branch=run.record.branch, reason=verdict.reason)
        else:
            self._fail(task, verdict)
        self.state.save(self._records())

    def _fail(self, task: Task, verdict: Verdict) -> None:
        if verdict.outcome == "failed":
            self.store.close(task.id, reason=verdict.reason, status="failed")
            self._emit("failed", task=task.id, reason=verdict.reason)
        else:
            self.store.update(task.id, status="open", closed_reason=verdict.reason)
            self.summary.retried += 1
            self._emit("retry", task=task.id, attempts=task.attempts, reason=verdict.reason)

    def _send_to_merge(self, run: ActiveRun) -> None:
        # Submitted before the state is saved: the merge starts at once, and a crash in
        # between leaves the record as "running", which recovery judges the same way.
        merger = self._ensure_merger()
        task = self._current(run.record.task_id) or run.task
        merger.submit(MergeJob(task, run.record.branch))
        run.record.phase = "merging"
        self._merging[run.record.task_id] = run
        self.state.save(self._records())

    def _ensure_merger(self) -> MergeRunner:
        if self._merger is None:
            self._merger = MergeRunner(self.config, self.layout, self._wake)
        return self._merger

    def _merge_done(self, done: MergeDone) -> None:
        task, outcome = done.task, done.outcome
        run = self._merging.pop(task.id, None)
        status, message = _merge_status(done)
        self._emit(
            "merge_outcome",
            task=task.id,
            branch=done.branch,
            status=status,
            message=message,
            commit=outcome.commit if outcome is not None else None,
            done_at=done.done_at,
            conflict_task=outcome.conflict_task_id if outcome is not None else None,
        )
        if status in ("rejected", "error"):
            self._reject(task.id, message)
        self._generation += 1
        if run is not None:
            self.state.save(self._records())

    def _retry_done(self, done: RetryDone) -> None:
        progress = False
        for outcome in done.outcomes:
            self._emit(
                "merge_outcome",
                task=outcome.task_id,
                branch=outcome.branch,
                status=outcome.status,
                message=outcome.message,
                commit=outcome.commit,
                done_at=time.time(),
                retried=True,
            )
            progress = progress or outcome.status != "waiting"
            if outcome.status == "rejected":
                self._reject(outcome.task_id, outcome.message)
        if done.error is not None:
            log.warning("retrying pending merges failed: %s", done.error)
        if progress:
            self._generation += 1
        else:
            self._settled = done.generation

    def _reject(self, task_id: str, message: str) -> None:
        """A merge the queue refused (test gate, protected path): a failed attempt."""
        task = self._current(task_id)
        if task is None or task.status != "in_progress":
            return
        self._fail(
            task, retry_or_fail(task, f"merge rejected: {message}", self.config.max_worker_retries)
        )

    # ---- periodic chores ------------------------------------------------------------------
    def _maybe_retry_pending(self) -> None:
        if not self.config.auto_merge_worktrees:
            self._settled = self._generation
            return
        now = time.monotonic()
        merger = self._ensure_merger()
        # When all is quiet, at once, since the answer decides whether --until-idle is done.
        # Otherwise once per poll interval while a merge can move by itself, and only every
        # few seconds while every waiting merge needs a person: asking git again and again
        # about a lock file only a person can remove would keep the merge thread busy forever.
        quiet = not self._runs and not self._merging and self._settled != self._generation
        pending = self._pending()
        if not quiet and not pending:
            return
        moving = any(not entry.get("person") for entry in pending)
        interval = self.config.poll_interval_secs if moving else PERSON_RECHECK_SECS
        if merger.busy or (not quiet and now - self._last_retry < interval):
            return
        self._last_retry = now
        merger.submit(RetryJob(self._generation))

    def _maybe_ingest(self) -> None:
        added = self._feed.ingest_new()
        if added:
            self._generation += 1
            self._emit("ingest", file=str(self.layout.suggested_tasks), added=added)

    # ---- helpers --------------------------------------------------------------------------
    def _current(self, task_id: str) -> Task | None:
        try:
            return self.store.get(task_id)
        except TaskNotFound:
            return None

    def _records(self) -> list[RunRecord]:
        return [run.record for run in [*self._runs.values(), *self._merging.values()]]

    def _emit(self, event: str, **fields: object) -> None:
        record = self.events.emit(event, **fields)
        if self.reporter is not None:
            self.reporter(record)

    def _report(self, event: str, **fields: object) -> None:
        if self.reporter is not None:
            self.reporter({"event": event, **fields})

    # ---- crash recovery and shutdown --------------------------------------------------------
    def _recover(self) -> None:
        """Settle what a previous run left (see recovery.py): kill its workers, merge their
        committed work, put everything else back to open."""
        records = self.state.load()
        recovery = Recovery(self.config, self.layout, self.store, self.events, self._emit)
        recovery.kill_leftovers(records)
        recovery.clear_stale_locks()
        recovery.settle_checkout_update()
        pending = recovery.pending_task_ids()
        for record in records:
            task = self._current(record.task_id)
            if task is None or task.status != "in_progress" or task.id in pending:
                continue
            verdict = recovery.settle(record, task)
            if verdict is not None:
                self._apply(ActiveRun(record=record, task=task), task, verdict)
        recovery.put_back_orphans({record.task_id for record in records} | pending)
        recovery.cleanup_git(run.record.branch for run in self._merging.values())
        self.state.save(self._records())

    def _shutdown(self, clean: bool) -> None:
        """Leave nothing running. Killed attempts with commits stay recorded for the next run
        to merge; the others go back to open."""
        if self._runs:
            self._abort_runs()
        if self._merger is not None:
            self._merger.stop(wait=30 if clean else 5)
            self._drain(0)
        self.state.save(self._records())
        self.state.release_owner()

    def _abort_runs(self) -> None:
        grace = self.config.worker_kill_grace_secs
        killers = []
        for run in self._runs.values():
            if run.handle is not None and not run.handle.is_done():
                thread = threading.Thread(target=run.handle.kill, args=(grace,), daemon=True)
                thread.start()
                killers.append(thread)
        for thread in killers:
            thread.join(grace + 15)
        for slot, run in list(self._runs.items()):
            del self._runs[slot]
            self._emit("kill", slot=slot, task=run.task.id, pid=run.record.pid, reason="stopped")
            task = self._current(run.task.id) or run.task
            if run.overruled is not None or task.status != "in_progress":
                continue  # a person set its status: it stays as they set it
            try:
                commits = examine(self.layout, run.record, task, self._emit).commits
            except DispatchError as exc:
                log.warning("task %s: its slot could not be read after the stop: %s", task.id, exc)
                commits = []
            if commits:
                run.record.phase = "merging"  # the next run merges it (see _recover)
                self._merging[task.id] = run
            else:
                self.store.update(
                    task.id,
                    status="open",
                    attempts=max(0, task.attempts - 1),
                    closed_reason="stopped by the user",
                )
                self._emit("requeue", task=task.id, reason="stopped by the user")


def _merge_status(done: MergeDone) -> tuple[str, str]:
    """The status and message the event log shows for a merge: the queue's own words, or
    "error" with the exception when the merge queue raised."""
    if done.error is not None:
        return "error", str(done.error)
    if done.outcome is None:  # MergeRunner never posts neither; were it to, no merge happened
        return "failed", ""
    return done.outcome.status, done.outcome.message
