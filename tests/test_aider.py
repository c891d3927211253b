"""Aider's argv and environment, and the edit format chosen for a model (pure functions)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from localdispatch.config import Config
from localdispatch.dispatch.aider import (
    AIDER_FLAGS,
    EDIT_FORMATS,
    aider_argv,
    aider_env,
    aiderignore_text,
    chat_files,
    choose_edit_format,
    make_folders_for,
    no_op_browser,
    write_aiderignore,
)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("ollama_chat/qwen2.5-coder:7b", "whole"),
        ("ollama/deepseek-r1:1.5b", "whole"),  # Aider alone would pick diff for "r1"
        ("ollama_chat/codellama", "whole"),  # size unknown: assume small
        ("ollama_chat/mixtral:8x7b", "whole"),
        ("lm_studio/qwen2.5-coder-14b-instruct", "whole"),
        ("ollama_chat/llama3:70b", None),  # strong enough: Aider's own choice (diff)
        ("ollama_chat/qwen3:30b-a3b", None),
        ("openai/gpt-4o", None),
        ("anthropic/claude-sonnet-4-5", None),
        ("openai/stub", None),  # an unknown model: Aider picks whole itself
    ],
)
def test_edit_format_for_the_model(model: str, expected: str | None) -> None:
    assert choose_edit_format(model) == expected


def test_configured_edit_format_wins() -> None:
    assert choose_edit_format("ollama_chat/qwen2.5-coder:7b", "diff") == "diff"
    assert choose_edit_format("openai/gpt-4o", "whole") == "whole"
    assert set(EDIT_FORMATS) >= {"whole", "diff", "udiff"}


def test_argv_layout(tmp_path: Path) -> None:
    argv = aider_argv(
        "surely-not-on-path-aider",
        "openai/x",
        tmp_path / "task.md",
        tmp_path / "hist",
        ["-odd.py", "a b.py"],
        edit_format="diff",
        extra_args=["--map-tokens", "512"],
    )
    assert argv[:5] == [
        "surely-not-on-path-aider",
        "--model",
        "openai/x",
        "--message-file",
        str(tmp_path / "task.md"),
    ]
    assert argv[argv.index("--edit-format") + 1] == "diff"
    flags = argv[5 : 5 + len(AIDER_FLAGS)]
    assert tuple(flags) == AIDER_FLAGS
    # The extra arguments come after the defaults (a later flag wins in Aider's parser) and
    # the files after "--", so "-odd.py" is a file, not an option.
    assert argv.index("512") > argv.index("0")
    assert argv[-3:] == ["--", "-odd.py", "a b.py"]


@pytest.mark.aider
def test_every_flag_exists_in_the_installed_aider(aider_exe: Path) -> None:
    help_text = subprocess.run(
        [str(aider_exe), "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "300"},
    ).stdout
    for flag in [*AIDER_FLAGS, "--edit-format", "--message-file", "--llm-history-file"]:
        if flag.startswith("--"):
            assert flag in help_text, flag
    # Every value accepted by aider_edit_format is an edit format this Aider knows.
    config_formats = Config.model_json_schema()["properties"]["aider_edit_format"]
    listed = {v for branch in config_formats["anyOf"] for v in branch.get("enum", [])}
    assert listed == set(EDIT_FORMATS)


def test_folders_are_not_handed_to_aider(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("", encoding="utf-8")
    assert chat_files(["pkg", "pkg/a.py", "new/b.py"], tmp_path) == ["pkg/a.py", "new/b.py"]


def test_environment_of_an_unattended_run() -> None:
    env = aider_env("ollama_chat/m", {}, ollama_host="http://127.0.0.1:11434")
    assert env["OLLAMA_API_BASE"] == "http://127.0.0.1:11434"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert "OPENAI_API_BASE" not in env
    mine = {"OLLAMA_API_BASE": "http://mine:2", "LITELLM_LOCAL_MODEL_COST_MAP": "False"}
    kept = aider_env("ollama/m", mine, ollama_host="http://h:1")
    assert "OLLAMA_API_BASE" not in kept and "LITELLM_LOCAL_MODEL_COST_MAP" not in kept
    assert env.get("BROWSER") == no_op_browser()


def test_an_openai_model_goes_to_the_splitters_openai_server() -> None:
    base = "http://127.0.0.1:8080/v1"
    env = aider_env(
        "openai/q", {"MY_KEY": "k"}, ollama_host="h", openai_base=base, openai_key_env="MY_KEY"
    )
    assert env["OPENAI_API_BASE"] == base and env["OPENAI_API_KEY"] == "k"
    assert "OLLAMA_API_BASE" not in env
    keyless = aider_env("openai/q", {}, ollama_host="h", openai_base=base)
    assert keyless["OPENAI_API_KEY"] == "localdispatch"  # Aider will not call without one
    users = {"OPENAI_API_BASE": "http://elsewhere/v1", "OPENAI_API_KEY": "u"}
    assert "OPENAI_API_BASE" not in aider_env("openai/q", users, ollama_host="h", openai_base=base)
    assert "OPENAI_API_BASE" not in aider_env("openai/q", {}, ollama_host="h")


@pytest.mark.skipif(os.name == "nt", reason="no no-op browser program on Windows")
def test_the_browser_aider_may_open_does_nothing() -> None:
    browser = no_op_browser()
    assert browser is not None
    result = subprocess.run([browser, "https://aider.chat/docs/llms/warnings.html"], check=False)
    assert result.returncode == 0  # webbrowser counts the page as opened and stops looking


def test_folders_of_new_files_are_made_so_aider_finds_the_repository(tmp_path: Path) -> None:
    worktree = tmp_path / "w"
    (worktree / "pkg").mkdir(parents=True)
    made = make_folders_for(["pkg/a.py", "new dir/sub/b.py", "top.py", "../outside/c.py"], worktree)
    assert made == [worktree / "new dir" / "sub"]
    assert (worktree / "new dir" / "sub").is_dir()
    assert not (worktree / "new dir" / "sub" / "b.py").exists()  # Aider creates the file
    assert not (tmp_path / "outside").exists()


def test_aiderignore_hides_the_protected_paths_after_the_repositorys_own(tmp_path: Path) -> None:
    text = aiderignore_text(["dispatch_config.json", ".dispatch/**", "\\docs\\secret/"], "*.log\n")
    assert text.splitlines()[0] == "*.log"
    assert text.splitlines()[2:] == ["/dispatch_config.json", "/.dispatch/**", "/docs/secret/"]
    worktree = tmp_path / "w"
    worktree.mkdir()
    written = write_aiderignore(tmp_path / "state" / "a.aiderignore", ["x.py"], worktree)
    assert written.read_text(encoding="utf-8").splitlines()[-1] == "/x.py"
    argv = aider_argv("aider", "m", tmp_path / "t", tmp_path, [], aiderignore=written)
    assert argv[argv.index("--aiderignore") + 1] == str(written)
