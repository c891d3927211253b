"""`localdispatch tasks ...` run as a real process against a real repository."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, localdispatch


def ok(repo: Path, *args: str) -> str:
    result = localdispatch(*args, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def as_json(repo: Path, *args: str) -> object:
    return json.loads(ok(repo, *args, "--json"))


def test_add_list_show_ready_close(repo: Path) -> None:
    added = as_json(
        repo,
        "tasks",
        "add",
        "Write the parser",
        "-d",
        "Parse lines",
        "--files",
        "a.py,b.py",
        "-p",
        "1",
    )
    assert isinstance(added, dict)
    assert added["id"] == "t-1" and added["files"] == ["a.py", "b.py"] and added["priority"] == 1
    ok(repo, "tasks", "add", "Use the parser", "--depends-on", "t-1", "--files", "c.py")
    ok(repo, "tasks", "add", "Goal", "--kind", "epic")

    listing = ok(repo, "tasks", "list")
    assert "t-1" in listing and "waits for t-1" in listing

    ready = as_json(repo, "tasks", "ready")
    assert [t["id"] for t in ready] == ["t-1"]  # type: ignore[index,union-attr]

    shown = ok(repo, "tasks", "show", "t-2")
    assert "depends on: t-1" in shown and "waiting for: t-1" in shown

    ok(repo, "tasks", "close", "t-1", "--reason", "done by hand")
    ready = as_json(repo, "tasks", "ready")
    assert [t["id"] for t in ready] == ["t-2"]  # type: ignore[index,union-attr]
    assert as_json(repo, "tasks", "show", "t-1")["closed_reason"] == "done by hand"  # type: ignore[index]

    # done tasks are hidden by default and shown with --all
    assert "t-1" not in ok(repo, "tasks", "list")
    assert "t-1" in ok(repo, "tasks", "list", "--all")
    # the store never shows up in git status
    assert git(repo, "status", "--porcelain") == ""


def test_ready_orders_by_priority_and_critical_path(repo: Path) -> None:
    ok(repo, "tasks", "add", "Leaf")  # t-1
    ok(repo, "tasks", "add", "Head of chain")  # t-2
    ok(repo, "tasks", "add", "Middle", "--after", "t-2")  # t-3
    ok(repo, "tasks", "add", "Urgent", "-p", "0")  # t-4
    ok(repo, "tasks", "add", "Tail", "--after", "t-3")  # t-5
    ready = as_json(repo, "tasks", "ready")
    assert [t["id"] for t in ready] == ["t-4", "t-2", "t-1"]  # type: ignore[index,union-attr]


def test_dep_add_remove_and_cycle_refused(repo: Path) -> None:
    for title in ("A", "B", "C"):
        ok(repo, "tasks", "add", title)
    ok(repo, "tasks", "dep", "add", "t-2", "t-1")
    ok(repo, "tasks", "dep", "add", "t-3", "t-2")
    result = localdispatch("tasks", "dep", "add", "t-1", "t-3", cwd=repo)
    assert result.returncode == 1
    assert "cycle" in result.stderr and "t-1 -> t-3 -> t-2 -> t-1" in result.stderr
    assert "Traceback" not in result.stderr
    ok(repo, "tasks", "dep", "remove", "t-3", "t-2")
    assert as_json(repo, "tasks", "show", "t-3")["depends_on"] == []  # type: ignore[index]


def test_epic_closes_with_its_children(repo: Path) -> None:
    ok(repo, "tasks", "add", "Goal", "--kind", "epic")
    ok(repo, "tasks", "add", "Part one", "--parent", "t-1")
    ok(repo, "tasks", "add", "Part two", "--parent", "t-1")
    ok(repo, "tasks", "close", "t-2")
    assert as_json(repo, "tasks", "show", "t-1")["status"] == "open"  # type: ignore[index]
    out = ok(repo, "tasks", "close", "t-3")
    assert "t-1" in out
    assert as_json(repo, "tasks", "show", "t-1")["status"] == "done"  # type: ignore[index]


def test_reopen_and_cancel(repo: Path) -> None:
    ok(repo, "tasks", "add", "A")
    ok(repo, "tasks", "cancel", "t-1", "--reason", "obsolete")
    task = as_json(repo, "tasks", "show", "t-1")
    assert task["status"] == "cancelled" and task["closed_reason"] == "obsolete"  # type: ignore[index]
    ok(repo, "tasks", "reopen", "t-1")
    assert as_json(repo, "tasks", "show", "t-1")["status"] == "open"  # type: ignore[index]


def test_user_errors_are_one_line_without_traceback(repo: Path) -> None:
    cases = [
        (["tasks", "show", "t-9"], 1, "No task 't-9'"),
        (["tasks", "close", "t-9"], 1, "No task 't-9'"),
        (["tasks", "add", "x", "--after", "t-9"], 1, "'t-9'"),
        (["tasks", "add", "x", "-p", "7"], 2, "invalid choice"),
        (["tasks", "frobnicate"], 2, "invalid choice"),
        (["tasks", "dep", "add", "t-1", "t-1"], 2, "cannot depend on itself"),
    ]
    ok(repo, "tasks", "add", "exists")
    for args, code, needle in cases:
        result = localdispatch(*args, cwd=repo)
        assert result.returncode == code, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_corrupt_store_exits_1_and_is_left_alone(repo: Path) -> None:
    store = repo / "task_queue.json"
    store.write_text('{"version": 1, "tasks": [{"id": "t-1", "title": "half', encoding="utf-8")
    before = store.read_bytes()
    for args in (["tasks", "list"], ["tasks", "add", "new"], ["tasks", "ready"]):
        result = localdispatch(*args, cwd=repo)
        assert result.returncode == 1, result.stderr
        assert "task_queue.json" in result.stderr and "corrupt" in result.stderr
        assert "Traceback" not in result.stderr
    assert store.read_bytes() == before


def test_unicode_titles_round_trip(repo: Path) -> None:
    ok(repo, "tasks", "add", "Добавить график ✓ 図")
    assert "Добавить график ✓ 図" in ok(repo, "tasks", "list")
    assert as_json(repo, "tasks", "show", "t-1")["title"] == "Добавить график ✓ 図"  # type: ignore[index]


def test_config_names_a_custom_store_file(repo: Path) -> None:
    (repo / "dispatch_config.json").write_text(
        '{"task_queue_file": "state/queue.json"}', encoding="utf-8"
    )
    ok(repo, "tasks", "add", "A")
    assert (repo / "state" / "queue.json").exists()
    assert not (repo / "task_queue.json").exists()
