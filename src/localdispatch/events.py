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

from localdispatch.statefile import StateLock
from localdispatch.tasks import now_iso

log = logging.getLogger(__name__)

# A line is appended in microseconds; a lock held this long is a stuck process, and an
# event lost is better than work held up (the log is a record, not the state).
APPEND_WAIT_SECS = 10.0


class EventLog:
    def __init__(self, path: Path, lock_path: Path | None = None) -> None:
        self.path = Path(path)
        self.lock_path = lock_path or self.path.with_name(self.path.name + ".lock")
        self._lock = StateLock(self.lock_path, what=f"the event log {self.path}")

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; a failure to log is reported but never stops the work."""
        record = {"ts": now_iso(), "event": event, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock.attempt(APPEND_WAIT_SECS) as held:
                if not held:
                    log.warning("could not write event %s: %s stayed busy", event, self.lock_path)
                    return record
                with self.path.open("a", encoding="utf-8", newline="\n") as handle:
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
