"""Storing an imported plan: one epic for the plan, its phases or groups, and its tasks.

Every task it makes records where it came from (``imported_from``: the file and the item's id
in it), so importing the same file again adds only what is new and links it to what is already
stored. Everything new goes in one ``add_many`` batch: all of it is stored, or none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localdispatch.errors import InvalidTransition
from localdispatch.plans.model import ImportedPlan, PlanItem
from localdispatch.store import TaskDraft, TaskStore
from localdispatch.tasks import ACTIVE, Task

IMPORTED_FROM = "imported_from"
_REF = "@import:{}"  # batch-local refs; "@" cannot start a task id, so they never collide


@dataclass
class NewTask:
    """A task the import adds: what the plan says, and (once stored) the task it became."""

    item: PlanItem
    ref: str  # "#3": how a dry run names it
    depends_on: list[str] = field(default_factory=list)  # ids of stored tasks, or "#n"
    parent: str | None = None
    task: Task | None = None
    # The same links as the store is given them: stored ids, or refs to drafts of the batch.
    draft_depends: list[str] = field(default_factory=list, repr=False)
    draft_parent: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The task's id once stored, else its ``#n``."""
        return self.task.id if self.task else self.ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.task.id if self.task else None,
            "ref": self.ref,
            "item": self.item.item,
            "line": self.item.line,
            "kind": self.item.kind,
            "title": self.item.title,
            "depends_on": list(self.depends_on),
            "parent": self.parent,
            "files": list(self.item.files),
            "priority": self.item.priority,
            "estimate_secs": self.item.estimate_secs,
        }


@dataclass
class ImportResult:
    plan: ImportedPlan
    dry_run: bool
    parent: Task | None = None
    added: list[NewTask] = field(default_factory=list)
    already: list[tuple[PlanItem, Task]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.plan.to_dict(),
            "dry_run": self.dry_run,
            "parent": self.parent.id if self.parent else None,
            "added": [entry.to_dict() for entry in self.added],
            "already_imported": [
                {
                    "id": task.id,
                    "item": item.item,
                    "line": item.line,
                    "title": task.title,
                    "status": task.status,
                }
                for item, task in self.already
            ],
        }


def imported_index(tasks: Iterable[Task], source: str) -> dict[str, Task]:
    """item id -> the stored task imported from that item of ``source`` (the first, if a
    concurrent import made two)."""
    index: dict[str, Task] = {}
    for task in tasks:
        origin = (task.model_extra or {}).get(IMPORTED_FROM)
        if isinstance(origin, dict) and origin.get("file") == source:
            item = origin.get("item")
            if isinstance(item, str):
                index.setdefault(item, task)
    return index


def import_plan(
    store: TaskStore, plan: ImportedPlan, *, parent_id: str | None = None, dry_run: bool = False
) -> ImportResult:
    """Add what of ``plan`` the store does not hold yet (nothing with ``dry_run``); the plan's
    epic goes under ``parent_id`` when one is given."""
    tasks = store.all()
    parent = _parent(store, parent_id) if parent_id else None
    result = ImportResult(plan=plan, dry_run=dry_run, parent=parent)
    existing = imported_index(tasks, plan.source)
    inherited = _inherited(parent, tasks)
    shown: dict[str, str] = {}  # item id -> stored id, or "#n" for a task not stored yet
    linked: dict[str, str] = {}  # item id -> stored id, or the batch ref of its draft
    for item in _needed(plan.items):
        stored = existing.get(item.item)
        if stored is not None:
            result.already.append((item, stored))
            shown[item.item] = linked[item.item] = stored.id
        else:
            entry = NewTask(item=item, ref=f"#{len(result.added) + 1}")
            shown[item.item], linked[item.item] = entry.label, _REF.format(item.item)
            result.added.append(entry)
    for entry in result.added:  # a task may wait for one further down the file
        item = entry.item
        entry.depends_on = [shown[dep] for dep in item.depends_on]
        entry.draft_depends = [linked[dep] for dep in item.depends_on]
        if item.kind == "task" and not item.depends_on:
            entry.depends_on = list(inherited)
            entry.draft_depends = list(inherited)
        if item.parent is not None:
            entry.parent, entry.draft_parent = shown[item.parent], linked[item.parent]
        elif parent is not None:
            entry.parent = entry.draft_parent = parent.id
    if dry_run or not result.added:
        return result
    drafts = [_draft(entry, plan.source) for entry in result.added]
    created = _store(store, drafts, parent)
    for entry, task in zip(result.added, created, strict=True):
        shown[entry.item.item] = task.id
        entry.task = task
    for entry in result.added:
        item = entry.item
        if item.depends_on:
            entry.depends_on = [shown[dep] for dep in item.depends_on]
        if item.parent is not None:
            entry.parent = shown[item.parent]
    return result


def _needed(items: Sequence[PlanItem]) -> list[PlanItem]:
    """Every task, and every epic that holds one (an epic without children never closes)."""
    holds: set[str] = set()
    by_id = {item.item: item for item in items}
    for item in items:
        if item.kind != "task":
            continue
        parent = item.parent
        while parent is not None and parent not in holds:
            holds.add(parent)
            parent = by_id[parent].parent if parent in by_id else None
    return [item for item in items if item.kind == "task" or item.item in holds]


def _parent(store: TaskStore, parent_id: str) -> Task:
    parent = store.get(parent_id)
    if parent.kind == "conflict":
        raise InvalidTransition(
            f"Task {parent.id} is a merge-conflict task; a plan cannot go under it.",
            hint="Give an epic or an open task with --parent, or leave --parent out.",
            task_id=parent.id,
        )
    if parent.status != "open":
        raise InvalidTransition(
            f"Task {parent.id} is {parent.status}; a plan goes only under an open task or epic.",
            hint=f"Reopen it first (`localdispatch tasks reopen {parent.id}`) or leave "
            "--parent out.",
            task_id=parent.id,
        )
    return parent


def _inherited(parent: Task | None, tasks: Sequence[Task]) -> list[str]:
    """What the parent waited for and is not done: an epic is never dispatched, so the
    plan's first tasks must wait for it instead."""
    if parent is None:
        return []
    status = {task.id: task.status for task in tasks}
    return [dep for dep in parent.depends_on if status.get(dep) in ACTIVE]


def _draft(entry: NewTask, source: str) -> TaskDraft:
    item = entry.item
    extra: dict[str, Any] = {IMPORTED_FROM: {"file": source, "item": item.item}}
    if item.estimate_secs is not None:
        extra["estimate_secs"] = item.estimate_secs
    return TaskDraft(
        title=item.title,
        description=item.description,
        kind=item.kind,
        priority=item.priority,
        files=list(item.files),
        depends_on=list(entry.draft_depends),
        parent=entry.draft_parent,
        ref=_REF.format(item.item),
        extra=extra,
    )


def _store(store: TaskStore, drafts: list[TaskDraft], parent: Task | None) -> list[Task]:
    if parent is None or parent.kind == "epic":
        return store.add_many(drafts)
    # A task with children is an epic: change it first, so no dispatcher claims it while its
    # children are being added; if adding them fails, it goes back to what it was.
    store.update(parent.id, kind="epic")
    try:
        return store.add_many(drafts)
    except BaseException:
        store.update(parent.id, kind=parent.kind)
        raise
