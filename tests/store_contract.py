"""The contract every TaskStore backend must honour.

A backend's test module subclasses :class:`StoreContract` and provides a ``store`` fixture
that returns an empty store; every test here then runs against it (as huey's StorageTests do).
"""

from __future__ import annotations

import pytest

from localdispatch.errors import CycleError, InvalidTransition, StoreError, TaskNotFound
from localdispatch.store import TaskDraft, TaskStore
from localdispatch.tasks import ready_tasks


class StoreContract:
    """Behaviour shared by all backends. Subclasses define the ``store`` fixture."""

    def test_is_a_task_store(self, store: TaskStore) -> None:
        assert isinstance(store, TaskStore)

    def test_empty(self, store: TaskStore) -> None:
        assert store.all() == []

    def test_add_gives_distinct_ids_and_defaults(self, store: TaskStore) -> None:
        first = store.add(TaskDraft(title="First"))
        second = store.add(TaskDraft(title="  Second   task "))
        assert first.id != second.id
        assert second.title == "Second task"
        assert first.status == "open" and first.kind == "task" and first.priority == 2
        assert first.attempts == 0 and first.files == [] and first.depends_on == []
        assert [t.id for t in store.all()] == [first.id, second.id]
        assert store.get(first.id) == first

    def test_add_keeps_every_field(self, store: TaskStore) -> None:
        epic = store.add(TaskDraft(title="Epic", kind="epic"))
        dep = store.add(TaskDraft(title="Dep"))
        task = store.add(
            TaskDraft(
                title="Full",
                description="line one\nline two ✓",
                priority=0,
                files=["src/a.py", "docs/b.md", "src/a.py"],
                depends_on=[dep.id],
                parent=epic.id,
                discovered_from=dep.id,
            )
        )
        again = store.get(task.id)
        assert again.description == "line one\nline two ✓"
        assert again.priority == 0
        assert again.files == ["src/a.py", "docs/b.md"]
        assert again.depends_on == [dep.id]
        assert again.parent == epic.id and again.discovered_from == dep.id

    def test_add_refuses_unknown_references(self, store: TaskStore) -> None:
        with pytest.raises(TaskNotFound):
            store.add(TaskDraft(title="x", depends_on=["t-999"]))
        with pytest.raises(TaskNotFound):
            store.add(TaskDraft(title="x", parent="t-999"))
        with pytest.raises(StoreError):
            store.add(TaskDraft(title="   "))
        assert store.all() == []

    def test_add_many_is_atomic_and_resolves_refs(self, store: TaskStore) -> None:
        epic = store.add(TaskDraft(title="Goal", kind="epic"))
        created = store.add_many(
            [
                TaskDraft(title="A", ref="a", parent=epic.id),
                TaskDraft(title="B", ref="b", depends_on=["a"], parent=epic.id),
            ]
        )
        assert created[1].depends_on == [created[0].id]
        with pytest.raises(TaskNotFound):
            store.add_many([TaskDraft(title="C"), TaskDraft(title="D", depends_on=["nope"])])
        assert len(store.all()) == 3

    def test_get_unknown(self, store: TaskStore) -> None:
        with pytest.raises(TaskNotFound, match="t-42"):
            store.get("t-42")

    def test_ready_follows_dependencies(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        b = store.add(TaskDraft(title="B", depends_on=[a.id]))
        store.add(TaskDraft(title="Epic", kind="epic"))
        assert [t.id for t in ready_tasks(store.all())] == [a.id]
        store.close(a.id)
        assert [t.id for t in ready_tasks(store.all())] == [b.id]

    def test_failed_dependency_blocks(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        store.add(TaskDraft(title="B", depends_on=[a.id]))
        store.close(a.id, status="failed", reason="broke")
        assert ready_tasks(store.all()) == []
        assert store.get(a.id).closed_reason == "broke"

    def test_claim_is_exclusive(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        claimed = store.claim(a.id, branch="ld/t-1-a", attempts=1)
        assert claimed is not None
        assert claimed.status == "in_progress" and claimed.branch == "ld/t-1-a"
        assert store.claim(a.id) is None

    def test_update_validates(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        updated = store.update(a.id, priority=1, files=["x.py"])
        assert updated.priority == 1 and store.get(a.id).files == ["x.py"]
        with pytest.raises(StoreError):
            store.update(a.id, status="exploded")
        with pytest.raises(StoreError):
            store.update(a.id, id="t-77")
        with pytest.raises(StoreError):
            store.update(a.id, priority=9)
        assert store.get(a.id).priority == 1

    def test_close_reopen_cancel(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        store.close(a.id, reason="finished")
        assert store.get(a.id).status == "done"
        with pytest.raises(InvalidTransition):
            store.close(a.id)
        store.reopen(a.id)
        assert store.get(a.id).status == "open"
        assert store.get(a.id).closed_reason is None
        with pytest.raises(InvalidTransition):
            store.reopen(a.id)
        store.close(a.id, status="cancelled", reason="not needed")
        assert store.get(a.id).status == "cancelled"

    def test_epic_closes_when_children_done(self, store: TaskStore) -> None:
        epic = store.add(TaskDraft(title="Goal", kind="epic"))
        kids = store.add_many([TaskDraft(title=f"Part {i}", parent=epic.id) for i in range(3)])
        store.close(kids[0].id)
        store.close(kids[1].id, status="cancelled")
        assert store.get(epic.id).status == "open"
        changed = store.close(kids[2].id)
        assert epic.id in [t.id for t in changed]
        assert store.get(epic.id).status == "done"

    def test_epic_closes_through_update_to_done(self, store: TaskStore) -> None:
        epic = store.add(TaskDraft(title="Goal", kind="epic"))
        kid = store.add(TaskDraft(title="Part", parent=epic.id))
        store.update(kid.id, status="done", merged_commit="abc123")
        assert store.get(epic.id).status == "done"

    def test_dependency_add_remove_and_cycles(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        b = store.add(TaskDraft(title="B"))
        c = store.add(TaskDraft(title="C"))
        store.add_dependency(b.id, a.id)
        store.add_dependency(c.id, b.id)
        with pytest.raises(CycleError) as caught:
            store.add_dependency(a.id, c.id)
        assert caught.value.cycle[0] == caught.value.cycle[-1]
        assert {a.id, b.id, c.id} <= set(caught.value.cycle)
        assert a.id in str(caught.value) and c.id in str(caught.value)
        with pytest.raises(CycleError):
            store.add_dependency(a.id, a.id)
        assert store.get(a.id).depends_on == []
        store.remove_dependency(c.id, b.id)
        assert store.get(c.id).depends_on == []
        with pytest.raises(InvalidTransition):
            store.remove_dependency(c.id, b.id)
        with pytest.raises(TaskNotFound):
            store.add_dependency(a.id, "t-404")

    def test_update_depends_on_refuses_cycle(self, store: TaskStore) -> None:
        a = store.add(TaskDraft(title="A"))
        b = store.add(TaskDraft(title="B", depends_on=[a.id]))
        with pytest.raises(CycleError):
            store.update(a.id, depends_on=[b.id])
        assert store.get(a.id).depends_on == []

    def test_a_conflict_task_always_has_its_branch(self, store: TaskStore) -> None:
        """The store never writes a task that reading it back would refuse."""
        with pytest.raises(StoreError, match="conflict task without the branch"):
            store.add(TaskDraft(title="Resolve by hand", kind="conflict"))
        assert store.all() == []
        conflict = store.add(
            TaskDraft(title="Resolve", kind="conflict", extra={"branch": "ld/t-1-x"})
        )
        assert conflict.branch == "ld/t-1-x"
        with pytest.raises(StoreError, match="needs its branch"):
            store.update(conflict.id, branch=None)
        plain = store.add(TaskDraft(title="Plain"))
        with pytest.raises(StoreError, match="needs its branch"):
            store.update(plain.id, kind="conflict")
        assert store.get(conflict.id).branch == "ld/t-1-x"
        assert store.get(plain.id).kind == "task"
