"""What the CLI and the dispatcher call: ingest, the preview, and the dispatcher's hooks."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..layout import Layout, ensure_state_ignored
from ..store import TaskStore
from ..tasks import Task
from .inbox import (
    INBOX_DIR,
    REJECTED_NAME,
    Journal,
    SuggestionsError,
    adopt,
    apply_pending,
    cleanup,
    crash_point,
    locked,
    read_from,
    recover,
    rejected_block,
    rotate,
    take,
)
from .lines import FROM_TAG, Batch, LineIssue, RawLine, Suggestion, plan_batch, split_lines

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest did. ``added`` pairs each accepted line with its task (None on dry run)."""

    dry_run: bool = False
    added: list[tuple[Suggestion, Task | None]] = field(default_factory=list)
    duplicates: list[LineIssue] = field(default_factory=list)
    invalid: list[LineIssue] = field(default_factory=list)
    notes: list[LineIssue] = field(default_factory=list)
    skipped: int = 0
    waiting: int = 0
    recovered: int = 0
    rejected_file: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[Task]:
        return [task for _, task in self.added if task is not None]

    def absorb(self, batch: Batch) -> None:
        self.duplicates.extend(batch.duplicates)
        self.invalid.extend(batch.invalid)
        self.notes.extend(batch.notes)
        self.skipped += batch.skipped

    def to_dict(self) -> dict[str, Any]:
        added = []
        for suggestion, task in self.added:
            added.append(
                {
                    "id": task.id if task else None,
                    "title": suggestion.title,
                    "file": suggestion.line.source,
                    "line": suggestion.line.number,
                    "priority": task.priority if task else suggestion.draft().priority,
                    "files": list(suggestion.files),
                    "depends_on": list(suggestion.after),
                    "discovered_from": suggestion.discovered_from,
                }
            )
        return {
            "dry_run": self.dry_run,
            "added": added,
            "duplicates": [issue.to_dict() for issue in self.duplicates],
            "invalid": [issue.to_dict() for issue in self.invalid],
            "notes": [issue.to_dict() for issue in self.notes],
            "skipped": self.skipped,
            "waiting": self.waiting,
            "recovered": self.recovered,
            "rejected_file": str(self.rejected_file) if self.rejected_file else None,
            "warnings": list(self.warnings),
        }


def ingest(
    config: Config,
    layout: Layout,
    store: TaskStore,
    *,
    file: Path | None = None,
    dry_run: bool = False,
) -> IngestReport:
    """Turn the waiting lines of ``file`` (default: suggested_tasks.txt) into tasks.

    Also finishes lines taken out of any file by an earlier run (late lines, a crash). With
    ``dry_run`` nothing is moved, written or locked: the report says what a run would add.
    Raises SuggestionsError (file or journal unreadable), LockBusy, or a StoreError.
    """
    source = _source_path(layout, file)
    folder = layout.state / INBOX_DIR
    report = IngestReport(dry_run=dry_run)
    if dry_run:
        return _preview(source, folder, store, report)
    ensure_state_ignored(layout)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(layout):
        journal = Journal.load(folder)
        recovered = recover(journal, store.all())
        report.recovered = recovered or 0
        if adopt(journal) or recovered is not None:
            journal.save()
        warning = rotate(source, journal)
        if warning:
            report.warnings.append(warning)
        lines: list[RawLine] = []
        cursors: dict[str, list[int]] = {}
        for snap in journal.ordered():
            taken, offset, line, waiting = take(snap, folder)
            lines.extend(taken)
            report.waiting += waiting
            if offset != snap.offset:
                cursors[snap.name] = [offset, line]
        if cursors:
            _add(journal, store, lines, cursors, report)
        cleanup(journal)
    log.info(
        "ingest: %d added, %d duplicates, %d invalid",
        len(report.added),
        len(report.duplicates),
        len(report.invalid),
    )
    return report


def _add(
    journal: Journal,
    store: TaskStore,
    lines: list[RawLine],
    cursors: dict[str, list[int]],
    report: IngestReport,
) -> None:
    """Create the batch's tasks in one atomic step, bracketed by the journal (see docstring)."""
    batch = plan_batch(lines, store.all())
    report.absorb(batch)
    batch_id = f"ing-{uuid.uuid4().hex[:12]}"
    rejected = rejected_block(batch_id, batch.invalid)
    journal.pending = {"id": batch_id, "cursors": cursors, "rejected": rejected}
    journal.save()
    crash_point("pending")
    created = store.add_many([s.draft(batch_id) for s in batch.accepted]) if batch.accepted else []
    crash_point("added")
    report.added = list(zip(batch.accepted, created, strict=True))
    apply_pending(journal)
    journal.save()
    if rejected:
        report.rejected_file = journal.folder / REJECTED_NAME
    crash_point("committed")


