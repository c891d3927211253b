"""Choosing what runs next: a pure function of the tasks and what is already running.

Order among ready tasks: conflict tasks first (they hold a finished branch back), then priority
(0 highest), then the longest remaining dependency chain (critical path first), then how many
tasks each one unblocks, then age. Two tasks whose ``files`` overlap never run at once, because
that is where merge conflicts come from; a task without ``files`` is not held back by anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localdispatch.tasks import Task, files_overlap, ready_tasks, remaining_chain, unblock_counts


def rank_ready(tasks: Iterable[Task], weight: Callable[[Task], float] | None = None) -> list[Task]:
    """Ready tasks, best first."""
    task_list = list(tasks)
    chain = remaining_chain(task_list, weight)
    unblocks = unblock_counts(task_list)

    def key(task: Task) -> tuple[int, int, float, int, str, int]:
        return (
            0 if task.kind == "conflict" else 1,
            task.priority,
            -chain.get(task.id, 0.0),
            -unblocks.get(task.id, 0),
            task.created_at,
            _id_number(task.id),
        )

    return sorted(ready_tasks(task_list), key=key)


def pick_next(
    tasks: Iterable[Task],
    running: Sequence[Task],
    free_slots: int,
    weight: Callable[[Task], float] | None = None,
) -> list[Task]:
    """Up to ``free_slots`` ready tasks to start now, none overlapping a running one's files."""
    if free_slots <= 0:
        return []
    busy_ids = {task.id for task in running}
    chosen: list[Task] = []
    taken: list[Task] = list(running)
    for task in rank_ready(tasks, weight):
        if task.id in busy_ids:
            continue
        if any(files_overlap(task.files, other.files) for other in taken):
            continue
        chosen.append(task)
        taken.append(task)
        if len(chosen) == free_slots:
            break
    return chosen


def _id_number(task_id: str) -> int:
    digits = "".join(ch for ch in task_id if ch.isdigit())
    return int(digits) if digits else 0


# ---- --plan: what runs now and next (pure simulation) --------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One task in the simulated schedule: when it starts and ends, in seconds from now."""

    task_id: str
    title: str
    start: float
    end: float
    running: bool = False


@dataclass
class WavePlan:
    """The simulated schedule: waves of tasks that start together, and the time estimates."""

    slots: int
    waves: list[list[PlannedRun]] = field(default_factory=list)
    running: list[PlannedRun] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    parallel_secs: float = 0.0
    sequential_secs: float = 0.0

    @property
    def speedup(self) -> float:
        return self.sequential_secs / self.parallel_secs if self.parallel_secs > 0 else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "running": [vars(run) for run in self.running],
            "waves": [[vars(run) for run in wave] for wave in self.waves],
            "blocked": list(self.blocked),
            "parallel_secs": round(self.parallel_secs, 3),
            "sequential_secs": round(self.sequential_secs, 3),
            "speedup": round(self.speedup, 3),
        }


def plan_waves(
    tasks: Iterable[Task],
    slots: int,
    estimate: Callable[[Task], float],
    running: Mapping[str, float] | None = None,
    weight: Callable[[Task], float] | None = None,
) -> WavePlan:
    """Simulate the dispatcher: at every moment a slot frees, start what ``pick_next`` picks.

    ``weight`` is what the choice ranks chains by (default: ``estimate``); the dispatcher
    itself does not know durations and ranks by task count, as ``lambda t: 1.0`` does.
    ``running`` maps the ids of tasks running now to their estimated remaining seconds. Other
    in-progress tasks (waiting for a merge) are taken as done now. Open tasks that can never
    start (a dependency failed, was cancelled or does not exist) are listed as blocked.
    """
    running = dict(running or {})
    state = {task.id: task for task in tasks}
    for task_id, task in list(state.items()):
        if task.status == "in_progress" and task_id not in running:
            state[task_id] = task.model_copy(update={"status": "done"})
    plan = WavePlan(slots=max(1, slots))
    busy: list[tuple[float, Task]] = []
    for task_id, remaining in running.items():
        if task_id in state:
            busy.append((max(0.0, remaining), state[task_id]))
            plan.running.append(
                PlannedRun(task_id, state[task_id].title, 0.0, max(0.0, remaining), True)
            )
            plan.sequential_secs += max(0.0, remaining)
    now = 0.0
    while True:
        picked = pick_next(
            state.values(), [task for _, task in busy], plan.slots - len(busy), weight or estimate
        )
        wave = []
        for task in picked:
            duration = max(0.0, estimate(task))
            state[task.id] = task.model_copy(update={"status": "in_progress"})
            busy.append((now + duration, state[task.id]))
            wave.append(PlannedRun(task.id, task.title, now, now + duration))
            plan.sequential_secs += duration
        if wave:
            plan.waves.append(wave)
        if not busy:
            break
        now = min(end for end, _ in busy)
        for end, task in [item for item in busy if item[0] <= now]:
            busy.remove((end, task))
            state[task.id] = task.model_copy(update={"status": "done"})
    plan.parallel_secs = now
    plan.blocked = [t.id for t in state.values() if t.status == "open" and t.kind != "epic"]
    return plan
