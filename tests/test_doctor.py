"""`localdispatch doctor` on real repositories and a real (stub) model server."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, localdispatch, make_repo
from localdispatch.testing import ModelServer, closed_port

MODEL = "qwen2.5-coder:7b"
KEY_ENV = "LOCALDISPATCH_DOCTOR_KEY"


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


def _openai_config(repo: Path, base_url: str, model: str = MODEL) -> None:
    llm = {"provider": "openai", "base_url": base_url, "model": model, "api_key_env": KEY_ENV}
    (repo / "dispatch_config.json").write_text(json.dumps({"llm": llm}), encoding="utf-8")


def test_openai_provider_checks_its_server_instead_of_ollama(repo: Path) -> None:
    with ModelServer(models=[MODEL]) as server:
        _openai_config(repo, server.openai_url)
        result = localdispatch("doctor", "--json", cwd=repo, env={KEY_ENV: "sk-doctor"})
        checks = checks_of(result.stdout)
        assert "ollama" not in checks
        assert checks["model server"]["status"] == "ok"
        assert server.openai_url in str(checks["model server"]["detail"])
        assert MODEL in str(checks["model server"]["detail"])
        listing = [r for r in server.requests if r.path == "/v1/models"]
        assert len(listing) == 1
        headers = {k.lower(): v for k, v in listing[0].headers.items()}
        assert headers["authorization"] == "Bearer sk-doctor"

        _openai_config(repo, server.openai_url, model="other:1b")
        checks = checks_of(localdispatch("doctor", "--json", cwd=repo).stdout)
        assert checks["model server"]["status"] == "warn"
        assert "not 'other:1b'" in str(checks["model server"]["detail"])
        assert MODEL in str(checks["model server"]["detail"])
        assert "llm.model" in str(checks["model server"]["fix"])

        _openai_config(repo, server.url)  # forgot the /v1
        checks = checks_of(localdispatch("doctor", "--json", cwd=repo).stdout)
        assert checks["model server"]["status"] == "fail"
        assert "/v1" in str(checks["model server"]["fix"])


def test_openai_server_down_is_a_failure_naming_the_url(repo: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    _openai_config(repo, base_url)
    result = localdispatch("doctor", "--json", cwd=repo)
    assert result.returncode == 1
    check = checks_of(result.stdout)["model server"]
    assert check["status"] == "fail"
    assert base_url in str(check["detail"])
    assert "llama_cpp.server" in str(check["fix"]) and "llm.base_url" in str(check["fix"])
