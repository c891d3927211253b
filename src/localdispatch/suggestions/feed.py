"""The dispatcher's side of suggested_tasks.txt: notice new lines, turn them into tasks, and
move a finished worker's lines out of its worktree before the slot is reused.

``localdispatch.suggestions`` is looked up lazily, so the dispatcher still runs (without
follow-up ideas) in a build that lacks it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localdispatch.config import Config
from localdispatch.errors import DispatchError
from localdispatch.layout import Layout
from localdispatch.store import TaskStore

log = logging.getLogger(__name__)


def _suggestions(name: str) -> Callable[..., Any] | None:
    try:
        func: Callable[..., Any] = getattr(
            importlib.import_module("localdispatch.suggestions"), name
        )
    except (ImportError, AttributeError):
        return None
    return func


class SuggestionFeed:
    """Asked every loop pass: the check is a stat (and a read of the inbox's small journal
    when there is one), and ingest runs only when it says lines may be waiting."""

    def __init__(self, config: Config, layout: Layout, store: TaskStore) -> None:
        self.config, self.layout, self.store = config, layout, store
        self._seen: tuple[int, ...] | None = None

    def ingest_new(self) -> int:
        """Turn new lines into tasks; returns how many were added. A file that cannot be
        read is logged and tried again once it changes: it must not stop the workers."""
        if not self._grew():
            return 0
        ingest = _suggestions("ingest")
        if ingest is None:
            return 0
        try:
            report = ingest(self.config, self.layout, self.store)
        except DispatchError as exc:
            log.warning("could not ingest %s: %s", self.layout.suggested_tasks, exc)
            return 0
        return _count(getattr(report, "added", report))

    def _grew(self) -> bool:
        """Whether suggested_tasks.txt may hold new lines (the suggestions module's own check
        also sees lines waiting in its inbox; a size and time stamp otherwise)."""
        grew = _suggestions("suggestions_grew")
        if grew is not None:
            changed, self._seen = grew(self.layout, self._seen)
            return bool(changed)
        try:
            info = self.layout.suggested_tasks.stat()
        except OSError:
            return False
        seen = (info.st_size, info.st_mtime_ns)
        changed = seen != self._seen and info.st_size > 0
        self._seen = seen
        return changed

    def harvest(self, worktree: Path, task_id: str) -> str | None:
        """Move the lines a finished worker wrote into its worktree's copy of the file.

        Returns None when all went well (lines moved, or none to move), else a one-line note
        naming the task, the file and why, for the dispatcher to put on the task:

        - the worker's file was refused (a symlink, a file under a linked folder, a FIFO, a
          device, a folder, or larger than the cap): none of its lines became tasks and it
          was removed from the worktree (a link itself, never what it points to);
        - its lines could not be moved (for instance the main file is itself no regular
          file): they were left in the worktree.
        """
        harvest = _suggestions("harvest_worktree_suggestions")
        if harvest is None:
            return None
        try:
            result = harvest(worktree, self.layout, task_id)
        except DispatchError as exc:
            log.warning(
                "task %s: could not harvest suggestions from %s: %s", task_id, worktree, exc
            )
            return f"{task_id}: its suggestions were not moved: {exc}"
        refused = getattr(result, "refused", None)  # an int (lines moved) in older versions
        return refused if isinstance(refused, str) else None


def _count(value: Any) -> int:
    # ``added`` is a list of tasks in this version; a bare count is taken as well.
    if isinstance(value, int):
        return value
    try:
        return len(value)
    except TypeError:
        return 0
