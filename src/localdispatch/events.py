"""The append-only event log, .dispatch/events.jsonl: one JSON object per line.

Every start, finish, kill, retry, merge, conflict and gate result is written here, so a person
(or ``--status``) can see what happened after the fact. Appends are single ``write`` calls of
one line under a file lock, so lines from several processes never interleave.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from localdispatch.tasks import now_iso

log = logging.getLogger(__name__)


class EventLog:
    def __init__(self, path: Path, lock_path: Path | None = None) -> None:
        self.path = Path(path)
        self.lock_path = lock_path or self.path.with_name(self.path.name + ".lock")

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; a failure to log is reported but never stops the work."""
        record = {"ts": now_iso(), "event": event, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with (
                FileLock(str(self.lock_path), timeout=10),
                self.path.open("a", encoding="utf-8", newline="\n") as handle,
            ):
                handle.write(line)
        except OSError as exc:
            log.warning("could not write event %s to %s: %s", event, self.path, exc)
        return record

    def read(self, last: int | None = None) -> list[dict[str, Any]]:
        """Events in order (the last ``last`` of them); torn or foreign lines are skipped."""
        events = list(self._iter())
        return events[-last:] if last else events

    def _iter(self) -> Iterator[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
