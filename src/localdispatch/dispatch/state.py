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

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock, Timeout

from localdispatch.errors import LockBusy
from localdispatch.layout import Layout
from localdispatch.processes.trees import ProcessKey, find_process
from localdispatch.statefile import replace_with_retry, write_atomic
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


def state_path(layout: Layout) -> Path:
    return layout.state / "state.json"


def read_state(layout: Layout) -> dict[str, Any]:
    """The raw state document, or an empty one (missing or unreadable files are not errors
    for readers: a crash can only leave a whole file, and recovery handles the rest)."""
    try:
        data = json.loads(state_path(layout).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": STATE_VERSION, "owner": None, "runs": []}
    return data if isinstance(data, dict) else {"version": STATE_VERSION, "runs": []}


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
    path = layout.locks / "dispatcher.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = load_owner(layout)
        who = f" (pid {owner['pid']}, started {owner.get('started_at', '?')})" if owner else ""
        raise LockBusy(
            f"Another dispatcher is already running on {layout.repo}{who}.",
            hint=f"Wait for it, or stop it; it holds the lock {path}. Use --status to see it.",
            path=path,
        ) from None
    try:
        yield
    finally:
        lock.release()


class StateFile:
    """Reads and atomically writes state.json for the dispatcher that holds the lock."""

    def __init__(self, layout: Layout) -> None:
        self.path = state_path(layout)
        self.owner: dict[str, Any] | None = None
        self._runs: list[RunRecord] = []

    def load(self) -> list[RunRecord]:
        """The previous run's records. A corrupt file is kept aside, never trusted."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text)
            return [RunRecord.from_dict(item) for item in data.get("runs", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(f"state.json.corrupt-{int(time.time())}")
            log.warning("state file %s is unreadable (%s); moved to %s", self.path, exc, aside)
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
        document = {
            "version": STATE_VERSION,
            "owner": self.owner,
            "runs": [asdict(run) for run in self._runs],
        }
        payload = json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
        write_atomic(self.path, payload)
