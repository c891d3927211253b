"""The Task model and the pure logic of the task graph.

Nothing here touches a file or a process: given a list of tasks, these functions say which
are ready, whether a new dependency would make a cycle, which epics are complete, and how long
the chain of work behind each task still is (so the dispatcher can run the critical path first).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from localdispatch.errors import CycleError

Status = Literal["open", "in_progress", "done", "failed", "cancelled"]
Kind = Literal["task", "epic", "conflict"]

STATUSES: tuple[Status, ...] = ("open", "in_progress", "done", "failed", "cancelled")
KINDS: tuple[Kind, ...] = ("task", "epic", "conflict")
CLOSED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"open", "in_progress"})

# Statuses of the original Path-B task_queue.json and of Beads, mapped onto ours.
LEGACY_STATUS: dict[str, Status] = {
    "pending": "open",
    "todo": "open",
    "ready": "open",
    "blocked": "open",
    "running": "in_progress",
    "in-progress": "in_progress",
    "closed": "done",
    "completed": "done",
    "complete": "done",
    "merged": "done",
    "error": "failed",
    "canceled": "cancelled",
}


def now_iso() -> str:
    """UTC time with seconds precision and a Z, the form every timestamp here uses."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Task(BaseModel):
    """One unit of work. Field names are part of the contract (--json and task_queue.json)."""

    # Frozen: a Task read from a store may be shared with the store's cache; every change
    # goes through the store, which builds a new Task.
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    title: str
    description: str = ""
    status: Status = "open"
    kind: Kind = "task"
    priority: int = Field(2, ge=0, le=4)
    files: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    parent: str | None = None
    discovered_from: str | None = None
    attempts: int = 0
    branch: str | None = None
    merged_commit: str | None = None
    created_at: str = Field(default_factory=now_iso)
    updated_at: str = Field(default_factory=now_iso)
    closed_reason: str | None = None
    # Expected seconds of work, from an imported plan (effort hours); --plan prefers it.
    estimate_secs: float | None = Field(None, ge=0, allow_inf_nan=False)


def title_key(title: str) -> str:
    """What two titles share when they name the same work: case, runs of spaces and a
    closing full stop, colon or exclamation mark do not count. The one rule for duplicates,
    whether a model's plan or a suggestion line brings them."""
    return " ".join(title.casefold().split()).rstrip(".!:;").rstrip()


def normalize_status(value: str) -> str:
    lowered = value.strip().lower()
    return LEGACY_STATUS.get(lowered, lowered)


def by_id(tasks: Iterable[Task]) -> dict[str, Task]:
    return {task.id: task for task in tasks}


def is_ready(task: Task, index: Mapping[str, Task]) -> bool:
    """Open, not an epic, and every dependency done (an unknown dependency blocks)."""
    if task.status != "open" or task.kind == "epic":
        return False
    return all(dep in index and index[dep].status == "done" for dep in task.depends_on)


def ready_tasks(tasks: Iterable[Task]) -> list[Task]:
    task_list = list(tasks)
    index = by_id(task_list)
    return [task for task in task_list if is_ready(task, index)]


