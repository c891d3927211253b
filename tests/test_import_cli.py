"""`localdispatch import` run as a real process on real repositories: Conductor tracks and
task-dispatcher YAML become tasks once, bad files are refused with their line, and
`dispatch_workers.py --plan` uses the plan's own estimates."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import add_task, git, localdispatch, run_script, task_board
from test_plans import DISPATCHER_YAML, METADATA, TRACK_PLAN

TRACK = "conductor/tracks/auth_20241226"


def write_track(repo: Path, plan: str = TRACK_PLAN) -> Path:
    folder = repo / TRACK
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.md").write_text(plan, encoding="utf-8")
    (folder / "metadata.json").write_text(json.dumps(METADATA), encoding="utf-8")
    return folder


def run_import(repo: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return localdispatch("import", *args, cwd=cwd or repo)


def imported(repo: Path, *args: str) -> dict[str, Any]:
    result = run_import(repo, *args, "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_item(board: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["imported_from"]["item"]: t for t in board.values() if "imported_from" in t}


def store_bytes(repo: Path) -> bytes | None:
    path = repo / "task_queue.json"
    return path.read_bytes() if path.exists() else None


def test_a_conductor_track_becomes_epics_and_tasks_once(repo: Path) -> None:
    write_track(repo)
    dry = run_import(repo, TRACK, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would add 8 tasks:" in dry.stdout and "Dry run: nothing was stored." in dry.stdout
    assert store_bytes(repo) is None or task_board(repo) == {}

    added = run_import(repo, TRACK)
    assert added.returncode == 0, added.stderr
    text = added.stdout
    assert "Added 8 tasks:" in text and "Stored 5 tasks." in text
    assert "t-5  Create utilities  (in t-2, line 14)" in text and "after: t-3" in text
    assert "files: src/auth/index.ts, src/auth/index.test.ts" in text
    assert "line 18: Conductor - User Manual Verification 'Core Setup'" in text
    assert "line 22: Add the session store: done in the plan ([x])" in text

    tasks = by_item(task_board(repo))
    epic, phase1, phase2 = tasks["track"], tasks["phase1"], tasks["phase2"]
    assert epic["kind"] == phase1["kind"] == phase2["kind"] == "epic"
    assert epic["title"] == "Add user authentication with sessions"
    assert phase1["parent"] == phase2["parent"] == epic["id"]
    assert tasks["phase1/task1"]["files"] == ["src/auth/index.ts", "src/auth/index.test.ts"]
    assert tasks["phase1/task3"]["depends_on"] == [tasks["phase1/task1"]["id"]]
    assert tasks["phase1/task2"]["depends_on"] == []
    # The sequential phase waits for the parallel one's last tasks, then runs in order.
    assert tasks["phase2/task2"]["depends_on"] == [
        tasks["phase1/task2"]["id"],
        tasks["phase1/task3"]["id"],
    ]
    assert tasks["phase2/task3"]["depends_on"] == [tasks["phase2/task2"]["id"]]
    assert tasks["phase2/task3"]["parent"] == phase2["id"]
    ready = json.loads(localdispatch("tasks", "ready", "--json", cwd=repo).stdout)
    assert [t["id"] for t in ready] == [tasks["phase1/task1"]["id"], tasks["phase1/task2"]["id"]]
    assert git(repo, "status", "--porcelain") == f"?? {TRACK.split('/')[0]}/"

    # The same track again, by its id and from a subfolder: nothing new, and it says so.
    before = store_bytes(repo)
    (repo / "src").mkdir()
    again = run_import(repo, "auth_20241226", cwd=repo / "src")
    assert again.returncode == 0, again.stderr
    assert "Already imported, skipped (8 tasks" in again.stdout
    assert "Nothing new to add" in again.stdout
    assert store_bytes(repo) == before


def test_a_grown_plan_adds_only_what_is_new_linked_to_what_is_stored(repo: Path) -> None:
    write_track(repo)
    first = imported(repo, TRACK)
    ids = {entry["item"]: entry["id"] for entry in first["added"]}
    grown = TRACK_PLAN + (
        "- [ ] Task 4: Password reset\n  <!-- files: src/routes/reset.ts -->\n"
        "  <!-- depends: task2 -->\n"
    )
    write_track(repo, grown)
    second = imported(repo, TRACK)
    assert [entry["item"] for entry in second["added"]] == ["phase2/task4"]
    new = second["added"][0]
    assert new["parent"] == ids["phase2"]
    assert new["depends_on"] == [ids["phase2/task3"], ids["phase2/task2"]]
    assert len(second["already_imported"]) == 8
    assert len(task_board(repo)) == 9


def test_task_dispatcher_yaml_and_the_plan_estimates(repo: Path) -> None:
    (repo / ".conductor").mkdir()
    (repo / ".conductor" / "task-dispatcher.yaml").write_text(DISPATCHER_YAML, encoding="utf-8")
    data = imported(repo, ".conductor/task-dispatcher.yaml")
    assert data["format"] == "task-dispatcher" and data["dry_run"] is False
    ids = {entry["item"]: entry["id"] for entry in data["added"]}
    tasks = by_item(task_board(repo))
    t1, t4 = tasks["task/T1"], tasks["task/T4"]
    assert t1["estimate_secs"] == 14400 and t1["priority"] == 0
    assert t1["files"] == ["database/migrations/001_error_recovery_and_scheduling.sql"]
    assert "Validation (check these before you commit):" in t1["description"]
    assert t4["depends_on"] == [ids["task/T1"], ids["task/T2"]]
    assert t4["parent"] == ids["plan"]
    assert imported(repo, ".conductor")["added"] == []  # the folder names the same file

    plain = add_task(repo, "Write the changelog", "--files", "CHANGELOG.md")
    plan = run_script("dispatch_workers.py", "--plan", "--workers", "2", cwd=repo)
    assert plan.returncode == 0, plan.stderr
    assert f"{ids['task/T1']}  PostgreSQL Schema Design  [4.0 h, from the plan]" in plan.stdout
    assert f"{plain}  Write the changelog  [10.0 min, the default, no history yet]" in plan.stdout
    assert "estimate: the plan's own estimates for" in plan.stdout
    assert "for the other 1 task" in plan.stdout
    as_data = json.loads(
        run_script("dispatch_workers.py", "--plan", "--json", "--workers", "2", cwd=repo).stdout
    )
    first_wave = {run["task_id"]: run["end"] - run["start"] for run in as_data["waves"][0]}
    assert first_wave[ids["task/T1"]] == 14400
    assert "the plan's own estimates" in as_data["estimate"]

    # Once workers have finished attempts here, what they really take wins over effort hours.
    events = repo / ".dispatch" / "events.jsonl"
    finished = {"event": "finish", "task": plain, "commits": 1, "secs": 90.0}
    events.write_text(json.dumps(finished) + "\n", encoding="utf-8")
    later = run_script("dispatch_workers.py", "--plan", "--workers", "2", cwd=repo)
    assert "median of 1 finished attempts" in later.stdout
    assert "history wins over the plan's estimates" in later.stdout
    assert "from the plan" not in later.stdout


def test_bad_files_name_the_line_and_leave_the_store_alone(repo: Path) -> None:
    add_task(repo, "Already here")
    before = store_bytes(repo)
    cases = {
        "syntax.yaml": (
            "tasks:\n  - taskId: T1\n    title: Fix: the parser\n",
            "syntax.yaml, line 3: the YAML does not parse",
        ),
        "unknown.yaml": (
            "tasks:\n  - taskId: T1\n    title: A\n    dependencies: [T9]\n",
            "unknown.yaml, line 4: T1 depends on 'T9', which is not a taskId",
        ),
        "cycle.yaml": (
            "tasks:\n  - {taskId: T1, title: A, dependencies: [T2]}\n"
            "  - {taskId: T2, title: B, dependencies: [T1]}\n",
            "cycle.yaml, line 2: these tasks wait for each other in a circle",
        ),
        "empty.md": ("# Plan\n\nNothing planned yet.\n", "empty.md: holds no tasks"),
        "cycle.md": (
            "## Phase 1: A\n<!-- execution: parallel -->\n- [ ] Task 1: x\n"
            "  <!-- depends: task2 -->\n- [ ] Task 2: y\n  <!-- depends: task1 -->\n",
            "cycle.md, line 3: these tasks wait for each other in a circle",
        ),
    }
    for name, (content, message) in cases.items():
        (repo / name).write_text(content, encoding="utf-8")
        result = run_import(repo, name)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith(f"error: {message}"), result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    missing = run_import(repo, "no/such/plan.md")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert store_bytes(repo) == before


def test_parent_puts_the_plan_under_an_existing_task(repo: Path) -> None:
    write_track(repo)
    parent = add_task(repo, "Ship authentication")
    data = imported(repo, TRACK, "--parent", parent)
    assert data["parent"] == parent and data["added"][0]["parent"] == parent
    board = task_board(repo)
    assert board[parent]["kind"] == "epic"
    closed = localdispatch("tasks", "close", parent, cwd=repo)
    assert closed.returncode == 0, closed.stderr
    refused = run_import(repo, TRACK, "--parent", parent)
    assert refused.returncode == 1 and f"Task {parent} is done" in refused.stderr
