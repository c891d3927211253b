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

from localdispatch.config import Config
from localdispatch.layout import Layout, ensure_state_ignored
from localdispatch.store import TaskStore
from localdispatch.suggestions.inbox import (
    REJECTED_NAME,
    Journal,
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
from localdispatch.suggestions.lines import (
    FROM_TAG,
    Batch,
    LineIssue,
    RawLine,
    Suggestion,
    plan_batch,
    split_lines,
)
from localdispatch.suggestions.regular_file import (
    MAIN_FILE_CAP,
    WORKER_FILE_CAP,
    SuggestionsError,
    TooLarge,
    UnsafeFile,
    append_regular,
    plain_path,
    read_regular,
    remove_entry,
    size_text,
)
from localdispatch.tasks import Task

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
    Raises SuggestionsError (file or journal unreadable), LockBusy, or a StoreError. The file
    is read only if it is a regular file of at most MAIN_FILE_CAP bytes, not under a linked
    folder of the repository: anything else (a symlink, FIFO, device, folder, a file too
    large) raises UnsafeFile or TooLarge, both SuggestionsErrors, and is left as it is.
    """
    source = _source_path(layout, file)
    root = _root_for(layout, source)
    folder = layout.suggestions_inbox
    report = IngestReport(dry_run=dry_run)
    if dry_run:
        return _preview(source, root, folder, store, report)
    ensure_state_ignored(layout)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(layout):
        journal = Journal.load(folder)
        recovered = recover(journal, store.all())
        report.recovered = recovered or 0
        if adopt(journal) or recovered is not None:
            journal.save()
        warning = rotate(source, journal, root=root)
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
    if not os.path.lexists(path):  # lstat: a link or FIFO there is refused by rotate, by name
        raise SuggestionsError(
            f"There is no file {path} to ingest.", hint="Check the --file path.", path=path
        )
    return path


def _root_for(layout: Layout, path: Path) -> Path | None:
    """The repository when ``path`` is inside it (every folder on the way is then checked for
    links), else None (only the file itself is checked)."""
    return layout.repo if _inside(path, layout.repo) is not None else None


def _inside(path: Path, root: Path) -> Path | None:
    """``path`` relative to ``root``, or None when it is not inside it.

    Compared as spelled (``..`` folded), so a link at the file's own name is never followed
    to decide where it is; a path spelled through a link to the repository (an absolute path
    in the config) is matched by resolving its folder only.
    """
    spelled, base = plain_path(path), plain_path(root)
    try:
        relative = spelled.relative_to(base)
    except ValueError:
        try:
            relative = (spelled.parent.resolve() / spelled.name).relative_to(base.resolve())
        except (ValueError, OSError):
            return None
    return relative if relative.parts else None


def _preview(
    source: Path, root: Path | None, folder: Path, store: TaskStore, report: IngestReport
) -> IngestReport:
    """What ingest would add now, read without moving or writing anything."""
    tasks = store.all()
    journal = Journal.load(folder)
    if folder.is_dir():
        recover(journal, tasks, write=False)
        adopt(journal)
    lines: list[RawLine] = []
    for snap in journal.ordered():
        data = read_from(folder / snap.name, snap.offset, folder)
        lines.extend(split_lines(data, source=snap.source, first_line=snap.line + 1)[0])
    try:
        data = read_regular(source, cap=MAIN_FILE_CAP, root=root)
        lines.extend(split_lines(data, source=source.name)[0])
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SuggestionsError(f"Cannot read {source}: {exc}.", path=source) from exc
    batch = plan_batch(lines, tasks)
    report.absorb(batch)
    report.added = [(suggestion, None) for suggestion in batch.accepted]
    return report


# ---- the dispatcher's hooks ---------------------------------------------------------------


@dataclass(frozen=True)
class Harvest:
    """What moving a finished worker's suggestions did.

    ``moved``: how many lines were appended to the main file. ``refused``: None, or a note
    for the task naming it, the file and why it was refused (a symlink, a file under a linked
    folder, a FIFO, a device, a folder, or more than WORKER_FILE_CAP bytes): none of its lines
    were taken, and the entry was removed from the worker's tree (a link itself, never what
    it points to), so it cannot be harvested later.
    """

    moved: int = 0
    refused: str | None = None


def harvest_worktree_suggestions(worktree: Path, layout: Layout, task_id: str) -> Harvest:
    """Move a finished worker's lines from its worktree's file into the main file.

    Each moved line gets ``[from: task_id]`` unless it has a from tag; blank and comment
    lines are dropped; the worktree's file is deleted. Lines are appended before the
    worktree's file is deleted, so a crash in between can repeat lines but never lose one
    (and ingest drops the repeat as a duplicate).

    The worker controls its tree, so its file is only data: it is read only if it is a
    regular file inside the tree, reached without following a link (neither the file nor a
    folder on the way), never opened if it is a FIFO or device, and at most WORKER_FILE_CAP
    bytes; anything else is refused and reported in ``Harvest.refused``. Raises
    SuggestionsError when the lines cannot be moved (the main file refused or unwritable):
    they are then left in the worktree.
    """
    relative = _inside(layout.suggested_tasks, layout.repo)
    if relative is None:
        return Harvest()  # the file lives outside the repository: workers write to it directly
    tree = plain_path(worktree)
    if _same_folder(tree, layout.repo):
        return Harvest()
    copy = tree / relative
    try:
        data = read_regular(copy, cap=WORKER_FILE_CAP, root=tree)
    except FileNotFoundError:
        return Harvest()
    except UnsafeFile as exc:
        return Harvest(refused=_refuse(tree, relative, task_id, exc))
    except OSError as exc:
        raise SuggestionsError(f"Cannot read {copy}: {exc}.", path=copy) from exc
    moved = _tagged(data, copy.name, task_id)
    if moved:
        ensure_state_ignored(layout)
        try:
            main = layout.suggested_tasks
            append_lines(main, moved, root=_root_for(layout, main))
        except UnsafeFile as exc:
            raise SuggestionsError(
                f"The lines in {copy} were not moved: {exc.path} {exc.reason()}, and "
                "suggestions are appended only to a regular file. They were left in the "
                "worker's tree.",
                hint=exc.hint,
                path=exc.path,
            ) from exc
    _unlink(copy, tree)
    log.info("task %s: moved %d suggestion(s) from %s", task_id, len(moved), copy)
    return Harvest(moved=len(moved))


def _tagged(data: bytes, source: str, task_id: str) -> list[bytes]:
    """The worker's lines as bytes to append, each tagged with where it came from."""
    moved = []
    tag = f" [from: {task_id}]".encode()
    for line in split_lines(data, source=source)[0]:
        text = line.text.strip()
        if not text or text.startswith("#"):
            continue
        raw = line.data.lstrip(b"\xef\xbb\xbf").strip() if line.bad_utf8 else text.encode()
        moved.append(raw if FROM_TAG.search(raw) else raw + tag)
    return moved


