"""suggested_tasks.txt: parse its lines, drop duplicates, and take lines out without losing any.

Line format (DESIGN.md): one task per line; blank lines and ``#`` lines are skipped; the tags
``[files: a.py, b/c.py]``, ``[after: t-3, t-4]``, ``[priority: 1]`` and ``[from: t-7]`` may stand
anywhere in the line (tag names in any case). A line whose title equals, ignoring case and runs
of spaces, an open or in-progress task's title or an earlier line of the batch is a duplicate.

Public interface (the CLI and the dispatcher both use these):

- ``ingest(config, layout, store, *, file=None, dry_run=False) -> IngestReport``: turn every
  complete line waiting in the file into a task. ``report.added`` lists what was added (with the
  tasks), ``duplicates``/``invalid`` name file, line and reason. Lines that cannot be added (a
  bad tag) are not thrown away: they are kept in ``.dispatch/suggestions/rejected.txt`` with the
  reason. Safe to call from many processes at once and again after a crash.
- ``harvest_worktree_suggestions(worktree, layout, task_id) -> Harvest``: after a worker
  finished, move the lines it wrote into its worktree's copy of the file into the main file,
  each tagged ``[from: <task_id>]``, and delete the worktree's copy, so suggestions never travel
  through a merge. ``Harvest.moved`` is how many lines moved; ``Harvest.refused`` a note for the
  task when the worker's file was refused (see below). Call it before the worktree is reused or
  removed.
- ``suggestions_grew(layout, last_seen) -> (grew, marker)``: a stat-only check the dispatcher can
  run every cycle; ingest only when ``grew``, and pass ``marker`` back next time. It never opens
  or follows anything, so it cannot block.
- Pure pieces (``lines.py``), tested directly: ``split_lines``, ``parse_line``, ``plan_batch``,
  ``cut_title``. The snapshots and their journal are ``inbox.py``; ``ingest``,
  the preview and the hooks are ``intake.py``.

Suggestions are data, never a door (``regular_file.py``): a line becomes a task only if it
was read from a regular file, reached without following a link (neither the file nor, inside
the repository or the worker's tree, a folder on the way), never opened if it is a FIFO or
device (and opened with O_NONBLOCK|O_NOFOLLOW where those exist), and no larger than a cap:
``WORKER_FILE_CAP`` (1 MiB) for a worker's file, ``MAIN_FILE_CAP`` (16 MiB) for the main file
and ``--file``. A worker's file that fails is not read, is removed from its tree (a link itself,
never its target) and is named in ``Harvest.refused``. A main file that fails raises
``UnsafeFile`` (``TooLarge`` for size), both SuggestionsErrors naming the file, what it is and
the fix, and is left exactly as it is; no link is ever renamed into the inbox. The inbox's own
files (snapshots, journal) are read the same way.

How lines leave the file without losing one (appenders hold no lock of ours):
The live file is never truncated or rewritten. Under ``.dispatch/locks/suggestions.lock``,
ingest *renames* it into ``.dispatch/suggestions/`` (a "snapshot"); the next ``open(path, "a")``
by anyone creates a fresh file, so every later line lands there. Rewriting the live file in
place instead (read, shift the tail, truncate) always leaves a window between the last look at
its size and the truncate in which a completed append is destroyed, on every OS (logrotate's
copytruncate documents the same hole). Rename has no such window:

- POSIX: rename is atomic and an appender that opened the file before it keeps writing into
  the snapshot's inode. So snapshots are only ever read, at a byte cursor kept in
  ``journal.json``: a late line is read by the next ingest. A snapshot is deleted only when
  fully read *and* untouched for ``DELETE_GRACE_SECS`` (an appender would have to stall that
  long between its open and its write for a line to be lost).
- Windows: a file another process holds open cannot be renamed (Python's ``open`` does not
  grant FILE_SHARE_DELETE), so the rename is retried while an appender holds it for its few
  milliseconds; once it succeeds nobody holds the snapshot, and nothing can reach it again.
  (CPython's ``"a"`` mode on Windows is seek-then-write, so two *appenders* can still overwrite
  each other; that race is theirs, cpython gh-86772, and no reader can repair it.)

No task twice after a crash: the cursors move in two steps. The journal first records the new
cursors as ``pending`` with a batch id; then one atomic ``store.add_many`` creates the tasks,
each carrying that id in the ``ingest_batch`` field; then the cursors are committed. A run that
finds a pending batch looks for its id in the store: found means the tasks exist (commit the
cursors), absent means they were never created (read the lines again). A rename whose journal
entry was lost is found by listing the folder.

A last line without its newline is taken once its snapshot has settled (at once on Windows,
where a renamed file can no longer be written; after ``SETTLE_SECS`` on POSIX).
"""

from __future__ import annotations

from localdispatch.suggestions.intake import (
    Harvest,
    IngestReport,
    harvest_worktree_suggestions,
    ingest,
    suggestions_grew,
)
from localdispatch.suggestions.lines import (
    LineIssue,
    RawLine,
    Suggestion,
    cut_title,
    parse_line,
    plan_batch,
    split_lines,
)
from localdispatch.suggestions.regular_file import (
    MAIN_FILE_CAP,
    WORKER_FILE_CAP,
    SuggestionsError,
    TooLarge,
    UnsafeFile,
)

__all__ = [
    "MAIN_FILE_CAP",
    "WORKER_FILE_CAP",
    "Harvest",
    "IngestReport",
    "LineIssue",
    "RawLine",
    "Suggestion",
    "SuggestionsError",
    "TooLarge",
    "UnsafeFile",
    "cut_title",
    "harvest_worktree_suggestions",
    "ingest",
    "parse_line",
    "plan_batch",
    "split_lines",
    "suggestions_grew",
]
