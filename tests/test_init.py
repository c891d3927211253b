"""`localdispatch init` on fresh repositories: what it finds, where it writes, what it refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import git, localdispatch, make_repo
from localdispatch.onboarding import aider, base_branch, coding_model, suite_command
from localdispatch.testing import ModelServer, closed_port


def test_the_base_branch_is_the_one_checked_out_else_a_usual_one() -> None:
    assert base_branch("trunk", ["trunk"], None).value == "trunk"
    assert base_branch(None, ["dev", "master"], None).value == "master"
    assert base_branch(None, ["x", "y"], "y").value == "y"
    assert base_branch(None, ["x"], None).value is None


@pytest.mark.parametrize(
    ("files", "argv"),
    [
        ({"package.json": '{"scripts": {"test": "vitest run"}}'}, ["npm", "test"]),
        ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, ["python", "-m", "pytest", "-q"]),
        ({"setup.cfg": "", "tests/": ""}, ["python", "-m", "pytest", "-q"]),
        ({"go.mod": "module x\n"}, ["go", "test", "./..."]),
        ({"Cargo.toml": "[package]\n"}, ["cargo", "test"]),
        ({"Makefile": "all:\n\ttrue\ntest:\n\t./run\n"}, ["make", "test"]),
        ({"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\""}}'}, None),
        ({"README.md": "", "test/": ""}, None),
    ],
)
def test_a_test_suite_it_can_name(files: dict[str, str], argv: list[str] | None) -> None:
    assert suite_command(files).value == argv


def test_aider_on_path_needs_no_setting_and_one_in_a_venv_is_named(tmp_path: Path) -> None:
    assert aider(lambda name: "/usr/bin/aider", []).value == "aider"
    venv = tmp_path / "aider-venv" / "bin" / "aider"
    venv.parent.mkdir(parents=True)
    venv.write_text("#!/bin/sh\n", encoding="utf-8")
    assert aider(lambda name: None, [tmp_path / "nowhere", venv]).value == venv.as_posix()
    assert aider(lambda name: None, [tmp_path / "nowhere"]).value is None


def test_a_coding_model_is_preferred() -> None:
    assert coding_model(["llama3.2:3b", "qwen2.5-coder:7b"]) == "qwen2.5-coder:7b"
    assert coding_model(["llama3.2:3b"]) == "llama3.2:3b"
    assert coding_model([]) is None


def init(cwd: Path, tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    full = {
        "HOME": str(tmp_path / "home"),
        "USERPROFILE": str(tmp_path / "home"),
        "LOCALDISPATCH_USER_CONFIG": str(tmp_path / "user-config.json"),
        **env,
    }
    full.setdefault("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    result = localdispatch("init", *args, cwd=cwd, env=full)
    return result.returncode, result.stdout, result.stderr


def test_init_from_a_subfolder_of_a_master_repository(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "my project",
        {"pyproject.toml": "[project]\nname = 'x'\n", "tests/test_a.py": "def test(): pass\n"},
        branch="master",
    )
    (repo / "src").mkdir()
    fake_aider = tmp_path / "home" / "aider-venv" / ("Scripts" if os.name == "nt" else "bin")
    fake_aider.mkdir(parents=True)
    (fake_aider / ("aider.exe" if os.name == "nt" else "aider")).write_text("x", "utf-8")

    code, out, err = init(repo / "src", tmp_path)

    assert code == 0, err
    config = json.loads((repo / "dispatch_config.json").read_text(encoding="utf-8"))
    assert config["branch"] == "master"
    assert config["test_command"] == ["python", "-m", "pytest", "-q"]
    assert "$schema" in config and (repo / config["$schema"]).is_file()
    assert "aider_cmd" not in config  # a path on this machine: not in the team's file
    user = json.loads((tmp_path / "user-config.json").read_text(encoding="utf-8"))
    assert user["aider_cmd"].endswith(("aider", "aider.exe"))
    assert not (repo / "src" / "dispatch_config.json").exists()
    assert git(repo, "status", "--porcelain") == "?? dispatch_config.json"
    assert "base branch: master" in out and "model server" in out  # found and not found
    assert 'split-task "Describe the goal in a sentence or two" --no-llm' in out
    assert "dispatch-workers --until-idle" in out
    user_file = {"LOCALDISPATCH_USER_CONFIG": str(tmp_path / "user-config.json")}
    check = localdispatch("config", "check", cwd=repo / "src", env=user_file)
    assert check.returncode == 0, check.stderr


def test_init_takes_the_coding_model_ollama_has(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with ModelServer(models=["llama3.2:3b", "qwen2.5-coder:1.5b"]) as server:
        code, out, err = init(repo, tmp_path, OLLAMA_HOST=server.url)
    assert code == 0, err
    config = json.loads((repo / "dispatch_config.json").read_text(encoding="utf-8"))
    assert config["model"] == "ollama_chat/qwen2.5-coder:1.5b"
    assert config["ollama"] == {"model": "qwen2.5-coder:1.5b"}
    assert 'split-task "Describe the goal in a sentence or two"\n' in out + "\n"


def test_init_never_overwrites_unless_forced_and_then_keeps_a_backup(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "dispatch_config.json").write_text('{"num_workers": 4}\n', encoding="utf-8")

    code, _, err = init(repo, tmp_path)

    assert code != 0 and "exists already" in err and "--force" in err
    assert json.loads((repo / "dispatch_config.json").read_text("utf-8")) == {"num_workers": 4}
    code, out, err = init(repo, tmp_path, "--force")
    assert code == 0, err
    [backup] = list(repo.glob("dispatch_config.json.bak-*"))
    assert json.loads(backup.read_text("utf-8")) == {"num_workers": 4}
    assert backup.name in out


def test_init_outside_a_repository_says_where_to_run_it(tmp_path: Path) -> None:
    folder = tmp_path / "not a repo"
    folder.mkdir()
    code, _, err = init(folder, tmp_path)
    assert code == 2 and "not inside a git repository" in err and "Traceback" not in err
    assert not (folder / "dispatch_config.json").exists()