def _refuse(tree: Path, relative: Path, task_id: str, exc: UnsafeFile) -> str:
    """Remove the refused entry from the worker's tree and say why, for the task."""
    shown = exc.culprit.relative_to(tree).as_posix() if exc.culprit != tree else str(tree)
    try:
        remove_entry(exc.culprit, root=tree)
        outcome = f"{shown} was removed from its tree"
    except (OSError, SuggestionsError) as err:
        outcome = f"{shown} could not be removed from its tree ({err}); delete it by hand"
    rule = (
        f"a file of at most {size_text(WORKER_FILE_CAP)}"
        if isinstance(exc, TooLarge)
        else "a regular file inside its tree"
    )
    note = (
        f"{task_id}: its {relative.as_posix()} {exc.reason(tree)}; suggestions are read only "
        f"from {rule}, so none were taken, and {outcome}."
    )
    log.warning("task %s: suggestions refused: %s", task_id, note)
    return note


def _same_folder(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except OSError:
        return False


def append_lines(path: Path, lines: Sequence[bytes], *, root: Path | None = None) -> None:
    """Append whole lines the way any appender does (O_APPEND), starting a new line first if
    the file ends in an unfinished one.

    Only ever into a regular file (created if absent): a link, FIFO, device or folder at
    ``path``, or a link among the folders between ``root`` and it, raises UnsafeFile and
    nothing is written through it.
    """
    append_regular(path, b"".join(line + b"\n" for line in lines), root=root)


def _unlink(path: Path, tree: Path) -> None:
    for attempt in range(50):
        try:
            remove_entry(path, root=tree)
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
        # lstat: nothing is followed or opened here (a FIFO or a link to a device in the
        # file's place must not block or feed a dispatcher tick); a link's own size makes
        # this say "grew" once, so ingest runs and reports it.
        info = os.lstat(layout.suggested_tasks)
        size, mtime = info.st_size, info.st_mtime_ns
    except OSError:
        size, mtime = 0, 0
    marker = (size, mtime, _unread_inbox_bytes(layout.suggestions_inbox))
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
            unread += max(0, os.lstat(folder / snap.name).st_size - snap.offset)
        except OSError:
            continue
    return unread
