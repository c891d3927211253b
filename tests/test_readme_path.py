"""The README's "Using it on your repository" section, run as written in a fresh repository.

Its commands are read from the README itself, so the section cannot drift from what works.
Where a model or Aider would be needed, the test does what the README says a user without
them does: `split-task ... --no-llm`, and a command worker set with `localdispatch config set`.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from conftest import ROOT, localdispatch, make_repo, task_board
from localdispatch.testing import closed_port

pytestmark = pytest.mark.slow

WORKERS = Path(__file__).resolve().parent / "workers"
# The installed commands are the same entry points as these subcommands.
COMMANDS = {
    "split-task": ["split"],
    "dispatch-workers": ["dispatch"],
    "ingest-suggested-tasks": ["ingest"],
    "localdispatch": [],
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using it on your repository", 1)[1]
    block = section.split("```", 2)[1]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_section_lists_the_installed_commands() -> None:
    commands = readme_commands()
    assert commands[0].startswith("cd ") and commands[1] == "localdispatch init"
    assert all(shlex.split(c)[0] in (*COMMANDS, "cd") for c in commands)


def test_the_readme_path_works_as_written(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "your repository",
        {"app/__init__.py": "", "tests/test_app.py": "def test_app():\n    pass\n"},
    )
    folder = repo / "app"  # "from any folder of your repository"
    env = {
        "LOCALDISPATCH_USER_CONFIG": str(tmp_path / "user-config.json"),
        "OLLAMA_HOST": f"127.0.0.1:{closed_port()}",  # no model server on this machine
        "HOME": str(tmp_path / "home"),
        "USERPROFILE": str(tmp_path / "home"),
    }
    worker = [sys.executable, str(WORKERS / "commit_worker.py"), "{task_file}", "{task_id}"]
    for command in readme_commands():
        words = shlex.split(command)
        if words[0] == "cd":
            continue
        args = [*COMMANDS[words[0]], *words[1:]]
        if words[0] == "split-task":
            args.append("--no-llm")  # what the README says to do without a model
        result = localdispatch(*args, cwd=folder, env=env, timeout=180)
        if words[:2] == ["localdispatch", "doctor"]:
            assert result.returncode in (0, 1), result.stderr  # it names what is missing
            assert "ollama" in result.stdout  # no model server on this machine
            continue
        assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
        if words[:2] == ["localdispatch", "init"]:
            # No Aider here: the worker the README's other-agents section describes.
            pairs = [
                "worker_backend", "command",
                "worker_command", json.dumps(worker),
                "test_command", json.dumps([sys.executable, "-c", "pass"]),
            ]  # fmt: skip
            set_ = localdispatch("config", "set", *pairs, cwd=folder, env=env)
            assert set_.returncode == 0, set_.stderr
    board = task_board(repo)
    children = [t for t in board.values() if t["kind"] == "task"]
    assert children and all(t["status"] == "done" and t["merged_commit"] for t in children)
    assert re.search(r"^dispatch_config\.json$", (repo / ".git" / "info" / "exclude").read_text(
        encoding="utf-8"
    ), re.MULTILINE) is None  # the config is the team's: not hidden from git
