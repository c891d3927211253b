"""The inbox of lines already taken out of suggested_tasks.txt: snapshots and their journal.

``.dispatch/suggestions/`` holds the renamed copies of the file ("snapshots", named
``000012-suggested_tasks.txt``), ``journal.json`` with how far each has been read and the batch
an interrupted run left pending, and ``rejected.txt`` with the lines that could not be added.
Why the file is renamed rather than trimmed is explained in the package docstring.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdispatch.layout import Layout
from localdispatch.statefile import JsonDocument, StateLock, write_atomic
from localdispatch.suggestions.lines import MARK_FIELD, LineIssue, RawLine, split_lines
from localdispatch.suggestions.regular_file import (
    MAIN_FILE_CAP,
    TooLarge,
    UnsafeFile,
    describe,
    inspect_regular,
    read_regular,
    read_slice,
)
from localdispatch.suggestions.regular_file import SuggestionsError as SuggestionsError
from localdispatch.tasks import Task

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.json"
JOURNAL_VERSION = 1
REJECTED_NAME = "rejected.txt"
# A fully read snapshot is deleted only after this long without a write: on POSIX an appender
# that opened the file before the rename may still write into it (on Windows only a program
# that opened it with FILE_SHARE_DELETE could; the wait costs nothing, so it applies there too).
DELETE_GRACE_SECS = 60.0
# How long a last line without its newline must stay unchanged before it counts as complete.
SETTLE_SECS = 0.5
# How long to retry the rename while another program holds the file open (Windows).
ROTATE_PATIENCE_SECS = 3.0
# Test hook: the name of a step after which an ingest process exits hard (see crash_point).
CRASH_ENV = "LOCALDISPATCH_INGEST_CRASH_AT"
# The most one run reads of one snapshot. Snapshots are at most MAIN_FILE_CAP when renamed,
# but on POSIX a late appender can still make one grow; the rest is read by the next run.
READ_LIMIT = MAIN_FILE_CAP

SNAPSHOT_NAME = re.compile(r"^(\d{6,})-(.+)$")
IS_WINDOWS = os.name == "nt"


@dataclass
class Snapshot:
    """A renamed copy of the file: how far it has been read (bytes and lines), and when."""

    name: str
    offset: int = 0
    line: int = 0
    rotated_at: float = 0.0

    @property
    def seq(self) -> int:
        return int(self.name.split("-", 1)[0])

    @property
    def source(self) -> str:
        return self.name.split("-", 1)[1]


@dataclass
class Journal:
    """``.dispatch/suggestions/journal.json``: cursors of the snapshots and the pending batch."""

    folder: Path
    seq: int = 0
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    pending: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.folder / JOURNAL_NAME

    @property
    def document(self) -> JsonDocument:
        """journal.json, written under the ingest lock (so it has no lock of its own) and
        read like everything in the inbox: a regular file, no link followed, size capped."""
        folder = self.folder
        return JsonDocument(
            self.path,
            version=JOURNAL_VERSION,
            kind="the ingest journal",
            advice="Restore it, or delete it only if every file beside it was already "
            "ingested (otherwise their lines are read again).",
            error=SuggestionsError,
            # Only a crash of the file system could leave it blank: never read as "nothing
            # ingested yet", which would ingest every snapshot beside it again.
            blank_is_empty=False,
            reader=lambda path: read_regular(path, cap=MAIN_FILE_CAP, root=folder),
        )

    @classmethod
    def load(cls, folder: Path) -> Journal:
        journal = cls(folder)
        document = journal.document
        try:
            data = document.read()
        except UnsafeFile as exc:
            raise SuggestionsError(
                f"The ingest journal {journal.path} {exc.reason()}, not a file localdispatch "
                "wrote, so it was not read.",
                hint="Delete it, then look at the files beside it: lines in them that were "
                "already ingested would be read again.",
                path=journal.path,
            ) from exc
        if not data:  # no journal yet
            return journal
        try:
            journal.seq = int(data["seq"])
            for name, entry in data["snapshots"].items():
                journal.snapshots[name] = Snapshot(name, **entry)
            journal.pending = data.get("pending")
        except KeyError as exc:
            raise document.corrupt(f"it has no {exc}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise document.corrupt(f"an entry is not valid ({exc})") from exc
        return journal

    def save(self) -> None:
        self.document.write(
            {
                "seq": self.seq,
                "snapshots": {
                    s.name: {"offset": s.offset, "line": s.line, "rotated_at": s.rotated_at}
                    for s in self.snapshots.values()
                },
                "pending": self.pending,
            }
        )

    def ordered(self) -> list[Snapshot]:
        return sorted(self.snapshots.values(), key=lambda snap: snap.seq)


def crash_point(step: str) -> None:
    """Exit at once, mid-ingest, when ``$LOCALDISPATCH_INGEST_CRASH_AT`` names this step.

    The crash tests' only hook. Steps in order: ``renamed`` (file moved, journal not told),
    ``rotated``, ``pending`` (batch recorded, no task yet), ``added`` (tasks stored, cursors
    not moved), ``committed``.
    """
    if os.environ.get(CRASH_ENV) == step:
        os._exit(86)


def locked(layout: Layout) -> AbstractContextManager[None]:
    """Hold the ingest lock: one ingest at a time moves lines out of the file."""
    inbox = StateLock(
        layout.suggestions_lock,
        what=f"the suggestions inbox {layout.suggestions_inbox}",
        holder="Another ingest",
    )
    return inbox.hold()


def recover(journal: Journal, tasks: Sequence[Task], *, write: bool = True) -> int | None:
    """Settle a batch a crashed run left pending: None if there was none, else how many of
    its tasks were found in the store (0: the batch was never stored and is read again).

    Changes the journal in memory only; ``write=False`` also leaves rejected.txt alone.
    """
    if journal.pending is None:
        return None
    batch_id = journal.pending["id"]
    found = [t for t in tasks if (t.model_extra or {}).get(MARK_FIELD) == batch_id]
    if found:  # the tasks exist: only the cursors were not moved yet
        apply_pending(journal, write=write)
    else:  # add_many never happened: the lines are simply read again
        journal.pending = None
    return len(found)


def apply_pending(journal: Journal, *, write: bool = True) -> None:
    """Move the cursors to where the pending batch left them and keep its rejected lines."""
    assert journal.pending is not None
    if write and journal.pending.get("rejected"):
        _keep_rejected(journal.folder, journal.pending["id"], journal.pending["rejected"])
    for name, (offset, line) in journal.pending["cursors"].items():
        if name in journal.snapshots:
            journal.snapshots[name].offset, journal.snapshots[name].line = offset, line
    journal.pending = None


def _keep_rejected(folder: Path, batch_id: str, block: str) -> None:
    """Append a batch's invalid lines to rejected.txt once, even if called again after a crash."""
    path = folder / REJECTED_NAME
    try:
        existing = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        existing = ""
    if f"# ingest {batch_id} " not in existing:
        write_atomic(path, (existing + block).encode("utf-8"))


