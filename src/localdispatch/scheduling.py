"""Choosing what runs next: a pure function of the tasks and what is already running.

Order among ready tasks: conflict tasks first (they hold a finished branch back), then priority
(0 highest), then the longest remaining dependency chain (critical path first), then how many
tasks each one unblocks, then age. Two tasks whose ``files`` overlap never run at once, because
that is where merge conflicts come from; a task without ``files`` is not held back by anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .tasks import Task, files_overlap, ready_tasks, remaining_chain, unblock_counts


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