def _source_path(layout: Layout, file: Path | None) -> Path:
    if file is None:
        return layout.suggested_tasks
    path = Path(file) if Path(file).is_absolute() else layout.repo / file
    if not path.is_file():
        raise SuggestionsError(
            f"There is no file {path} to ingest.", hint="Check the --file path.", path=path
        )
    return path


def _preview(source: Path, folder: Path, store: TaskStore, report: IngestReport) -> IngestReport:
    """What ingest would add now, read without moving or writing anything."""
    tasks = store.all()
    journal = Journal.load(folder)
    if folder.is_dir():
        recover(journal, tasks, write=False)
        adopt(journal)
    lines: list[RawLine] = []
    for snap in journal.ordered():
        data = read_from(folder / snap.name, snap.offset)
        lines.extend(split_lines(data, source=snap.source, first_line=snap.line + 1)[0])
    try:
        lines.extend(split_lines(source.read_bytes(), source=source.name)[0])
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SuggestionsError(f"Cannot read {source}: {exc}.", path=source) from exc
    batch = plan_batch(lines, tasks)
    report.absorb(batch)
    report.added = [(suggestion, None) for suggestion in batch.accepted]
    return report


# ---- the dispatcher's hooks ---------------------------------------------------------------


def harvest_worktree_suggestions(worktree: Path, layout: Layout, task_id: str) -> int:
    """Move a finished worker's lines from its worktree's file into the main file.

    Each moved line gets ``[from: task_id]`` unless it has a from tag; blank and comment
    lines are dropped; the worktree's file is deleted. Returns the number of lines moved.
    Lines are appended before the worktree's file is deleted, so a crash in between can
    repeat lines but never lose one (and ingest drops the repeat as a duplicate).
    """
    try:
        relative = layout.suggested_tasks.resolve().relative_to(layout.repo.resolve())
    except ValueError:
        return 0  # the file lives outside the repository: workers write to it directly
    copy = Path(worktree) / relative
    if copy.resolve() == layout.suggested_tasks.resolve():
        return 0
    try:
        data = copy.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise SuggestionsError(f"Cannot read {copy}: {exc}.", path=copy) from exc
    moved = []
    tag = f" [from: {task_id}]".encode()
    for line in split_lines(data, source=copy.name)[0]:
        text = line.text.strip()
        if not text or text.startswith("#"):
            continue
        raw = line.data.lstrip(b"\xef\xbb\xbf").strip() if line.bad_utf8 else text.encode()
        moved.append(raw if FROM_TAG.search(raw) else raw + tag)
    if moved:
        ensure_state_ignored(layout)
        append_lines(layout.suggested_tasks, moved)
    _unlink(copy)
    log.info("task %s: moved %d suggestion(s) from %s", task_id, len(moved), copy)
    return len(moved)


def append_lines(path: Path, lines: Sequence[bytes]) -> None:
    """Append whole lines the way any appender does (O_APPEND), in one write call."""
    payload = b"".join(line + b"\n" for line in lines)
    try:
        with path.open("rb") as handle:  # never glue our first line onto an unfinished one
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                payload = (b"" if handle.read(1) == b"\n" else b"\n") + payload
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    view = memoryview(payload)
    with path.open("ab", buffering=0) as handle:
        while view:
            view = view[handle.write(view) or 0 :]


def _unlink(path: Path) -> None:
    for attempt in range(50):
        try:
            path.unlink(missing_ok=True)
            return
        except PermissionError as exc:  # Windows: something still has it open
            if attempt == 49:
                raise SuggestionsError(
                    f"Cannot delete {path} after moving its lines: {exc}.",
                    hint="Delete it by hand so its lines are not moved twice.",
                    path=path,
                ) from exc
            time.sleep(0.02 * (attempt + 1))


Marker = tuple[int, int, int]


def suggestions_grew(layout: Layout, last_seen: Marker | None) -> tuple[bool, Marker]:
    """Whether there may be lines to ingest since ``last_seen``, and the marker for next time.

    Cheap enough for every dispatcher cycle: a stat of the file and, only when the inbox
    folder exists, a read of its small journal to count bytes not read yet (a line an appender
    wrote into a snapshot after it was renamed, or a last line waiting for its newline).
    """
    try:
        info = layout.suggested_tasks.stat()
        size, mtime = info.st_size, info.st_mtime_ns
    except OSError:
        size, mtime = 0, 0
    marker = (size, mtime, _unread_inbox_bytes(layout.state / INBOX_DIR))
    return marker != last_seen and (size > 0 or marker[2] > 0), marker


def _unread_inbox_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    try:
        journal = Journal.load(folder)
        adopt(journal)
    except (SuggestionsError, OSError):
        return 0  # ingest itself will report the problem
    unread = 0
    for snap in journal.snapshots.values():
        try:
            unread += max(0, (folder / snap.name).stat().st_size - snap.offset)
        except OSError:
            continue
    return unread
