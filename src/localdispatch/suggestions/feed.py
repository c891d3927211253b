"""The dispatcher's side of suggested_tasks.txt: notice new lines, turn them into tasks, and
move a finished worker's lines out of its slot before the slot is reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

from localdispatch.config import Config
from localdispatch.errors import DispatchError
from localdispatch.layout import Layout
from localdispatch.store import TaskStore
from localdispatch.suggestions.intake import (
    Marker,
    harvest_worktree_suggestions,
    ingest,
    suggestions_grew,
)

log = logging.getLogger(__name__)


class SuggestionFeed:
    """Asked every loop pass: the check is a stat (and a read of the inbox's small journal
    when there is one), and ingest runs only when it says lines may be waiting."""

    def __init__(self, config: Config, layout: Layout, store: TaskStore) -> None:
        self.config, self.layout, self.store = config, layout, store
        self._seen: Marker | None = None

    def ingest_new(self) -> int:
        """Turn new lines into tasks; returns how many were added. A file that cannot be
        read is logged and tried again once it changes: it must not stop the workers."""
        changed, self._seen = suggestions_grew(self.layout, self._seen)
        if not changed:
            return 0
        try:
            report = ingest(self.config, self.layout, self.store)
        except DispatchError as exc:
            log.warning("could not ingest %s: %s", self.layout.suggested_tasks, exc)
            return 0
        return len(report.added)

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
        try:
            result = harvest_worktree_suggestions(worktree, self.layout, task_id)
        except DispatchError as exc:
            log.warning(
                "task %s: could not harvest suggestions from %s: %s", task_id, worktree, exc
            )
            return f"{task_id}: its suggestions were not moved: {exc}"
        return result.refused
