"""What merges leave behind: pending_merges.json, the tasks' statuses and the event log.

``.dispatch/pending_merges.json`` is the merge queue's memory across ticks and across crashes:

- ``pending``: one entry per task whose branch waits. ``state`` is ``merging`` (a journal entry
  written before a merge starts, so a dispatcher killed mid-merge finds it and redoes the merge
  instead of losing the task), ``conflict`` (waiting for its conflict task to be closed) or
  ``waiting`` (the base branch cannot move yet; ``merged_commit`` is the tested merge to move
  it to once it can).
- ``attempts``: failed merges (conflicts, rejections) per task, for ``max_merge_attempts``.
- ``delete_later``: merged branches that a worktree still had checked out, with the commit
  they must still point at to be deleted.

It is a :class:`~localdispatch.statefile.JsonDocument`: every read-modify-write runs under its
lock and replaces the file atomically, like the task store. A file that cannot be parsed is
reported and never overwritten.

:class:`MergeRecords` writes how each merge ends (merged, conflict, rejected, waiting,
failed) to all three places at once; the pure pieces (``next_step``, the conflict task's text)
decide what to write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from localdispatch.config import Config
from localdispatch.errors import TaskNotFound
from localdispatch.events import EventLog
from localdispatch.layout import Layout
from localdispatch.statefile import LOCK_TIMEOUT_SECS, JsonDocument
from localdispatch.store import TaskDraft, TaskStore
from localdispatch.tasks import ACTIVE, Task, now_iso

log = logging.getLogger(__name__)

STATE_VERSION = 1
OutcomeStatus = Literal["merged", "conflict", "rejected", "waiting", "failed", "dropped"]
EntryState = Literal["merging", "conflict", "waiting"]
ENTRY_STATES: tuple[str, ...] = ("merging", "conflict", "waiting")


@dataclass
class MergeOutcome:
    """What became of one merge. See MergeQueue for what each status means to the caller."""

    task_id: str
    branch: str
    status: OutcomeStatus
    message: str
    commit: str | None = None
    conflict_task_id: str | None = None
    person: bool = False  # only a person can move it on (see PendingMerge.person)


@dataclass
class PendingMerge:
    """A task whose branch waits to be merged (the task itself stays in_progress)."""

    task: str
    branch: str
    state: EntryState
    reason: str
    since: str
    conflict_task: str | None = None
    base_commit: str | None = None
    branch_commit: str | None = None
    merged_commit: str | None = None
    files: list[str] = field(default_factory=list)
    # True when only a person can move it on (a conflict no worker resolved, a change in the
    # user's checkout, a lock file that is not ours); ``steps`` say exactly what to do.
    person: bool = False
    steps: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The dict ``--status`` shows: task, branch, reason, since, and the details."""
        return asdict(self)


@dataclass
class MergeBook:
    """The whole file, parsed."""

    pending: list[PendingMerge] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    delete_later: dict[str, str] = field(default_factory=dict)

    def entry(self, task_id: str) -> PendingMerge | None:
        return next((e for e in self.pending if e.task == task_id), None)

    def put(self, entry: PendingMerge) -> None:
        """Add or replace the entry of ``entry.task``, keeping its original ``since``."""
        old = self.entry(entry.task)
        if old is not None:
            entry.since = old.since
            self.pending[self.pending.index(old)] = entry
        else:
            self.pending.append(entry)

    def drop(self, task_id: str) -> None:
        self.pending = [e for e in self.pending if e.task != task_id]

    def count_failure(self, task_id: str) -> int:
        self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
        return self.attempts[task_id]


def merge_state_of(layout: Layout) -> MergeState:
    """The pending_merges.json of ``layout``, with its lock."""
    return MergeState(layout.pending_merges, layout.pending_merges_lock)


class MergeState:
    """pending_merges.json with its lock; ``edit()`` is the only way to change it."""

    def __init__(
        self, path: Path, lock_path: Path, lock_timeout: float = LOCK_TIMEOUT_SECS
    ) -> None:
        self.document = JsonDocument(
            path,
            lock_path,
            version=STATE_VERSION,
            kind="the pending merges file",
            advice="It lists the merges waiting to be retried; deleting it forgets them.",
            lock_timeout=lock_timeout,
        )
        self.path = self.document.path

    def read(self) -> MergeBook:
        """The current book; the file is replaced atomically, so no lock is needed to read."""
        return parse_book(self.document.read(), self.document)

    @contextmanager
    def edit(self) -> Iterator[MergeBook]:
        """Read the book under the lock, let the caller change it, and write it back."""
        with self.document.edit() as data:
            book = parse_book(data, self.document)
            yield book
            # Keys this version does not know stay as they were.
            data.update(
                pending=[asdict(e) for e in book.pending],
                attempts=book.attempts,
                delete_later=book.delete_later,
            )


