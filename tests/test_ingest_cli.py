"""`ingest_suggested_tasks.py` and `localdispatch ingest`, run as real processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import git, localdispatch, run_script


def ingest_script(
    repo: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = run_script("ingest_suggested_tasks.py", *args, cwd=cwd or repo)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


LINES = (
    "Parse the config [files: src/config.py] [priority: 1]\n"
    "parse THE   config\n"
    "\n"
    "# ideas from the review\n"
    "Document the flags [after: t-1] [files: README.md, ../outside.md]\n"
    "Needs a task that is not there [after: t-42]\n"
)


def test_summary_names_ids_duplicates_and_invalid_lines(repo: Path) -> None:
    assert localdispatch("tasks", "add", "Existing", cwd=repo).returncode == 0
    write(repo / "suggested_tasks.txt", LINES)
    result = ingest_script(repo)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Added 2 tasks:" in out
    assert "t-2  Parse the config  (suggested_tasks.txt line 1)" in out
    assert "t-3  Document the flags  (suggested_tasks.txt line 5)" in out
    assert "Skipped 1 duplicate:\n  suggested_tasks.txt line 2: same as line 1" in out
    assert "Not added: 1 invalid line, kept in .dispatch/suggestions/rejected.txt" in out
    assert "suggested_tasks.txt line 6: [after: t-42] names no existing task (t-42)" in out
    assert "line 5: dropped path '../outside.md'" in out
    assert "Skipped 2 blank or comment lines." in out
    assert not (repo / "suggested_tasks.txt").exists()
    assert git(repo, "status", "--porcelain") == ""

    shown = as_json(localdispatch("tasks", "show", "t-3", "--json", cwd=repo))
    assert shown["depends_on"] == ["t-1"] and shown["files"] == ["README.md"]

    again = ingest_script(repo)
    assert again.returncode == 0 and "No new lines in suggested_tasks.txt." in again.stdout


def test_json_output(repo: Path) -> None:
    write(repo / "suggested_tasks.txt", LINES)
    data = as_json(ingest_script(repo, "--json"))
    assert [(a["id"], a["line"], a["priority"]) for a in data["added"]] == [("t-1", 1, 1)]
    assert [d["line"] for d in data["duplicates"]] == [2]
    # with no task t-1 before the run, line 5's [after: t-1] is invalid too
    assert [(i["line"], i["file"]) for i in data["invalid"]] == [
        (5, "suggested_tasks.txt"),
        (6, "suggested_tasks.txt"),
    ]
    assert data["skipped"] == 2 and data["dry_run"] is False and data["warnings"] == []
    assert data["rejected_file"].endswith("rejected.txt")


def test_dry_run_changes_nothing(repo: Path) -> None:
    write(repo / "suggested_tasks.txt", LINES)
    before = (repo / "suggested_tasks.txt").read_bytes()
    result = ingest_script(repo, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Would add 1 task:" in result.stdout and "Dry run: nothing was changed." in result.stdout
    assert (repo / "suggested_tasks.txt").read_bytes() == before
    assert not (repo / "task_queue.json").exists()
    data = as_json(ingest_script(repo, "--dry-run", "--json"))
    assert data["dry_run"] is True and [a["id"] for a in data["added"]] == [None]


def test_file_option_is_relative_to_the_current_folder(repo: Path) -> None:
    write(repo / "docs" / "ideas.txt", "From the docs folder\n")
    write(repo / "suggested_tasks.txt", "Stays for later\n")
    data = as_json(ingest_script(repo, "--file", "ideas.txt", "--json", cwd=repo / "docs"))
    assert [(a["title"], a["file"]) for a in data["added"]] == [
        ("From the docs folder", "ideas.txt")
    ]
    assert not (repo / "docs" / "ideas.txt").exists()
    assert (repo / "suggested_tasks.txt").exists()


def test_localdispatch_ingest_and_config_option(tmp_path: Path, repo: Path) -> None:
    config = tmp_path / "elsewhere" / "my config.json"
    write(config, json.dumps({"repo_root": str(repo), "suggested_tasks_file": "ideas/next.txt"}))
    write(repo / "ideas" / "next.txt", "Configured file\n")
    result = localdispatch("ingest", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "t-1  Configured file  (next.txt line 1)" in result.stdout


def test_errors_are_one_line_with_the_right_exit_code(repo: Path) -> None:
    missing = ingest_script(repo, "--file", "nope.txt")
    assert missing.returncode == 1
    assert "nope.txt" in missing.stderr and "--file" in missing.stderr

    write(repo / "dispatch_config.json", '{"suggested_task_file": "x.txt"}')
    bad_config = ingest_script(repo)
    assert bad_config.returncode == 2 and "suggested_tasks_file" in bad_config.stderr

    usage = ingest_script(repo, "--no-such-flag")
    assert usage.returncode == 2


def test_corrupt_store_is_reported_and_lines_are_kept(repo: Path) -> None:
    write(repo / "task_queue.json", "{broken")
    write(repo / "suggested_tasks.txt", "A line\n")
    result = ingest_script(repo)
    assert result.returncode == 1 and "task_queue.json" in result.stderr
    fixed = repo / "task_queue.json"
    fixed.write_text('{"version": 1, "next_id": 1, "tasks": []}', encoding="utf-8")
    data = as_json(ingest_script(repo, "--json"))
    assert [a["title"] for a in data["added"]] == ["A line"]
