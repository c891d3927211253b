"""The live status picture, rendered to text, and the plain fallback when not a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from conftest import localdispatch
from localdispatch.cli.status_view import render


def snapshot(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "repo": "/work/my repo",
        "dispatcher": {"pid": 4242},
        "counts": {"open": 3, "in_progress": 3, "done": 5, "failed": 1, "cancelled": 0},
        "ready": ["t-9"],
        "workers": [
            {
                "slot": 1,
                "task": "t-4",
                "title": "Add the median ✓",
                "elapsed_secs": 75.0,
                "cpu_percent": 12.5,
                "rss_mb": 80.2,
            }
        ],
        "merging": [{"slot": 2, "task": "t-5", "title": "Mean", "elapsed_secs": 3.0}],
        "pending_merges": [
            {"task": "t-6", "branch": "ld/t-6-x", "reason": "your uncommitted change to app.py"}
        ],
        "failed": [{"task": "t-7", "title": "Broken", "reason": "no commits"}],
    }
    data.update(over)
    return data


def text_of(data: dict[str, Any], events: list[str], slots: int = 3) -> str:
    console = Console(record=True, width=110, color_system=None)
    console.print(render(data, events, slots=slots))
    return console.export_text()


def test_picture_shows_slots_counts_waiting_and_events() -> None:
    out = text_of(snapshot(), ["08:00:01 [w1] started t-4: Add the median"])
    assert "dispatcher pid 4242" in out
    assert "3 open" in out and "1 running" in out and "2 waiting to merge" in out
    assert "5 done" in out and "1 failed" in out
    assert "t-4" in out and "Add the median ✓" in out and "1:15" in out
    assert "12%" in out or "13%" in out
    assert "80 MB" in out
    assert "(merging)" in out
    assert "w3" in out and "idle" in out
    assert "your uncommitted change to app.py" in out
    assert "failed: t-7" in out
    assert "started t-4" in out


def test_idle_picture() -> None:
    out = text_of(
        snapshot(workers=[], merging=[], pending_merges=[], failed=[], dispatcher=None), []
    )
    assert out.count("idle") == 3
    assert "0 running" in out


def test_status_is_plain_when_not_a_terminal(repo: Path) -> None:
    localdispatch("tasks", "add", "Something", cwd=repo)
    result = localdispatch("dispatch", "--status", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "Tasks: 1 open" in result.stdout
    assert "\x1b[" not in result.stdout


def test_a_merge_waiting_for_a_person_shows_its_steps_apart() -> None:
    person = {
        "task": "t-8",
        "branch": "ld/t-8-y",
        "reason": "no worker could resolve the conflict",
        "person": True,
        "steps": ["git worktree add ../resolve-t-9 ld/t-8-y", "localdispatch tasks close t-9"],
    }
    out = text_of(snapshot(pending_merges=[person]), [])
    assert "waiting for you:" in out and "no worker could resolve" in out
    assert "1. git worktree add ../resolve-t-9 ld/t-8-y" in out
    assert "2. localdispatch tasks close t-9" in out
    assert "waiting to merge:" not in out
