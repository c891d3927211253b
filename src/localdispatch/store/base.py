"""The TaskStore protocol that every backend implements, and the shared rules of changing tasks.

A backend only decides where tasks live; what a valid change is (a dependency that would make a
cycle, closing an epic when its children are done, which fields exist) is decided here, once,
so every backend behaves alike. ``tests/store_contract.py`` is the suite every backend
must pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from localdispatch.errors import CycleError, InvalidTransition, StoreError, TaskNotFound
from localdispatch.tasks import CLOSED, KINDS, Task, epics_to_close, find_cycle, now_iso

# Fields a caller may set through update(); id and timestamps are the store's own.
MUTABLE_FIELDS = frozenset(Task.model_fields) - {"id", "created_at", "updated_at"}


@dataclass
class TaskDraft:
    """A task not stored yet. ``ref`` lets drafts of one batch depend on each other."""

    title: str
    description: str = ""
    kind: str = "task"
    priority: int = 2
    files: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    parent: str | None = None
    discovered_from: str | None = None
    ref: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TaskStore(Protocol):
    """Where tasks live. All methods are safe to call from many processes at once."""

    @property
    def location(self) -> str:
        """What to name in messages: a file path, or a backend and its folder."""
        ...

    def all(self) -> list[Task]:
        """Every task, in creation order."""
        ...

    def get(self, task_id: str) -> Task:
        """One task; TaskNotFound if there is none with that id."""
        ...

    def add(self, draft: TaskDraft) -> Task:
        """Store a new task and return it with its id."""
        ...

    def add_many(self, drafts: Sequence[TaskDraft]) -> list[Task]:
        """Store a batch all at once or not at all; ``depends_on`` may name another draft's ref."""
        ...

    def update(self, task_id: str, **changes: Any) -> Task:
        """Change fields of a task (see MUTABLE_FIELDS); epics close when complete."""
        ...

    def claim(self, task_id: str, **changes: Any) -> Task | None:
        """Atomically move an open task to in_progress; None if it was no longer open."""
        ...

    def close(self, task_id: str, reason: str | None = None, status: str = "done") -> list[Task]:
        """Close a task as done, failed or cancelled; return it and any epic that closed with it."""
        ...

    def reopen(self, task_id: str) -> Task:
        """Put a closed or running task back to open."""
        ...

    def add_dependency(self, task_id: str, dep_id: str) -> Task:
        """Make task_id wait for dep_id; CycleError if that makes a cycle."""
        ...

    def remove_dependency(self, task_id: str, dep_id: str) -> Task:
        """Stop task_id from waiting for dep_id."""
        ...


# ---- rules shared by the backends (pure: they act on a list of tasks in memory) ----------


def find(tasks: Sequence[Task], task_id: str, location: str) -> Task:
    for task in tasks:
        if task.id == task_id:
            return task
    raise TaskNotFound(
        f"No task {task_id!r} in {location}.",
        hint="`localdispatch tasks list --all` shows every id.",
        task_id=task_id,
    )


def build_task(task_id: str, draft: TaskDraft, known: set[str], location: str) -> Task:
    """A new Task from a draft, after checking that what it points at exists."""
    title = " ".join(draft.title.split())
    if not title:
        raise StoreError("A task needs a title that is not empty.")
    if draft.kind not in KINDS:
        raise StoreError(f"Unknown task kind {draft.kind!r}; use one of {', '.join(KINDS)}.")
    if draft.kind == "conflict" and not _has_branch(draft.extra.get("branch")):
        raise StoreError(
            f"Task {title!r} is a conflict task without the branch whose merge conflicted.",
            hint="The dispatcher makes conflict tasks itself when a merge conflicts; add a "
            "plain task (--kind task) instead.",
        )
    for ref in (*draft.depends_on, draft.parent, draft.discovered_from):
        if ref is not None and ref not in known:
            raise TaskNotFound(
                f"Task {title!r} refers to {ref!r}, which is not in {location}.",
                hint="Check the id with `localdispatch tasks list --all`.",
                task_id=ref,
            )
    try:
        return Task(
            id=task_id,
            title=title,
            description=draft.description,
            kind=draft.kind,
            priority=draft.priority,
            files=list(dict.fromkeys(draft.files)),
            depends_on=list(dict.fromkeys(draft.depends_on)),
            parent=draft.parent,
            discovered_from=draft.discovered_from,
            **draft.extra,
        )
    except ValueError as exc:
        raise StoreError(f"Task {title!r} is not valid: {exc}") from exc


