"""Worker argv (both backends), the task text, and judging an attempt by its commits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import git
from localdispatch.config import Config
from localdispatch.dispatch.aider import AIDER_FLAGS
from localdispatch.dispatch.verdict import (
    accidental_files,
    find_accidental_files,
    judge,
    looks_accidental,
    retry_or_fail,
)
from localdispatch.dispatch.worker import (
    attempt_files,
    expand_command,
    task_instructions,
    worker_argv,
    worker_env,
)
from localdispatch.errors import WorkerError
from localdispatch.layout import layout_for
from localdispatch.tasks import Task


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
    (tmp_path / "w" / "src").mkdir(parents=True)
    argv = worker_argv(
        config,
        make_task(files=["src/p.py", "b c.py", "src"]),
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
        "--no-fancy-input",
        "--no-gitignore",
        "--no-show-model-warnings",
        "--auto-commits",
    ):
        assert flag in argv
    assert "--no-stream" not in argv  # streaming: the log shows the model writing
    assert argv[argv.index("--encoding") + 1] == "utf-8"
    assert argv[argv.index("--map-tokens") + 1] == "0"
    assert argv[argv.index("--edit-format") + 1] == "whole"  # a small local model
    for flag in ("--input-history-file", "--chat-history-file", "--llm-history-file"):
        assert Path(argv[argv.index(flag) + 1]).parent == tmp_path / "h"
    # The files come last, after "--"; the folder "src" is left to the task text.
    assert argv[-3:] == ["--", "src/p.py", "b c.py"]
    assert set(AIDER_FLAGS) <= set(argv)


def test_aider_settings_from_the_config_come_after_the_defaults(tmp_path: Path) -> None:
    config = Config(
        model="openai/gpt-4o",
        aider_edit_format="udiff",
        aider_extra_args=["--map-tokens", "1024", "--timeout", "60"],
    )
    task = make_task(files=[])
    argv = worker_argv(
        config, task, task_file=tmp_path / "t", worktree=tmp_path, branch="b", history_dir=tmp_path
    )
    assert argv[argv.index("--edit-format") + 1] == "udiff"
    assert argv[-4:] == ["--map-tokens", "1024", "--timeout", "60"]  # a later flag wins
    assert "--" not in argv  # no files, no separator
    plain = worker_argv(
        Config(model="openai/gpt-4o"),
        task,
        task_file=tmp_path / "t",
        worktree=tmp_path,
        branch="b",
        history_dir=tmp_path,
    )
    assert "--edit-format" not in plain  # Aider knows that model best


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


def test_names_a_chatty_model_makes_look_accidental() -> None:
    for name in (
        "Here is the updated file",  # Aider's whole format: the line above the code block
        "Here is the updated `hello.py`",
        "src/Updated version.py",
        "hello.py:",
        "**hello.py**",
        "notes/file.",
        "What? yes",
    ):
        assert looks_accidental(name), name
    for name in ("hello.py", "src/new_module.py", ".github/workflows/ci.yml", "Makefile", "a-b_c"):
        assert not looks_accidental(name), name


def test_only_files_the_task_did_not_name_count() -> None:
    added = ["b c.py", "./Other File.md", "Here is the updated file", "new.py"]
    assert accidental_files(added, ["B C.py"]) == ["./Other File.md", "Here is the updated file"]
    assert accidental_files(added, ["b c.py", "other file.md", "here is the updated file"]) == []


def test_accidental_files_make_a_failed_attempt_that_names_them() -> None:
    names = ["Here is the updated file"]
    first = verdict(make_task(attempts=1), commits=2, accidental=names)
    assert first.outcome == "retry"
    assert '"Here is the updated file"' in first.reason and "w.log" in first.reason
    last = verdict(make_task(attempts=3), commits=1, accidental=names)
    assert last.outcome == "failed" and "Here is the updated file" in last.reason
    # Nothing committed: the usual reason; a conflict task's merge is never judged this way.
    assert "without a commit" in verdict(make_task(attempts=1), accidental=names).reason
    conflict = make_task(kind="conflict", branch="ld/x", attempts=1)
    assert verdict(conflict, commits=1, accidental=names).outcome == "done"


def test_find_accidental_files_reads_the_branch(repo: Path) -> None:
    start = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "ld/t-3")
    for name in ("Here is the updated file", "ok.py", "b c.py"):
        (repo / name).write_text("x\n", encoding="utf-8")
    (repo / "README.md").write_text("changed, not added\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "worker")
    git(repo, "checkout", "-q", "main")
    task = make_task()
    assert find_accidental_files(repo, start, "ld/t-3", task) == ["Here is the updated file"]
    assert find_accidental_files(repo, start, "ld/missing", task) == []
    conflict = make_task(kind="conflict", branch="ld/t-3")
    assert find_accidental_files(repo, start, "ld/t-3", conflict) == []


def _layout(repo: Path, **settings: object):  # type: ignore[no-untyped-def]
    config = Config(**settings)  # type: ignore[arg-type]
    config._base_dir = repo
    return config, layout_for(config)


def test_worker_env_lends_an_identity_only_where_git_has_none(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)
    config, layout = _layout(repo, worker_backend="command", worker_command=["x"])
    env = worker_env(config, layout, {"GIT_CONFIG_COUNT": "1"})
    assert env == {
        "GIT_CONFIG_KEY_1": "user.name",
        "GIT_CONFIG_VALUE_1": "localdispatch",
        "GIT_CONFIG_KEY_2": "user.email",
        "GIT_CONFIG_VALUE_2": "localdispatch@localhost",
        "GIT_CONFIG_COUNT": "3",
    }
    git(repo, "config", "user.name", "Ada")
    git(repo, "config", "user.email", "ada@example.invalid")
    assert worker_env(config, layout, {}) == {}


def test_worker_env_points_aider_at_the_ollama_host(repo: Path) -> None:
    git(repo, "config", "user.name", "Ada")
    git(repo, "config", "user.email", "ada@example.invalid")
    config, layout = _layout(repo, ollama={"host": "http://127.0.0.1:5555"})
    env = worker_env(config, layout, {})
    assert env["OLLAMA_API_BASE"] == "http://127.0.0.1:5555"
    assert env["PYTHONUTF8"] == "1" and env["TERM"] == "dumb" and env["NO_COLOR"] == "1"
    assert env["PYTHONIOENCODING"] == "utf-8"
    assert "OLLAMA_API_BASE" not in worker_env(config, layout, {"OLLAMA_API_BASE": "http://x:1"})
    openai, layout = _layout(repo, model="openai/stub")
    assert "OLLAMA_API_BASE" not in worker_env(openai, layout, {})
    assert "OPENAI_API_BASE" not in worker_env(openai, layout, {})
    llm = {"provider": "openai", "base_url": "http://127.0.0.1:8080/v1", "model": "q"}
    served, layout = _layout(repo, model="openai/q", llm=llm)
    assert worker_env(served, layout, {})["OPENAI_API_BASE"] == "http://127.0.0.1:8080/v1"


def test_model_server_problem_names_a_dead_server_and_passes_a_live_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localdispatch.config import load_config
    from localdispatch.dispatch.worker import model_server_problem
    from localdispatch.layout import layout_for
    from localdispatch.testing import ModelServer, closed_port

    monkeypatch.delenv("OLLAMA_API_BASE", raising=False)
    path = tmp_path / "dispatch_config.json"
    dead = f"http://127.0.0.1:{closed_port()}"
    path.write_text(json.dumps({"ollama": {"host": dead}}), encoding="utf-8")
    config = load_config(path)
    problem = model_server_problem(config, layout_for(config))
    assert problem and "127.0.0.1" in problem and "ollama serve" in problem
    with ModelServer(models=["qwen2.5-coder:7b"]) as server:
        path.write_text(json.dumps({"ollama": {"host": server.url}}), encoding="utf-8")
        config = load_config(path)
        assert model_server_problem(config, layout_for(config)) is None
        # A server that answers but lacks the model is no better: say how to get it.
        path.write_text(
            json.dumps({"ollama": {"host": server.url}, "model": "ollama_chat/llama3"}),
            encoding="utf-8",
        )
        config = load_config(path)
        problem = model_server_problem(config, layout_for(config))
        assert problem and "ollama pull llama3:latest" in problem
    path.write_text(
        json.dumps({"worker_backend": "command", "worker_command": ["x"]}), encoding="utf-8"
    )
    config = load_config(path)
    assert model_server_problem(config, layout_for(config)) is None