def parse_book(data: dict[str, Any], document: JsonDocument) -> MergeBook:
    """The book in the file's document; anything unexpected is an error naming the file."""
    if not isinstance(data.get("pending", []), list):
        raise document.corrupt('its "pending" is not a list')
    try:
        pending = [PendingMerge(**item) for item in data.get("pending", [])]
        attempts = {str(k): int(v) for k, v in dict(data.get("attempts", {})).items()}
        delete_later = {str(k): str(v) for k, v in dict(data.get("delete_later", {})).items()}
    except (TypeError, ValueError) as exc:
        raise document.corrupt(f"an entry is not valid ({exc})") from exc
    for entry in pending:
        if entry.state not in ENTRY_STATES:
            raise document.corrupt(f"entry of {entry.task} has unknown state {entry.state!r}")
    return MergeBook(pending=pending, attempts=attempts, delete_later=delete_later)


# ---- what to do with one pending entry (pure) ------------------------------------------

Action = Literal["skip", "retry", "check_merged", "create_task", "fail", "drop", "person"]


@dataclass(frozen=True)
class Step:
    action: Action
    reason: str = ""


def next_step(
    entry: PendingMerge, original: Task | None, conflict: Task | None, auto_retry: bool
) -> Step:
    """Decide what ``retry_pending`` does with ``entry`` this tick.

    ``original`` is the task whose branch waits (None if it no longer exists) and
    ``conflict`` its conflict task (None if there is none or it was deleted).
    """
    if original is None:
        return Step("drop", f"task {entry.task} no longer exists")
    if original.status != "in_progress":
        # A person closed or reopened it: the queue no longer owns its branch.
        return Step("drop", f"task {entry.task} is {original.status} now")
    if entry.state in ("merging", "waiting"):
        return Step("retry")
    if entry.conflict_task is None or conflict is None:  # none yet, or deleted: (re)create
        return Step("create_task")
    if conflict.status == "done":
        return Step("retry" if auto_retry else "check_merged")
    if conflict.status == "cancelled":
        why = f": {conflict.closed_reason}" if conflict.closed_reason else ""
        return Step("fail", f"its conflict task {conflict.id} was cancelled{why}")
    if conflict.status == "failed":
        # No worker could resolve it: the branch waits for a person, never thrown away.
        reason = (
            f"no worker could resolve the conflict of {entry.branch} ({conflict.id} "
            f"failed{': ' + conflict.closed_reason if conflict.closed_reason else ''})"
        )
        return Step("person", reason)
    return Step("skip")


def resolve_steps(entry: PendingMerge, conflict_id: str, base: str) -> list[str]:
    """The exact commands a person runs to resolve a conflict the workers could not."""
    folder = f"../resolve-{conflict_id}"
    files = " ".join(entry.files) or "<the conflicting files>"
    return [
        f"git worktree add {folder} {entry.branch}",
        f"cd {folder} && git merge {base}   (conflicts in: {files})",
        "fix the conflicts, then: git add -A && git commit --no-edit",
        f"localdispatch tasks close {conflict_id}   (the merge is retried; {entry.task} "
        f"is done once it lands; afterwards: git worktree remove {folder})",
        f"or, to give it to a worker again: localdispatch tasks reopen {conflict_id}",
    ]


# ---- conflict tasks (pure) -----------------------------------------------------------


def conflict_title(branch: str) -> str:
    return f"Resolve merge conflict: {branch}"


def conflict_description(task: Task, base: str, entry: PendingMerge) -> str:
    """The conflict task's text: what conflicted, where, and the steps to resolve it."""
    files = entry.files or ["(git named no file; run the merge to see them)"]
    return "\n".join(
        [
            f"Merging branch {entry.branch} (task {task.id}: {task.title}) into {base} "
            "stopped on a merge conflict.",
            "",
            f"Branch: {entry.branch} (at {entry.branch_commit})",
            f"Base commit: {entry.base_commit} (the tip of {base} the merge was tried on)",
            "Conflicting files:",
            *(f"- {name}" for name in files),
            "",
            f"Steps, in a worktree on branch {entry.branch}:",
            f"1. Merge the base into the branch: git merge {base}",
            "2. Resolve the conflicts in the files above, keeping the intent of both sides, "
            "and remove every conflict marker.",
            "3. Commit the merge on the branch: git add <files> and git commit --no-edit. "
            "Do not rebase, reset or rename the branch.",
            f"When this task is closed, merging {entry.branch} into {base} is retried; "
            f"once it lands, task {task.id} is done.",
        ]
    )