def rejected_block(batch_id: str, invalid: Sequence[LineIssue]) -> str:
    if not invalid:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"# ingest {batch_id} at {stamp}: these lines were not added; fix a line and append "
        "it to suggested_tasks.txt to try again"
    ]
    for issue in invalid:
        lines += [f"# {issue.where}: {issue.reason}", issue.text]
    return "\n".join(lines) + "\n"


def adopt(journal: Journal) -> bool:
    """Bring the journal in line with the folder (a rename whose entry a crash lost)."""
    changed = False
    present = set()
    for entry in journal.folder.glob("*"):
        match = SNAPSHOT_NAME.match(entry.name)
        if not match or not _is_regular(entry) or entry.name.endswith(".tmp"):
            continue  # the inbox holds only regular files we renamed: a link there is no snapshot
        present.add(entry.name)
        journal.seq = max(journal.seq, int(match.group(1)))
        if entry.name not in journal.snapshots:
            journal.snapshots[entry.name] = Snapshot(entry.name, rotated_at=time.time())
            changed = True
    for name in set(journal.snapshots) - present:
        log.warning("ingest: %s disappeared from %s before it was fully read", name, journal.folder)
        del journal.snapshots[name]
        changed = True
    return changed


def rotate(source: Path, journal: Journal, *, root: Path | None = None) -> str | None:
    """Rename the live file into the inbox folder (see the package docstring for why).

    Returns a warning when the file could not be moved (held open on Windows for longer than
    ROTATE_PATIENCE_SECS); its lines then simply wait for the next run. Raises UnsafeFile when
    ``source`` is not a regular file (a symlink, FIFO, device or folder) or a folder between
    ``root`` and it is a link, and TooLarge past MAIN_FILE_CAP; either way the file is left
    as it is, so a link is never renamed into the inbox and nothing is lost.
    """
    try:
        info = inspect_regular(source, root=root)
    except FileNotFoundError:
        return None
    if info.st_size == 0:
        return None
    if info.st_size > MAIN_FILE_CAP:
        raise TooLarge(source, info.st_size, MAIN_FILE_CAP)
    name = f"{journal.seq + 1:06d}-{source.name}"
    deadline, delay = time.monotonic() + ROTATE_PATIENCE_SECS, 0.002
    while True:
        try:
            source.replace(journal.folder / name)
            crash_point("renamed")  # the journal does not know this snapshot yet
            break
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            # Windows: an appender or another program has the file open; appenders hold it
            # for milliseconds, so waiting a little is enough. On POSIX it is a real refusal.
            if not IS_WINDOWS or time.monotonic() >= deadline:
                message = (
                    f"Could not take new lines out of {source}: {exc}. Lines already taken "
                    "were ingested; the file's lines wait for the next run (close any program "
                    "that keeps it open)."
                )
                log.warning("ingest: %s", message)
                return message
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except OSError as exc:
            hint = "Check the file's permissions."
            if exc.errno == errno.EXDEV:
                hint = f"It must be on the drive of {journal.folder}; copy it into the repository."
            raise SuggestionsError(
                f"Cannot move {source} into {journal.folder}: {exc}.", hint=hint, path=source
            ) from exc
    _check_renamed(journal.folder / name, source)
    journal.seq += 1
    journal.snapshots[name] = Snapshot(name, rotated_at=time.time())
    journal.save()
    crash_point("rotated")
    return None


