"""What ``--status`` and ``--plan`` show, read without taking any lock, so they work while a
dispatcher runs (and when none does)."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

from localdispatch.config import Config
from localdispatch.dispatch.scheduling import WavePlan, plan_waves, rank_ready
from localdispatch.dispatch.state import RunRecord, load_owner, read_state
from localdispatch.errors import DispatchError
from localdispatch.events import EventLog
from localdispatch.layout import Layout
from localdispatch.merge.pending import merge_state_of
from localdispatch.processes.supervisor import tree_stats
from localdispatch.processes.trees import ProcessKey
from localdispatch.store import TaskStore
from localdispatch.tasks import ACTIVE, STATUSES, Task

log = logging.getLogger(__name__)

DEFAULT_ESTIMATE_SECS = 600.0
NO_HISTORY = "no history yet"


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
        "pending_merges": pending_merges(layout),
        "failed": [
            {"task": t.id, "title": t.title, "reason": t.closed_reason}
            for t in tasks
            if t.status == "failed"
        ],
    }


def pending_merges(layout: Layout) -> list[dict[str, Any]]:
    """Branches waiting in the merge queue, as pending_merges.json records them."""
    try:
        return [entry.public() for entry in merge_state_of(layout).read().pending]
    except (DispatchError, OSError) as exc:  # a status view must not fail
        log.warning("could not read pending merges: %s", exc)
        return []


class EstimateBasis(str):
    """What --plan says its estimates rest on: a plain string (as ``--json`` shows it) that
    also knows which tasks' estimates came from their plan (``from_plan``: id -> seconds) and
    where the others' came from (``fallback``: "from history" or the default)."""

    from_plan: dict[str, float]
    fallback: str

    def __new__(cls, text: str, from_plan: dict[str, float], fallback: str) -> EstimateBasis:
        basis = super().__new__(cls, text)
        basis.from_plan = dict(from_plan)
        basis.fallback = fallback
        return basis


def estimate_secs(layout: Layout) -> tuple[float, str]:
    """How long a task takes when its plan does not say: the median of finished attempts in
    the event log, or the default before there are any."""
    durations = [
        float(event["secs"])
        for event in EventLog(layout.events).read(last=2000)
        if event.get("event") == "finish" and event.get("commits") and "secs" in event
    ]
    if durations:
        return statistics.median(durations), f"median of {len(durations)} finished attempts"
    return DEFAULT_ESTIMATE_SECS, f"{DEFAULT_ESTIMATE_SECS:g} s per task ({NO_HISTORY})"


def plan_snapshot(layout: Layout, tasks: list[Task], slots: int) -> tuple[WavePlan, EstimateBasis]:
    """The --plan simulation for the current tasks; returns the plan and the estimates used.

    Before there is history, a task's own ``estimate_secs`` (from an imported plan) is used
    where it has one and the default elsewhere; once workers have finished attempts here,
    their median is what this machine and model really take, and it wins (a plan's effort
    hours are a person's hours). The basis says which is which.
    """
    history, history_basis = estimate_secs(layout)
    work = [task for task in tasks if task.status in ACTIVE and task.kind != "epic"]
    planned = {task.id: task.estimate_secs for task in work if task.estimate_secs is not None}
    own = planned if NO_HISTORY in history_basis else {}
    index = {task.id: task for task in tasks}

    def estimate(task: Task) -> float:
        return own.get(task.id, history)

    now = time.time()
    running = {}
    for item in read_state(layout).get("runs", []):
        if isinstance(item, dict) and item.get("phase", "running") == "running":
            task_id = str(item.get("task_id"))
            elapsed = now - float(item.get("started_at") or now)
            full = estimate(index[task_id]) if task_id in index else history
            running[task_id] = max(0.0, full - elapsed)
    plan = plan_waves(tasks, slots, estimate, running)
    fallback = f"the default, {NO_HISTORY}" if NO_HISTORY in history_basis else "from history"
    if not own:
        if planned:  # history exists: say the plan's own estimates were set aside
            history_basis += f" (history wins over the plan's estimates for {len(planned)} tasks)"
        return plan, EstimateBasis(history_basis, own, fallback)
    shown = ", ".join(sorted(own, key=_id_order)[:8]) + (" ..." if len(own) > 8 else "")
    others = len(work) - len(own)
    if others == 0:
        text = f"the plan's own estimates for all {len(own)} tasks"
    else:
        noun = "task" if others == 1 else "tasks"
        text = (
            f"the plan's own estimates for {shown}; {history_basis} for the other {others} {noun}"
        )
    return plan, EstimateBasis(text, own, fallback)


def _id_order(task_id: str) -> tuple[str, int]:
    """t-2 before t-10."""
    head, _, tail = task_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (task_id, 0)
