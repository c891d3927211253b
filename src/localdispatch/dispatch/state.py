"""The dispatcher's own state (``.dispatch/state.json``) and the one-dispatcher lock.

state.json names the running dispatcher and every worker attempt it watches: slot, task,
pid and process creation time, branch, the commit the attempt started from, log file, and
phase (``running``, or ``merging`` once the worker finished and its branch is being merged).
Only the dispatcher that holds the lock writes it, always whole and atomically (a temporary
file moved into place), so a crash at any instant leaves the old state or the new one.

``views.py`` reads it (and the tasks) without taking the lock, so ``--status`` and ``--plan``
work while a dispatcher runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import psutil

from localdispatch.errors import LockBusy, StoreError
from localdispatch.layout import Layout
from localdispatch.processes.trees import ProcessKey, find_process
from localdispatch.statefile import JsonDocument, StateLock, replace_with_retry
from localdispatch.tasks import now_iso

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class RunRecord:
    """One worker attempt as state.json keeps it."""

    slot: int
    task_id: str
    kind: str
    branch: str
    start_commit: str
    worktree: str
    log: str
    attempt: int
    marker: str
    pid: int | None = None
    create_time: float | None = None
    started_at: float = 0.0
    phase: str = "running"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def state_document(layout: Layout) -> JsonDocument:
    """state.json. It has no lock of its own: only the holder of the dispatcher lock writes it."""
    return JsonDocument(
        layout.state_file,
        version=STATE_VERSION,
        kind="the dispatcher's state file",
        advice="It lists the worker attempts of the last run; deleting it forgets them.",
    )


def read_state(layout: Layout) -> dict[str, Any]:
    """The raw state document, or an empty one (missing or unreadable files are not errors
    for readers: a crash can only leave a whole file, and recovery handles the rest)."""
    empty: dict[str, Any] = {"version": STATE_VERSION, "owner": None, "runs": []}
    try:
        return {**empty, **state_document(layout).read()}
    except StoreError:
        return empty


def load_owner(layout: Layout) -> dict[str, Any] | None:
    """The dispatcher recorded as running, if that process is still alive."""
    owner = read_state(layout).get("owner")
    if not isinstance(owner, dict):
        return None
    try:
        key = ProcessKey(int(owner["pid"]), float(owner["create_time"]))
    except (KeyError, TypeError, ValueError):
        return None
    return owner if find_process(key) is not None else None


@contextmanager
def dispatcher_lock(layout: Layout) -> Iterator[None]:
    """Hold the one-dispatcher-per-repository lock; LockBusy names the holder if known."""
    path = layout.dispatcher_lock
    with StateLock(path, what=f"the dispatcher of {layout.repo}").attempt() as held:
        if not held:
            owner = load_owner(layout)
            who = f" (pid {owner['pid']}, started {owner.get('started_at', '?')})" if owner else ""
            raise LockBusy(
                f"Another dispatcher is already running on {layout.repo}{who}.",
                hint=f"Wait for it, or stop it; it holds the lock {path}. Use --status to see it.",
                path=path,
            )
        yield


class StateFile:
    """Reads and atomically writes state.json for the dispatcher that holds the lock."""

    def __init__(self, layout: Layout) -> None:
        self.document = state_document(layout)
        self.path = self.document.path
        self.owner: dict[str, Any] | None = None
        self._runs: list[RunRecord] = []

    def load(self) -> list[RunRecord]:
        """The previous run's records. A corrupt file is kept aside, never trusted: the
        workers it named are still found by their marker, and their tasks put back. A file
        written by a newer localdispatch is a StoreError and is left as it is."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            data = self.document.decode(raw)
        except StoreError as exc:
            return self._set_aside(exc.message)
        if isinstance(data, dict):
            newer = self.document.newer_version(data)
            if newer is not None:
                raise self.document.too_new(newer)
        try:
            return [RunRecord.from_dict(item) for item in data.get("runs", [])]
        except (TypeError, AttributeError) as exc:  # not an object, or a run that is not one
            return self._set_aside(str(exc))

    def _set_aside(self, why: str) -> list[RunRecord]:
        aside = self.path.with_name(f"state.json.corrupt-{int(time.time())}")
        log.warning("state file %s is unreadable (%s); moved to %s", self.path, why, aside)
        replace_with_retry(self.path, aside)
        return []

    def claim_owner(self) -> None:
        me = psutil.Process()
        self.owner = {"pid": me.pid, "create_time": me.create_time(), "started_at": now_iso()}
        self._runs = self.load()
        self._write()

    def release_owner(self) -> None:
        self.owner = None
        self._write()

    def save(self, runs: list[RunRecord]) -> None:
        self._runs = list(runs)
        self._write()

    def _write(self) -> None:
        self.document.write({"owner": self.owner, "runs": [asdict(run) for run in self._runs]})
