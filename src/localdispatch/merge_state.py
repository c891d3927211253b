""".dispatch/pending_merges.json: merges that could not land yet, and what to do with each.

The file is the merge queue's memory across ticks and across crashes:

- ``pending``: one entry per task whose branch waits. ``state`` is ``merging`` (a journal entry
  written before a merge starts, so a dispatcher killed mid-merge finds it and redoes the merge
  instead of losing the task), ``conflict`` (waiting for its conflict task to be closed) or
  ``waiting`` (the base branch cannot move yet; ``merged_commit`` is the tested merge to move
  it to once it can).
- ``attempts``: failed merges (conflicts, rejections) per task, for ``max_merge_attempts``.
- ``delete_later``: merged branches that a worktree still had checked out, with the commit
  they must still point at to be deleted.

Every read-modify-write runs under a ``filelock`` lock and replaces the file atomically, like
the task store. A file that cannot be parsed is reported and never overwritten.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from .errors import LockBusy, StoreError
from .store.json_store import replace_with_retry
from .tasks import Task

STATE_VERSION = 1
EntryState = Literal["merging", "conflict", "waiting"]
ENTRY_STATES: tuple[str, ...] = ("merging", "conflict", "waiting")


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


class MergeState:
    """pending_merges.json with its lock; ``edit()`` is the only way to change it."""

    def __init__(self, path: Path, lock_path: Path, lock_timeout: float = 60) -> None:
        self.path = Path(path)
        self.lock_path = Path(lock_path)
        self.lock_timeout = lock_timeout

    def read(self) -> MergeBook:
        """The current book; the file is replaced atomically, so no lock is needed to read."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return MergeBook()
        except OSError as exc:
            raise StoreError(f"Cannot read {self.path}: {exc}.", path=self.path) from exc
        return parse_book(raw, self.path)

    @contextmanager
    def edit(self) -> Iterator[MergeBook]:
        """Read the book under the lock, let the caller change it, and write it back."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.lock_path), timeout=self.lock_timeout):
                book = self.read()
                yield book
                self._write(book)
        except Timeout as exc:
            raise LockBusy(
                f"Timed out waiting for the lock on {self.path}.",
                hint=f"Another localdispatch process holds {self.lock_path}.",
                path=self.lock_path,
            ) from exc

    def _write(self, book: MergeBook) -> None:
        document = {
            "version": STATE_VERSION,
            "pending": [asdict(e) for e in book.pending],
            "attempts": book.attempts,
            "delete_later": book.delete_later,
        }
        payload = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=self.path.name + ".", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            replace_with_retry(Path(tmp_name), self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def parse_book(raw: str, path: Path) -> MergeBook:
    """Parse the file's text; anything unexpected is a StoreError that names the file."""

    def corrupt(what: str) -> StoreError:
        return StoreError(
            f"{path} is corrupt: {what}.",
            hint="Fix or delete it (it lists merges waiting to be retried); localdispatch "
            "will not overwrite it.",
            path=path,
        )

    if not raw.strip():
        return MergeBook()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise corrupt(f"invalid JSON at line {exc.lineno}, column {exc.colno}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("pending", []), list):
        raise corrupt('expected an object with a "pending" list')
    try:
        pending = [PendingMerge(**item) for item in data.get("pending", [])]
        attempts = {str(k): int(v) for k, v in dict(data.get("attempts", {})).items()}
        delete_later = {str(k): str(v) for k, v in dict(data.get("delete_later", {})).items()}
    except (TypeError, ValueError) as exc:
        raise corrupt(f"an entry is not valid ({exc})") from exc
    for entry in pending:
        if entry.state not in ENTRY_STATES:
            raise corrupt(f"entry of {entry.task} has unknown state {entry.state!r}")
    return MergeBook(pending=pending, attempts=attempts, delete_later=delete_later)


# ---- what to do with one pending entry (pure) ------------------------------------------

Action = Literal["skip", "retry", "check_merged", "create_task", "fail", "drop"]


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
    if entry.conflict_task is None:
        return Step("create_task")
    if conflict is None:
        return Step("fail", f"its conflict task {entry.conflict_task} no longer exists")
    if conflict.status == "done":
        return Step("retry" if auto_retry else "check_merged")
    if conflict.status in ("failed", "cancelled"):
        why = f": {conflict.closed_reason}" if conflict.closed_reason else ""
        return Step("fail", f"its conflict task {conflict.id} was {conflict.status}{why}")
    return Step("skip")