def _check_renamed(snapshot: Path, source: Path) -> None:
    """Refuse what was renamed if it is no regular file after all (swapped for a link or a
    FIFO between the look and the rename): put it back where it was if that name is free."""
    try:
        info = os.lstat(snapshot)
    except FileNotFoundError:
        return
    what = describe(info, lambda: str(snapshot.readlink()))
    if what is None:
        return
    if not os.path.lexists(source):
        with contextlib.suppress(OSError):
            snapshot.replace(source)
    raise UnsafeFile(source, source, what)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def take(snap: Snapshot, folder: Path) -> tuple[list[RawLine], int, int, bool]:
    """The complete lines of a snapshot after its cursor, where the cursor goes next (bytes,
    lines), and whether an unfinished last line was left for later.

    At most READ_LIMIT bytes are read per run; what lies beyond is read by the next run (only
    a late appender can make a snapshot that large, see READ_LIMIT).
    """
    path = folder / snap.name
    data = read_from(path, snap.offset, folder)
    more = len(data) >= READ_LIMIT
    final = IS_WINDOWS  # a file renamed on Windows had no writer and can never get one
    if more:
        final = b"\n" not in data  # a line longer than the limit is cut rather than stuck
    elif data and not data.endswith(b"\n") and not final:
        # On POSIX a writer may still be finishing that last line; give it a moment.
        time.sleep(max(0.0, SETTLE_SECS - _age(path, snap)))
        data = read_from(path, snap.offset, folder)
        final = _age(path, snap) >= SETTLE_SECS
    lines, used, count = split_lines(
        data, source=snap.source, first_line=snap.line + 1, final=final
    )
    return lines, snap.offset + used, snap.line + count, used < len(data) and not more


def read_from(path: Path, offset: int, folder: Path | None = None) -> bytes:
    """At most READ_LIMIT bytes of the snapshot ``path`` from ``offset``, read with the same
    care as the live file (it is ours, but nothing in the inbox is followed or waited on)."""
    try:
        return read_slice(path, offset=offset, limit=READ_LIMIT, root=folder)
    except UnsafeFile as exc:
        raise SuggestionsError(
            f"{path} in the ingest inbox {exc.reason()}, not a file localdispatch put there, "
            "so it was not read.",
            hint="Delete it: the inbox holds only regular files that ingest renamed there.",
            path=path,
        ) from exc
    except OSError as exc:
        raise SuggestionsError(f"Cannot read {path}: {exc}.", path=path) from exc


def _age(path: Path, snap: Snapshot) -> float:
    """Seconds since the snapshot was renamed or last written, whichever is later."""
    try:
        mtime = os.lstat(path).st_mtime
    except OSError:
        mtime = 0.0
    return time.time() - max(mtime, snap.rotated_at)


def cleanup(journal: Journal) -> None:
    """Delete snapshots that are fully read and past the grace period for late appends."""
    changed = False
    for snap in journal.ordered():
        path = journal.folder / snap.name
        try:
            if os.lstat(path).st_size != snap.offset or _age(path, snap) < DELETE_GRACE_SECS:
                continue
            path.unlink()
        except OSError:
            continue  # still in use or already gone: try again next time
        del journal.snapshots[snap.name]
        changed = True
    if changed:
        journal.save()