def tested_merge(resume: PendingMerge | None, base_sha: str, branch_sha: str) -> str | None:
    """The merge a waiting entry already made and tested, if neither side moved since."""
    if resume is None or not resume.merged_commit:
        return None
    unchanged = (resume.base_commit, resume.branch_commit) == (base_sha, branch_sha)
    return resume.merged_commit if unchanged else None


# ---- the records a merge leaves --------------------------------------------------------


class MergeRecords:
    """How each merge ends, written to the task, pending_merges.json and the event log."""

    def __init__(self, config: Config, store: TaskStore, events: EventLog, state: MergeState):
        self.config = config
        self.base = config.branch
        self.store = store
        self.events = events
        self.state = state

    def merged(
        self, task: Task, branch: str, commit: str, branch_sha: str, note: str, defer: bool
    ) -> MergeOutcome:
        """Done with its merged commit; so is every task that waited on the same branch."""
        reason = f"merged into {self.base} as {commit[:12]}{note}"
        self.mark(task.id, status="done", merged_commit=commit, closed_reason=reason)
        with self.state.edit() as book:
            # The original of a conflict task waits on the same branch: it landed too.
            riders = [e.task for e in book.pending if e.branch == branch and e.task != task.id]
            book.pending = [e for e in book.pending if e.branch != branch]
            for task_id in (task.id, *riders):
                book.attempts.pop(task_id, None)
            if defer:  # a worktree still has it checked out: delete it once released
                book.delete_later[branch] = branch_sha
        for task_id in riders:
            changes = {"status": "done", "merged_commit": commit, "closed_reason": reason}
            self.mark(task_id, only_active=True, **changes)
        self.events.emit(
            "merge", task=task.id, branch=branch, commit=commit, base=self.base, also=riders
        )
        return MergeOutcome(task.id, branch, "merged", f"{branch} {reason}", commit=commit)

    def conflict(
        self, task: Task, branch: str, base_sha: str, branch_sha: str, files: list[str]
    ) -> MergeOutcome:
        shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        reason = f"merging {branch} into {self.base} conflicts in {shown or 'some files'}"
        self.events.emit(
            "merge_conflict", task=task.id, branch=branch, base_commit=base_sha, files=files
        )
        if task.kind == "conflict" or not self.config.create_task_on_merge_conflict:
            # A conflict task whose resolution conflicts again is simply tried again (its
            # worker merges the new base); with no conflict tasks, the task is redone.
            return self.rejected(task, branch, reason)
        entry = PendingMerge(task.id, branch, "conflict", reason, now_iso())
        entry.base_commit, entry.branch_commit, entry.files = base_sha, branch_sha, files
        with self.state.edit() as book:
            failures = book.count_failure(task.id)
            if failures < self.config.max_merge_attempts:
                book.put(entry)  # before the task exists: a crash now re-creates it
        if failures >= self.config.max_merge_attempts:
            return self.failed(task, branch, f"{reason} ({failures} failed merges)")
        conflict = self.conflict_task(task, entry)
        message = f"{reason}; {conflict.id} resolves it, and the merge is retried when it is closed"
        return MergeOutcome(task.id, branch, "conflict", message, conflict_task_id=conflict.id)

    def conflict_task(self, task: Task, entry: PendingMerge) -> Task:
        """The conflict task of ``entry``: an active one with its title, or a new one."""
        title = conflict_title(entry.branch)
        found = [
            t
            for t in self.store.all()
            if t.title == title and t.kind == "conflict" and t.status in ACTIVE and t.id != task.id
        ]
        draft = TaskDraft(
            title=title,
            description=conflict_description(task, self.base, entry),
            kind="conflict",
            priority=max(0, task.priority - 1),
            files=entry.files,
            discovered_from=task.id,
            extra={"branch": entry.branch},
        )
        conflict = found[0] if found else self.store.add(draft)
        with self.state.edit() as book:
            current = book.entry(task.id)
            if current is not None:
                current.conflict_task = conflict.id
                current.reason = f"{entry.reason}; waiting for {conflict.id} ({title})"
        self.events.emit(
            "conflict_task", task=task.id, branch=entry.branch, conflict_task=conflict.id
        )
        log.info("task %s: conflict task %s for %s", task.id, conflict.id, entry.branch)
        return conflict

    def rejected(self, task: Task, branch: str, reason: str, detail: str = "") -> MergeOutcome:
        """Not merged; the caller counts a failed attempt (or it failed: too many)."""
        with self.state.edit() as book:
            failures = book.count_failure(task.id)
            book.drop(task.id)
        self.events.emit(
            "merge_rejected", task=task.id, branch=branch, reason=reason, failures=failures
        )
        log.info("task %s: %s not merged: %s", task.id, branch, reason)
        if failures >= self.config.max_merge_attempts:
            return self.failed(task, branch, f"{reason} ({failures} failed merges){detail}")
        message = f"{branch} was not merged: {reason}{detail}"
        return MergeOutcome(task.id, branch, "rejected", message)

    def failed(self, task: Task, branch: str, reason: str) -> MergeOutcome:
        message = f"Merging {branch} into {self.base} was given up: {reason}."
        self.mark(task.id, status="failed", closed_reason=message)
        with self.state.edit() as book:
            book.drop(task.id)
            book.attempts.pop(task.id, None)
        self.events.emit("merge_failed", task=task.id, branch=branch, reason=reason)
        log.info("task %s: %s", task.id, message)
        return MergeOutcome(task.id, branch, "failed", message)

    def waiting(
        self,
        task: Task,
        branch: str,
        reason: str,
        *shas: str | None,
        steps: Sequence[str] = (),
    ) -> MergeOutcome:
        """Pending until the base can move; ``shas``: base, branch and the tested merge.

        With ``steps`` only a person can move it on, and they say how: a dispatcher run with
        --until-idle stops waiting for it and names it in its summary.
        """
        base_sha, branch_sha, merged = (*shas, None, None, None)[:3]
        entry = PendingMerge(task.id, branch, "waiting", reason, now_iso())
        entry.base_commit, entry.branch_commit, entry.merged_commit = base_sha, branch_sha, merged
        entry.person, entry.steps = bool(steps), list(steps)
        with self.state.edit() as book:
            old = book.entry(task.id)
            book.put(entry)
        if old is None or old.state != "waiting" or old.reason != reason:
            event = "merge_needs_person" if steps else "merge_waiting"
            self.events.emit(event, task=task.id, branch=branch, reason=reason, steps=list(steps))
            log.info("task %s: %s waits: %s", task.id, branch, reason)
        return MergeOutcome(task.id, branch, "waiting", reason, person=bool(steps))

    def set_person(
        self, entry: PendingMerge, reason: str | None, steps: Sequence[str] = ()
    ) -> None:
        """Mark a conflict entry as waiting for a person (``reason``), or as not any more
        (None: its conflict task is back with a worker). The event is written once."""
        with self.state.edit() as book:
            current = book.entry(entry.task)
            if current is None or (current.person == bool(reason) and current.reason == reason):
                return
            current.person, current.steps = bool(reason), list(steps)
            if reason:
                current.reason = reason
        if reason:
            self.events.emit(
                "merge_needs_person",
                task=entry.task,
                branch=entry.branch,
                reason=reason,
                steps=list(steps),
            )

    def dropped_by_user(self, task: Task, branch: str) -> MergeOutcome:
        """The task was closed, cancelled or reopened by a person while its merge ran."""
        current = self.store.get(task.id).status if self._exists(task.id) else "deleted"
        reason = f"not merged: task {task.id} is {current} now (a person's word wins)"
        with self.state.edit() as book:
            book.drop(task.id)
        self.events.emit("merge_dropped", task=task.id, branch=branch, reason=reason)
        return MergeOutcome(task.id, branch, "dropped", reason)

    def _exists(self, task_id: str) -> bool:
        try:
            self.store.get(task_id)
        except TaskNotFound:
            return False
        return True

    def dropped(self, entry: PendingMerge, reason: str) -> None:
        with self.state.edit() as book:
            book.drop(entry.task)
        self.events.emit("merge_dropped", task=entry.task, branch=entry.branch, reason=reason)

    def mark(self, task_id: str, *, only_active: bool = False, **changes: object) -> None:
        try:
            if only_active and self.store.get(task_id).status != "in_progress":
                return
            self.store.update(task_id, **changes)
        except TaskNotFound:
            log.warning(
                "task %s no longer exists; not marking it %s", task_id, changes.get("status")
            )