def blockers(task: Task, index: Mapping[str, Task]) -> list[str]:
    """The dependencies of ``task`` that are not done yet (or do not exist)."""
    return [dep for dep in task.depends_on if dep not in index or index[dep].status != "done"]


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in the graph ``id -> ids it depends on``, as [a, b, ..., a], or None."""
    white, grey, black = 0, 1, 2
    colour: dict[str, int] = {}
    for root in edges:
        if colour.get(root, white) != white:
            continue
        # Iterative DFS: the stack holds (node, iterator over its deps); path mirrors it.
        stack = [(root, iter(edges.get(root, ())))]
        path = [root]
        colour[root] = grey
        while stack:
            node, deps = stack[-1]
            advanced = False
            for dep in deps:
                state = colour.get(dep, white)
                if state == grey:
                    return [*path[path.index(dep) :], dep]
                if state == white and dep in edges:
                    colour[dep] = grey
                    stack.append((dep, iter(edges.get(dep, ()))))
                    path.append(dep)
                    advanced = True
                    break
            if not advanced:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def check_new_dependency(tasks: Iterable[Task], task_id: str, dep_id: str) -> None:
    """Raise CycleError if making ``task_id`` depend on ``dep_id`` would close a cycle."""
    if task_id == dep_id:
        raise CycleError([task_id, task_id], task_id=task_id)
    edges = {task.id: list(task.depends_on) for task in tasks}
    edges.setdefault(task_id, []).append(dep_id)
    cycle = find_cycle(edges)
    if cycle:
        raise CycleError(cycle, task_id=task_id)


def children_of(epic_id: str, tasks: Iterable[Task]) -> list[Task]:
    return [task for task in tasks if task.parent == epic_id]


def epics_to_close(tasks: Iterable[Task]) -> list[Task]:
    """Open epics whose children are all done (an epic with no children stays open)."""
    task_list = list(tasks)
    kids: dict[str, list[Task]] = {}
    for task in task_list:
        if task.parent:
            kids.setdefault(task.parent, []).append(task)
    result = []
    for task in task_list:
        if task.kind != "epic" or task.status not in ACTIVE:
            continue
        children = [kid for kid in kids.get(task.id, []) if kid.status != "cancelled"]
        if children and all(kid.status == "done" for kid in children):
            result.append(task)
    return result


def dependents_map(tasks: Iterable[Task]) -> dict[str, list[str]]:
    """id -> ids of the tasks that depend on it."""
    result: dict[str, list[str]] = {}
    for task in tasks:
        for dep in task.depends_on:
            result.setdefault(dep, []).append(task.id)
    return result


def remaining_chain(
    tasks: Iterable[Task], weight: Callable[[Task], float] | None = None
) -> dict[str, float]:
    """For each unfinished task, the length of the longest chain of unfinished work it starts.

    The chain counts the task itself and everything that (transitively) waits for it, so
    running the task with the largest value first shortens the critical path. ``weight``
    gives each task's expected duration (1 each by default). Epics are not work and weigh 0.
    """
    task_list = [task for task in tasks if task.status in ACTIVE]
    index = by_id(task_list)
    waiting = dependents_map(task_list)
    weigh = weight or (lambda _task: 1.0)
    memo: dict[str, float] = {}
    # Iterative post-order so that 10,000-task chains do not hit the recursion limit.
    for root in index:
        if root in memo:
            continue
        stack = [root]
        on_stack = {root}
        while stack:
            node = stack[-1]
            pending = [d for d in waiting.get(node, []) if d in index and d not in memo]
            pending = [d for d in pending if d not in on_stack]  # a stored cycle is cut here
            if pending:
                stack.extend(pending)
                on_stack.update(pending)
                continue
            stack.pop()
            on_stack.discard(node)
            own = 0.0 if index[node].kind == "epic" else weigh(index[node])
            tail = max((memo.get(d, 0.0) for d in waiting.get(node, []) if d in index), default=0.0)
            memo[node] = own + tail
    return memo


def unblock_counts(tasks: Iterable[Task]) -> dict[str, int]:
    """How many unfinished tasks wait directly on each task."""
    task_list = list(tasks)
    active = {task.id for task in task_list if task.status in ACTIVE}
    waiting = dependents_map(task for task in task_list if task.id in active)
    return {task_id: len(waiting.get(task_id, [])) for task_id in active}


def files_overlap(first: Iterable[str], second: Iterable[str]) -> bool:
    """True when two file lists name a common file, or one names a folder holding the other."""
    left = {_norm_path(p) for p in first if p.strip()}
    right = {_norm_path(p) for p in second if p.strip()}
    if not left or not right:
        return False
    if left & right:
        return True
    return any(a.startswith(b + "/") or b.startswith(a + "/") for a in left for b in right)


def _norm_path(path: str) -> str:
    # Lower case: on Windows and macOS "App.py" and "app.py" are the same file.
    return posixpath.normpath(path.strip().replace("\\", "/")).strip("/").lower()


_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str, limit: int = 40) -> str:
    """A short ascii slug for branch names: 'Fix the CLI!' -> 'fix-the-cli'."""
    slug = _SLUG.sub("-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "task"
