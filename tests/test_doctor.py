"""`localdispatch doctor` on real repositories and a real (stub) Ollama server."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, localdispatch, make_repo


def checks_of(result_stdout: str) -> dict[str, dict[str, object]]:
    data = json.loads(result_stdout)
    return {c["name"]: c for c in data["checks"]}


def test_reports_missing_ollama_and_aider_with_fixes(repo: Path) -> None:
    (repo / "dispatch_config.json").write_text(
        json.dumps({"ollama": {"host": "http://127.0.0.1:9"}, "aider_cmd": "no-such-aider"}),
        encoding="utf-8",
    )
    result = localdispatch("doctor", "--json", cwd=repo)
    assert result.returncode == 1, result.stderr
    checks = checks_of(result.stdout)
    assert checks["python"]["status"] == "ok"
    assert checks["git"]["status"] == "ok"
    assert checks["repository"]["status"] == "ok"
    assert checks["branch"]["status"] == "ok"
    assert checks["ollama"]["status"] == "fail"
    assert "127.0.0.1:9" in str(checks["ollama"]["detail"])
    assert "ollama serve" in str(checks["ollama"]["fix"])
    assert checks["aider"]["status"] == "fail" and "aider_cmd" in str(checks["aider"]["fix"])

    text = localdispatch("doctor", cwd=repo)
    assert text.returncode == 1
    assert "[FAIL] ollama" in text.stdout and "fix:" in text.stdout
    assert "Traceback" not in text.stderr


def test_command_worker_found_and_wrong_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", branch="trunk")
    (repo / "dispatch_config.json").write_text(
        json.dumps(
            {
                "worker_backend": "command",
                "worker_command": ["git", "--version"],
                "ollama": {"host": "http://127.0.0.1:9"},
            }
        ),
        encoding="utf-8",
    )
    checks = checks_of(localdispatch("doctor", "--json", cwd=repo).stdout)
    assert checks["worker command"]["status"] == "ok"
    assert checks["branch"]["status"] == "fail"
    assert "'main'" in str(checks["branch"]["detail"])


def test_not_a_repository_and_bad_config(tmp_path: Path) -> None:
    plain = tmp_path / "plain folder"
    plain.mkdir()
    checks = checks_of(localdispatch("doctor", "--json", cwd=plain).stdout)
    assert checks["repository"]["status"] == "fail"
    assert "git init" in str(checks["repository"]["fix"])

    (plain / "dispatch_config.json").write_text('{"num_worker": 2}', encoding="utf-8")
    result = localdispatch("doctor", "--json", cwd=plain)
    assert result.returncode == 1
    checks = checks_of(result.stdout)
    assert checks["config"]["status"] == "fail"
    assert "num_workers" in str(checks["config"]["detail"])


def test_tracked_state_file_is_a_failure(repo: Path) -> None:
    (repo / "task_queue.json").write_text('{"tasks": []}', encoding="utf-8")
    git(repo, "add", "task_queue.json")
    git(repo, "commit", "-q", "-m", "oops, committed the store")
    checks = checks_of(localdispatch("doctor", "--json", cwd=repo).stdout)
    assert checks["state files"]["status"] == "fail"
    assert "git rm --cached task_queue.json" in str(checks["state files"]["fix"])
