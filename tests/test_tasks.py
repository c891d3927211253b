"""The pure task-graph logic: ready set, cycles, epics, critical path, file overlap."""

from __future__ import annotations

from typing import Any

import pytest

from localdispatch.errors import CycleError
from localdispatch.tasks import (
    Task,
    check_new_dependency,
    epics_to_close,
    files_overlap,
    find_cycle,
    ready_tasks,
    remaining_chain,
    slugify,
    unblock_counts,
)


def t(task_id: str, **fields: Any) -> Task:
    return Task(id=task_id, title=fields.pop("title", task_id), **fields)


def test_ready_needs_open_non_epic_with_done_deps() -> None:
    tasks = [
        t("a", status="done"),
        t("b", depends_on=["a"]),
        t("c", depends_on=["b"]),
        t("d", kind="epic"),
        t("e", status="in_progress"),
        t("f", depends_on=["missing"]),
        t("g", kind="conflict"),
    ]
    assert [x.id for x in ready_tasks(tasks)] == ["b", "g"]


def test_find_cycle_reports_the_loop() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    cycle = find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"x": ["x"]}) == ["x", "x"]


def test_find_cycle_handles_long_chains_without_recursion() -> None:
    edges = {str(i): [str(i + 1)] for i in range(20_000)}
    assert find_cycle(edges) is None
    edges["20000"] = ["0"]
    cycle = find_cycle(edges)
    assert cycle is not None and len(cycle) == 20_002


def test_check_new_dependency_names_the_cycle() -> None:
    tasks = [t("t-1"), t("t-2", depends_on=["t-1"]), t("t-3", depends_on=["t-2"])]
    check_new_dependency(tasks, "t-3", "t-1")  # fine: no loop
    with pytest.raises(CycleError, match="t-1 -> t-3 -> t-2 -> t-1"):
        check_new_dependency(tasks, "t-1", "t-3")


def test_epics_close_only_when_all_children_done() -> None:
    tasks = [
        t("e1", kind="epic"),
        t("a", parent="e1", status="done"),
        t("b", parent="e1", status="cancelled"),
        t("e2", kind="epic"),
        t("c", parent="e2", status="done"),
        t("d", parent="e2", status="failed"),
        t("e3", kind="epic"),
    ]
    assert [x.id for x in epics_to_close(tasks)] == ["e1"]


def test_remaining_chain_measures_the_critical_path() -> None:
    tasks = [
        t("a"),
        t("b", depends_on=["a"]),
        t("c", depends_on=["b"]),
        t("d"),
        t("e", depends_on=["a", "d"]),
        t("done", status="done"),
        t("f", depends_on=["done"]),
    ]
    chain = remaining_chain(tasks)
    assert chain == {"a": 3, "b": 2, "c": 1, "d": 2, "e": 1, "f": 1}
    weighted = remaining_chain(tasks, weight=lambda task: 10.0 if task.id == "e" else 1.0)
    assert weighted["d"] == 11 and weighted["a"] == 11


def test_remaining_chain_survives_a_stored_cycle_and_deep_chains() -> None:
    assert set(remaining_chain([t("a", depends_on=["b"]), t("b", depends_on=["a"])])) == {"a", "b"}
    deep = [t("0")] + [t(str(i), depends_on=[str(i - 1)]) for i in range(1, 5000)]
    assert remaining_chain(deep)["0"] == 5000


def test_unblock_counts() -> None:
    tasks = [t("a"), t("b", depends_on=["a"]), t("c", depends_on=["a"]), t("d", status="done")]
    assert unblock_counts(tasks) == {"a": 2, "b": 0, "c": 0}


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (["a.py"], ["a.py"], True),
        (["src/a.py"], ["SRC\\A.py"], True),
        (["src"], ["src/x/y.py"], True),
        (["src/a.py"], ["src/ab.py"], False),
        ([], ["a.py"], False),
        (["a.py"], [], False),
        (["./docs/"], ["docs/readme.md"], True),
    ],
)
def test_files_overlap(left: list[str], right: list[str], expected: bool) -> None:
    assert files_overlap(left, right) is expected


def test_slugify() -> None:
    assert slugify("Fix the CLI! (again)") == "fix-the-cli-again"
    assert slugify("ünïcode ✓✓") == "n-code"
    assert slugify("!!!") == "task"
    assert len(slugify("word " * 40)) <= 40


def test_one_title_key_for_plans_and_suggestions() -> None:
    from localdispatch.tasks import title_key

    assert title_key("  Fix   THE\tparser ") == title_key("fix the parser")
    assert title_key("Add tests.") == title_key("add tests") == title_key("Add tests:")
    assert title_key("Add tests") != title_key("Add more tests")
