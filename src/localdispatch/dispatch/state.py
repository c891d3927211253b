"""The dispatcher's own state (``.dispatch/state.json``) and the read-only views built on it.

state.json names the running dispatcher and every worker attempt it watches: slot, task,
pid and process creation time, branch, the commit the attempt started from, log file, and
phase (``running``, or ``merging`` once the worker finished and its branch is being merged).
Only the dispatcher that holds the lock writes it, always whole and atomically (a temporary
file moved into place), so a crash at any instant leaves the old state or the new one.

``status_snapshot`` and ``plan_snapshot`` read it (and the tasks) without taking the lock,
so ``--status`` and ``--plan`` work while a dispatcher runs.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock, Timeout

from localdispatch.config import Config
from localdispatch.dispatch.scheduling import Plan, plan_waves, rank_ready
from localdispatch.errors import DispatchError, LockBusy
from localdispatch.events import EventLog
from localdispatch.layout import Layout
from localdispatch.merge.pending import merge_state_of
from localdispatch.processes.supervisor import ProcessKey, find_process, tree_stats
from localdispatch.statefile import replace_with_retry, write_atomic
from localdispatch.store import TaskStore
from localdispatch.tasks import STATUSES, Task, now_iso

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_ESTIMATE_SECS = 600.0


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


# ---- read-only views ------------------------------------------------------------------------


def status_snapshot(
    config: Config, layout: Layout, store: TaskStore, *, sample_secs: float = 0.2
) -> dict[str, Any]:
    """Everything --status shows, as plain data (a live view renders the same dict)."""
    tasks = store.all()
    index = {task.id: task for task in tasks}
    state = read_state(layout)
    owner = load_owner(layout)
    runs = [RunRecord.from_dict(item) for item in state.get("runs", []) if isinstance(item, dict)]
    now = time.time()
    workers, merging = [], []
    for run in runs:
        title = index[run.task_id].title if run.task_id in index else ""
        entry: dict[str, Any] = {
            "slot": run.slot,
            "task": run.task_id,
            "title": title,
            "branch": run.branch,
            "attempt": run.attempt,
            "log": run.log,
            "pid": run.pid,
            "elapsed_secs": round(now - run.started_at, 1) if run.started_at else None,
        }
        if run.phase == "merging":
            merging.append(entry)
            continue
        alive = owner is not None and run.pid is not None and run.create_time is not None
        stats = (
            tree_stats(ProcessKey(run.pid or 0, run.create_time or 0.0), sample_secs)
            if (alive)
            else None
        )
        entry.update(
            alive=bool(stats and stats.processes),
            processes=stats.processes if stats else 0,
            cpu_percent=round(stats.cpu_percent, 1) if stats else 0.0,
            rss_mb=round(stats.rss_bytes / 2**20, 1) if stats else 0.0,
        )
        workers.append(entry)
    return {
        "repo": str(layout.repo),
        "dispatcher": owner,
        "counts": {status: sum(1 for t in tasks if t.status == status) for status in STATUSES},
        "ready": [t.id for t in rank_ready(tasks)],
        "workers": workers,
        "merging": merging,
        "pending_merges": pending_merges(config, layout, store),
        "failed": [
            {"task": t.id, "title": t.title, "reason": t.closed_reason}
            for t in tasks
            if t.status == "failed"
        ],
    }


def pending_merges(config: Config, layout: Layout, store: TaskStore) -> list[dict[str, Any]]:
    """Branches waiting in the merge queue, as pending_merges.json records them."""
    try:
        return [entry.public() for entry in merge_state_of(layout).read().pending]
    except (DispatchError, OSError) as exc:  # a status view must not fail
        log.warning("could not read pending merges: %s", exc)
        return []


def estimate_secs(layout: Layout) -> tuple[float, str]:
    """How long a task takes: the median of finished attempts in the event log, if any."""
    durations = [
        float(event["secs"])
        for event in EventLog(layout.events).read(last=2000)
        if event.get("event") == "finish" and event.get("commits") and "secs" in event
    ]
    if durations:
        return statistics.median(durations), f"median of {len(durations)} finished attempts"
    return DEFAULT_ESTIMATE_SECS, f"{DEFAULT_ESTIMATE_SECS:g} s per task (no history yet)"


def plan_snapshot(layout: Layout, tasks: list[Task], slots: int) -> tuple[Plan, str]:
    """The --plan simulation for the current tasks; returns the plan and the estimate used."""
    estimate, basis = estimate_secs(layout)
    now = time.time()
    running = {}
    for item in read_state(layout).get("runs", []):
        if isinstance(item, dict) and item.get("phase", "running") == "running":
            elapsed = now - float(item.get("started_at") or now)
            running[str(item.get("task_id"))] = max(0.0, estimate - elapsed)
    plan = plan_waves(tasks, slots, lambda _task: estimate, running)
    return plan, basis