def _has_branch(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def resolve_refs(drafts: Sequence[TaskDraft], ids: Sequence[str]) -> list[TaskDraft]:
    """Replace batch-local refs in depends_on/parent by the ids the batch was given."""
    by_ref = {d.ref: task_id for d, task_id in zip(drafts, ids, strict=True) if d.ref}
    resolved = []
    for draft in drafts:
        resolved.append(
            TaskDraft(
                title=draft.title,
                description=draft.description,
                kind=draft.kind,
                priority=draft.priority,
                files=draft.files,
                depends_on=[by_ref.get(dep, dep) for dep in draft.depends_on],
                parent=by_ref.get(draft.parent, draft.parent) if draft.parent else None,
                discovered_from=draft.discovered_from,
                extra=draft.extra,
            )
        )
    return resolved


def apply_update(tasks: list[Task], task_id: str, changes: dict[str, Any], location: str) -> Task:
    """Validate and apply ``changes`` to one task in ``tasks`` (in place); return it."""
    unknown = set(changes) - MUTABLE_FIELDS
    if unknown:
        raise StoreError(f"Cannot set {', '.join(sorted(unknown))} on a task.", task_id=task_id)
    current = find(tasks, task_id, location)
    if "depends_on" in changes:
        known = {t.id for t in tasks}
        for dep in changes["depends_on"]:
            if dep not in known:
                raise TaskNotFound(f"No task {dep!r} in {location}.", task_id=dep)
        edges = {t.id: list(t.depends_on) for t in tasks}
        edges[task_id] = list(changes["depends_on"])
        cycle = find_cycle(edges)
        if cycle:
            raise CycleError(cycle, task_id=task_id)
    data = current.model_dump()
    data.update(changes)
    data["updated_at"] = now_iso()
    if data.get("kind") == "conflict" and not _has_branch(data.get("branch")):
        # The store must never write a task that reading the file would refuse.
        raise StoreError(
            f"Task {task_id} is a conflict task and needs its branch.",
            hint="Keep its branch, or make it a plain task (kind task).",
            task_id=task_id,
        )
    try:
        updated = Task.model_validate(data)
    except ValueError as exc:
        raise StoreError(f"Invalid change to task {task_id}: {exc}", task_id=task_id) from exc
    tasks[tasks.index(current)] = updated
    return updated


def close_completed_epics(tasks: list[Task], location: str) -> list[Task]:
    """Close every epic whose children are all done, repeatedly (epics may nest)."""
    closed: list[Task] = []
    while True:
        ready = epics_to_close(tasks)
        if not ready:
            return closed
        for epic in ready:
            closed.append(
                apply_update(
                    tasks,
                    epic.id,
                    {"status": "done", "closed_reason": "all child tasks are done"},
                    location,
                )
            )


def apply_close(
    tasks: list[Task], task_id: str, reason: str | None, status: str, location: str
) -> list[Task]:
    if status not in CLOSED:
        raise StoreError(f"Cannot close a task as {status!r}; use done, failed or cancelled.")
    current = find(tasks, task_id, location)
    if current.status == status:
        raise InvalidTransition(
            f"Task {task_id} is already {status}.",
            hint="`localdispatch tasks reopen` puts it back to open.",
            task_id=task_id,
        )
    changes: dict[str, Any] = {"status": status, "closed_reason": reason or current.closed_reason}
    if status == "done" and not reason:
        changes["closed_reason"] = "closed"
    changed = [apply_update(tasks, task_id, changes, location)]
    changed.extend(close_completed_epics(tasks, location))
    return changed


def apply_reopen(tasks: list[Task], task_id: str, location: str) -> Task:
    current = find(tasks, task_id, location)
    if current.status == "open":
        raise InvalidTransition(f"Task {task_id} is already open.", task_id=task_id)
    return apply_update(tasks, task_id, {"status": "open", "closed_reason": None}, location)


def apply_add_dependency(tasks: list[Task], task_id: str, dep_id: str, location: str) -> Task:
    current = find(tasks, task_id, location)
    find(tasks, dep_id, location)
    if dep_id in current.depends_on:
        return current
    return apply_update(tasks, task_id, {"depends_on": [*current.depends_on, dep_id]}, location)


def apply_remove_dependency(tasks: list[Task], task_id: str, dep_id: str, location: str) -> Task:
    current = find(tasks, task_id, location)
    if dep_id not in current.depends_on:
        raise InvalidTransition(f"Task {task_id} does not depend on {dep_id}.", task_id=task_id)
    remaining = [dep for dep in current.depends_on if dep != dep_id]
    return apply_update(tasks, task_id, {"depends_on": remaining}, location)
