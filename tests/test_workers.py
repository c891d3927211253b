"""Worker argv (both backends), the task text, and judging an attempt by its commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdispatch.config import Config
from localdispatch.errors import WorkerError
from localdispatch.layout import layout_for
from localdispatch.tasks import Task
from localdispatch.workers import (
    AIDER_FLAGS,
    attempt_files,
    expand_command,
    judge,
    retry_or_fail,
    task_instructions,
    worker_argv,
)


def make_task(**fields: object) -> Task:
    base: dict[str, object] = {
        "id": "t-3",
        "title": "Add a parser",
        "files": ["src/p.py", "b c.py"],
    }
    base.update(fields)
    return Task(**base)  # type: ignore[arg-type]


def test_aider_argv_is_non_interactive_and_lists_the_files(tmp_path: Path) -> None:
    config = Config(model="ollama_chat/tiny", aider_cmd="aider-not-on-path")
    argv = worker_argv(
        config,
        make_task(),
        task_file=tmp_path / "t.md",
        worktree=tmp_path / "w",
        branch="ld/t-3-add-a-parser",
        history_dir=tmp_path / "h",
    )
    assert argv[0] == "aider-not-on-path"
    assert argv[argv.index("--model") + 1] == "ollama_chat/tiny"
    assert argv[argv.index("--message-file") + 1] == str(tmp_path / "t.md")
    for flag in (
        "--yes-always",
        "--no-check-update",
        "--no-analytics",
        "--no-pretty",
        "--no-stream",
        "--no-fancy-input",
        "--no-gitignore",
        "--auto-commits",
    ):
        assert flag in argv
    assert argv[argv.index("--encoding") + 1] == "utf-8"
    assert argv[argv.index("--map-tokens") + 1] == "0"
    for flag in ("--input-history-file", "--chat-history-file", "--llm-history-file"):
        assert Path(argv[argv.index(flag) + 1]).parent == tmp_path / "h"
    assert argv[-2:] == ["src/p.py", "b c.py"]
    assert set(AIDER_FLAGS) <= set(argv)


def test_command_placeholders_per_element(tmp_path: Path) -> None:
    argv = expand_command(
        [
            "prog",
            "--task={task_file}",
            "{model}",
            "{worktree}",
            "{task_id}",
            "{files}",
            "--all={files}",
            '{"json": 1}',
            "{branch}@{base}",
        ],
        {
            "task_file": "T F.md",
            "model": "m",
            "worktree": "W",
            "task_id": "t-1",
            "branch": "ld/x",
            "base": "main",
        },
        ["a.py", "b c.py"],
    )
    assert argv == [
        "prog",
        "--task=T F.md",
        "m",
        "W",
        "t-1",
        "a.py",
        "b c.py",
        "--all=a.py b c.py",
        '{"json": 1}',
        "ld/x@main",
    ]


def test_files_placeholder_with_no_files_adds_nothing() -> None:
    assert expand_command(["prog", "{files}", "end"], {}, []) == ["prog", "end"]


def test_empty_command_is_refused() -> None:
    with pytest.raises(WorkerError):
        expand_command([], {}, [])


def test_command_backend_uses_the_template(tmp_path: Path) -> None:
    config = Config(worker_backend="command", worker_command=["run-me", "{task_id}", "{files}"])
    argv = worker_argv(
        config,
        make_task(),
        task_file=tmp_path / "t.md",
        worktree=tmp_path,
        branch="b",
        history_dir=tmp_path,
    )
    assert argv == ["run-me", "t-3", "src/p.py", "b c.py"]


def test_task_text_tells_the_rules(tmp_path: Path) -> None:
    text = task_instructions(
        make_task(description="Parse it.\nCarefully."),
        branch="ld/t-3-add-a-parser",
        base="main",
        protected=["dispatch_config.json", ".dispatch/**"],
    )
    assert text.startswith("# Task t-3: Add a parser\n")
    assert "Parse it.\nCarefully." in text
    assert "- src/p.py" in text and "- b c.py" in text
    assert "Commit your work" in text and "ld/t-3-add-a-parser" in text
    assert "suggested_tasks.txt" in text
    assert "`dispatch_config.json`" in text and "`.dispatch/**`" in text
    assert "merge conflict" not in text.lower()


def test_task_text_for_a_retry_and_a_conflict() -> None:
    retry = task_instructions(
        make_task(attempts=2, closed_reason="attempt 1 failed: no commit", files=[]),
        branch="b",
        base="main",
        protected=[],
    )
    assert "earlier attempt did not succeed (attempt 1 failed: no commit)" in retry
    assert "No files were named" in retry
    conflict = task_instructions(
        make_task(kind="conflict", branch="ld/t-1-x"),
        branch="ld/t-1-x",
        base="main",
        protected=[],
    )
    assert "Resolve the merge conflict" in conflict and "git merge main" in conflict


def test_attempt_files_live_outside_the_worktrees(tmp_path: Path) -> None:
    config = Config()
    config._base_dir = tmp_path
    layout = layout_for(config)
    files = attempt_files(layout, make_task(), 2)
    assert files.task_file.name == "t-3-attempt2.md"
    assert files.log.parent == layout.logs
    for path in (files.task_file, files.log, files.history_dir):
        assert layout.state in path.parents
        assert layout.worktrees not in path.parents


def verdict(task: Task, **kwargs: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "commits": 0,
        "timed_out": False,
        "exit_code": 0,
        "timeout_secs": 30,
        "max_retries": 2,
        "auto_merge": True,
        "log_path": "w.log",
    }
    args.update(kwargs)
    return judge(task, **args)  # type: ignore[arg-type]


def test_exit_code_zero_without_commits_is_a_failed_attempt() -> None:
    result = verdict(make_task(attempts=1), exit_code=0)
    assert result.outcome == "retry"
    assert "without a commit" in result.reason and "w.log" in result.reason


def test_commits_mean_ready_to_merge_whatever_the_exit_code() -> None:
    assert verdict(make_task(attempts=1), commits=2, exit_code=1).outcome == "merge"
    assert verdict(make_task(attempts=1), commits=1, timed_out=True).outcome == "merge"
    assert verdict(make_task(attempts=1), commits=1, auto_merge=False).outcome == "done"
    conflict = make_task(kind="conflict", branch="ld/x", attempts=1)
    assert verdict(conflict, commits=1).outcome == "done"


def test_retries_run_out() -> None:
    assert verdict(make_task(attempts=3), max_retries=2).outcome == "failed"
    assert verdict(make_task(attempts=1), max_retries=0).outcome == "failed"
    timed = verdict(make_task(attempts=3), timed_out=True, max_retries=2)
    assert timed.outcome == "failed" and "timed out after 30 s" in timed.reason
    assert "failed after 3 attempts" in timed.reason
    crashed = verdict(make_task(attempts=1), exit_code=3)
    assert "exited with code 3" in crashed.reason


def test_retry_or_fail_for_a_rejected_merge() -> None:
    assert retry_or_fail(make_task(attempts=1), "gate failed", 1).outcome == "retry"
    assert retry_or_fail(make_task(attempts=2), "gate failed", 1).outcome == "failed"
