"""Choosing work (pick_next, rank_ready) and the --plan simulation, tested directly."""

from __future__ import annotations

from typing import Any

from localdispatch.dispatch.scheduling import pick_next, plan_waves, rank_ready
from localdispatch.tasks import Task


def task(task_id: str, **fields: Any) -> Task:
    fields.setdefault("title", f"task {task_id}")
    fields.setdefault("created_at", f"2024-01-01T00:00:{int(task_id[2:]):02d}.000000Z")
    return Task(id=task_id, **fields)


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def test_conflict_tasks_come_first_then_priority() -> None:
    tasks = [
        task("t-1", priority=0),
        task("t-2", priority=3, kind="conflict", branch="ld/t-9-x"),
        task("t-3", priority=1),
    ]
    assert ids(rank_ready(tasks)) == ["t-2", "t-1", "t-3"]


def test_longest_remaining_chain_first_at_equal_priority() -> None:
    tasks = [
        task("t-1"),
        task("t-2"),
        task("t-3", depends_on=["t-2"]),
        task("t-4", depends_on=["t-3"]),
    ]
    assert ids(pick_next(tasks, [], 1)) == ["t-2"]


def test_more_unblocked_tasks_break_a_chain_tie_then_age() -> None:
    tasks = [
        task("t-1"),
        task("t-2"),
        task("t-3", depends_on=["t-2"]),
        task("t-4", depends_on=["t-2"]),
        task("t-5", depends_on=["t-1"]),
    ]
    assert ids(rank_ready(tasks)) == ["t-2", "t-1"]
    assert ids(rank_ready([task("t-7"), task("t-6")])) == ["t-6", "t-7"]


def test_weight_makes_the_longer_chain_win() -> None:
    tasks = [task("t-1", description="long"), task("t-2"), task("t-3", depends_on=["t-2"])]

    def weight(t: Task) -> float:
        return 10.0 if t.description == "long" else 1.0

    assert ids(pick_next(tasks, [], 1, weight)) == ["t-1"]
    assert ids(pick_next(tasks, [], 1)) == ["t-2"]


def test_overlapping_files_never_run_together() -> None:
    running = [task("t-1", files=["src/app.py"], status="in_progress")]
    tasks = [
        *running,
        task("t-2", files=["src/app.py"]),
        task("t-3", files=["src"]),
        task("t-4", files=["SRC/App.py"]),
        task("t-5", files=["docs/readme.md"]),
    ]
    assert ids(pick_next(tasks, running, 4)) == ["t-5"]


def test_overlap_among_the_chosen_too() -> None:
    tasks = [task("t-1", files=["a.py"]), task("t-2", files=["a.py"]), task("t-3", files=["b"])]
    assert ids(pick_next(tasks, [], 3)) == ["t-1", "t-3"]


def test_a_task_without_files_is_not_held_back() -> None:
    running = [task("t-1", files=["a.py"], status="in_progress")]
    tasks = [*running, task("t-2"), task("t-3")]
    assert ids(pick_next(tasks, running, 5)) == ["t-2", "t-3"]


def test_dependencies_epics_and_free_slots() -> None:
    tasks = [
        task("t-1", status="done"),
        task("t-2", depends_on=["t-1"]),
        task("t-3", depends_on=["t-4"]),
        task("t-4", status="in_progress"),
        task("t-5", kind="epic"),
        task("t-6", depends_on=["t-404"]),
    ]
    assert ids(pick_next(tasks, [], 5)) == ["t-2"]
    assert pick_next(tasks, [], 0) == []


def test_plan_waves_with_a_chain_and_independent_tasks() -> None:
    tasks = [
        task("t-1"),
        task("t-2", depends_on=["t-1"]),
        task("t-3"),
        task("t-4"),
    ]
    plan = plan_waves(tasks, 2, lambda _t: 60.0)
    waves = [ids_of(wave) for wave in plan.waves]
    assert waves[0] == ["t-1", "t-3"]
    assert sorted(waves[1]) == ["t-2", "t-4"]
    assert plan.parallel_secs == 120.0
    assert plan.sequential_secs == 240.0
    assert plan.speedup == 2.0
    assert plan.blocked == []


def test_plan_counts_running_tasks_and_lists_blocked_ones() -> None:
    tasks = [
        task("t-1", status="in_progress"),
        task("t-2", depends_on=["t-1"]),
        task("t-3", status="failed"),
        task("t-4", depends_on=["t-3"]),
        task("t-5", status="in_progress"),  # waiting for a merge: taken as done
        task("t-6", depends_on=["t-5"]),
    ]
    plan = plan_waves(tasks, 1, lambda _t: 10.0, running={"t-1": 4.0})
    assert [r.task_id for r in plan.running] == ["t-1"]
    assert [ids_of(w) for w in plan.waves] == [["t-2"], ["t-6"]] or [
        ids_of(w) for w in plan.waves
    ] == [["t-6"], ["t-2"]]
    assert plan.blocked == ["t-4"]
    assert plan.parallel_secs == 24.0
    assert plan.sequential_secs == 24.0
    data = plan.as_dict()
    assert data["speedup"] == 1.0 and data["blocked"] == ["t-4"]


def test_plan_respects_file_overlap() -> None:
    tasks = [task("t-1", files=["a.py"]), task("t-2", files=["a.py"])]
    plan = plan_waves(tasks, 4, lambda _t: 5.0)
    assert [ids_of(w) for w in plan.waves] == [["t-1"], ["t-2"]]
    assert plan.parallel_secs == 10.0


def test_plan_of_nothing() -> None:
    plan = plan_waves([], 3, lambda _t: 5.0)
    assert plan.waves == [] and plan.parallel_secs == 0 and plan.speedup == 1.0


def ids_of(wave: list[Any]) -> list[str]:
    return [run.task_id for run in wave]
