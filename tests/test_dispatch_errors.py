"""A user's mistakes before any work starts: one plain message each, exit 1, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, localdispatch, run_script


def dispatch(cwd: Path) -> tuple[int, str]:
    result = run_script("dispatch_workers.py", "--until-idle", cwd=cwd)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr


def test_not_a_repository(tmp_path: Path) -> None:
    code, err = dispatch(tmp_path)
    assert code == 1 and "is not a git repository" in err and "git init" in err


def test_repository_without_a_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    code, err = dispatch(tmp_path)
    assert code == 1 and "no commit yet" in err


def test_missing_base_branch(repo: Path) -> None:
    (repo / "dispatch_config.json").write_text('{"branch": "trunk"}', encoding="utf-8")
    code, err = dispatch(repo)
    assert code == 1 and "'trunk' does not exist" in err and "branch" in err


def test_missing_worker_program_puts_the_task_back(repo: Path) -> None:
    (repo / "dispatch_config.json").write_text(
        json.dumps({"aider_cmd": "no-such-aider-here"}), encoding="utf-8"
    )
    git(repo, "add", "dispatch_config.json")
    git(repo, "commit", "-q", "-m", "config")
    assert localdispatch("tasks", "add", "Do it", cwd=repo).returncode == 0
    code, err = dispatch(repo)
    assert code == 1 and "no-such-aider-here" in err and "aider_cmd" in err
    task = json.loads(localdispatch("tasks", "show", "t-1", "--json", cwd=repo).stdout)
    assert task["status"] == "open" and task["attempts"] == 0
