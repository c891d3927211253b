"""Shared fixtures: real git repositories in tmp_path and a way to run the real scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests must not depend on the machine's git identity (CI has none) or the user's settings.
os.environ.update(
    {
        "GIT_AUTHOR_NAME": "localdispatch tests",
        "GIT_AUTHOR_EMAIL": "tests@localdispatch.invalid",
        "GIT_COMMITTER_NAME": "localdispatch tests",
        "GIT_COMMITTER_EMAIL": "tests@localdispatch.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONIOENCODING": "utf-8",
    }
)
os.environ.pop("OLLAMA_HOST", None)
# Subprocesses (`python -m localdispatch`, worker scripts) import this checkout's code too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stripped stdout; fail the test on error."""
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A git repository at ``path`` with one commit holding ``files`` (a README by default)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "core.autocrlf", "false")
    for name, content in (files or {"README.md": "# demo\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository (in a folder whose name has a space, as on many Windows machines)."""
    return make_repo(tmp_path / "my repo")


def run_script(
    script: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one of the top-level launchers (split_task.py ...) or `-m localdispatch` for real."""
    argv: Sequence[str]
    if script == "localdispatch":
        argv = [sys.executable, "-m", "localdispatch", *args]
    else:
        argv = [sys.executable, str(ROOT / script), *args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=full_env,
        timeout=timeout,
        input=stdin,
        check=False,
    )


def localdispatch(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run_script("localdispatch", *args, cwd=cwd, **kwargs)  # type: ignore[arg-type]


def find_aider() -> Path | None:
    """Aider for the tests that drive it: $LOCALDISPATCH_AIDER, or the .venv-aider beside this
    repository (.venv-aider/bin/aider, or .venv-aider\\Scripts\\aider.exe on Windows)."""
    configured = os.environ.get("LOCALDISPATCH_AIDER", "").strip()
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    venv = ROOT / ".venv-aider"
    for candidate in (venv / "bin" / "aider", venv / "Scripts" / "aider.exe"):
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def aider_exe() -> Path:
    """The Aider executable, or a skip that says how to install it."""
    found = find_aider()
    if found is None:
        where = os.environ.get("LOCALDISPATCH_AIDER") or str(ROOT / ".venv-aider")
        pytest.skip(
            f"Aider is not installed at {where}: run `python -m venv .venv-aider` and "
            "`.venv-aider/bin/python -m pip install aider-chat` (Windows: "
            "`.venv-aider\\Scripts\\python -m pip install aider-chat`), or set "
            "LOCALDISPATCH_AIDER to an aider executable"
        )
    return found


# ---- the user's view of a repository, through the real CLI and the files it keeps ----------


def commit_config(repo: Path, config: dict[str, Any]) -> None:
    """Write dispatch_config.json and commit it, as a user sets a repository up."""
    (repo / "dispatch_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    git(repo, "add", "dispatch_config.json")
    git(repo, "commit", "-q", "-m", "config")


def add_task(repo: Path, title: str, *args: str) -> str:
    """`localdispatch tasks add` for real; returns the new id."""
    result = localdispatch("tasks", "add", title, "--json", *args, cwd=repo)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


def task_board(repo: Path) -> dict[str, dict[str, Any]]:
    """Every task by id, as `localdispatch tasks list --all --json` prints them."""
    result = localdispatch("tasks", "list", "--all", "--json", cwd=repo)
    return {t["id"]: t for t in json.loads(result.stdout)}


def event_log(repo: Path, name: str | None = None) -> list[dict[str, Any]]:
    """The events in .dispatch/events.jsonl (only those named ``name`` if given)."""
    path = repo / ".dispatch" / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if name is None or e["event"] == name]
