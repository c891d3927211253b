"""split_task.py run for real, against a real HTTP server that speaks the Ollama API (and
OpenAI's, for llm.provider "openai")."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import make_repo, run_script
from localdispatch.testing import ModelServer, ScriptedReply, closed_port, plan_reply

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder:7b"
GOAL = "Add a full analytics dashboard with cycle time, throughput and WIP"
FILES = {
    "README.md": "# Tracker\n\nA small work tracker.\n",
    "src/tracker/board.py": "BOARD = []\n",
    "src/tracker/cli.py": "def main():\n    pass\n",
    "tests/test_board.py": "def test_board():\n    pass\n",
}


def good_plan() -> str:
    return plan_reply(
        {
            "title": "Compute cycle time and throughput",
            "description": "Add functions over the board's items.",
            "files": ["src/tracker/metrics.py", "tests/test_metrics.py"],
            "acceptance_criteria": ["tests/test_metrics.py passes"],
        },
        {
            "title": "Count work in progress",
            "files": ["src/tracker/board.py"],
            "acceptance_criteria": ["wip() returns the open items"],
        },
        {
            "title": "Show the dashboard",
            "files": ["src/tracker/dashboard.py", "src/tracker/cli.py"],
            "depends_on": [1, 2],
        },
    )


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer(models=[MODEL]) as running:
        yield running


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "my repo", FILES)


def configure(repo: Path, host: str, **ollama: Any) -> None:
    config = {"ollama": {"host": host, "timeout_secs": 10, **ollama}}
    (repo / "dispatch_config.json").write_text(json.dumps(config), encoding="utf-8")


def split(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = run_script("split_task.py", *args, cwd=repo, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def stored(repo: Path) -> list[dict[str, Any]]:
    path = repo / "task_queue.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8"))["tasks"])


def test_valid_reply_stores_an_epic_and_children(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url)
    server.add_replies(good_plan())
    result = split(repo, GOAL)
    assert result.returncode == 0, result.stderr
    assert "Stored epic t-1" in result.stdout
    assert "src/tracker/metrics.py (new)" in result.stdout
    epic, *kids = stored(repo)
    assert (epic["kind"], epic["title"]) == ("epic", GOAL)
    assert [k["parent"] for k in kids] == ["t-1"] * 3
    assert kids[2]["depends_on"] == ["t-2", "t-3"]
    assert kids[0]["files"] == ["src/tracker/metrics.py", "tests/test_metrics.py"]
    request = server.chat_requests[0].body
    assert request["model"] == MODEL
    assert request["format"]["required"] == ["subtasks"]
    assert request["options"]["temperature"] == 0
    prompt = request["messages"][1]["content"]
    assert GOAL in prompt and "src/tracker/board.py" in prompt and "A small work tracker." in prompt
    logs = list((repo / ".dispatch" / "logs").glob("split-*.reply-1.txt"))
    assert [p.read_text(encoding="utf-8") for p in logs] == [good_plan()]
    exclude = (repo / ".git" / "info" / "exclude").read_text(encoding="utf-8")
    assert "/.dispatch/" in exclude and "/task_queue.json" in exclude


def test_ollama_host_from_the_environment_and_json_output(repo: Path, server: ModelServer) -> None:
    server.add_replies(f"<think>Let me plan.</think>\n```json\n{good_plan()}\n```")
    result = split(repo, GOAL, "--json", env={"OLLAMA_HOST": server.url})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dry_run"] is False and data["source"] == "model" and data["attempts"] == 1
    assert data["epic"]["id"] == "t-1"
    assert [t["id"] for t in data["tasks"]] == ["t-2", "t-3", "t-4"]
    assert data["subtasks"][0]["new_files"] == ["src/tracker/metrics.py", "tests/test_metrics.py"]
    assert data["context"]["files_total"] == 4


def test_truncated_then_valid_is_repaired(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url)
    server.add_replies(good_plan()[:150], good_plan())
    result = split(repo, GOAL, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["attempts"] == 2
    assert "cut off" in server.chat_requests[1].messages[-1]["content"]
    assert len(stored(repo)) == 4


def test_never_valid_fails_and_names_the_logs(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url)
    server.default_reply = '{"subtasks": [{"name": "no title"}]}'
    result = split(repo, GOAL)
    assert result.returncode == 1
    assert "no valid plan in 3 attempts" in result.stderr
    assert str(Path(".dispatch") / "logs") in result.stderr
    assert len(list((repo / ".dispatch" / "logs").glob("split-*.reply-*.txt"))) == 3
    assert stored(repo) == []


def test_paths_outside_and_cycles_are_repaired_with_warnings(
    repo: Path, server: ModelServer
) -> None:
    configure(repo, server.url)
    server.add_replies(
        plan_reply(
            {"title": "One", "files": ["../../etc/passwd", "src/tracker/a.py"], "depends_on": [3]},
            {"title": "Two", "files": ["C:\\Users\\me\\b.py", "/abs/c.py"], "depends_on": [1]},
            {"title": "Three", "files": ["src\\tracker\\board.py"], "depends_on": [2]},
        )
    )
    result = split(repo, GOAL)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("dropped the path") == 3
    assert "broke a dependency cycle" in result.stderr
    _epic, one, two, three = stored(repo)
    assert one["files"] == ["src/tracker/a.py"] and two["files"] == []
    assert three["files"] == ["src/tracker/board.py"]
    assert (one["depends_on"], two["depends_on"], three["depends_on"]) == ([], ["t-2"], ["t-3"])


def test_too_many_subtasks_is_refused(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url)
    server.default_reply = plan_reply(
        *({"title": f"T{i}", "files": [f"f{i}.py"]} for i in range(5))
    )
    result = split(repo, GOAL, "--max-subtasks", "4")
    assert result.returncode == 1
    assert "5 subtasks but at most 4" in result.stderr
    assert "between 3 and 4 subtasks" in server.chat_requests[0].messages[0]["content"]
    assert stored(repo) == []


def test_unknown_model_says_ollama_pull(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url, model="llama3.2:3b")
    result = split(repo, GOAL)
    assert result.returncode == 1
    assert "ollama pull llama3.2:3b" in result.stderr
    assert len(server.chat_requests) == 1


def test_server_down_names_the_host(repo: Path) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    configure(repo, host)
    result = split(repo, GOAL)
    assert result.returncode == 1
    assert f"Cannot reach the Ollama server at {host}" in result.stderr
    assert "ollama serve" in result.stderr
    assert "--no-llm" in result.stderr  # the way to go on without a model
    assert stored(repo) == []


def test_timeout_is_a_clear_failure(repo: Path) -> None:
    with ModelServer([ScriptedReply(good_plan(), delay_secs=10)], models=[MODEL]) as slow:
        configure(repo, slow.url, timeout_secs=0.5)
        result = split(repo, GOAL)
    assert result.returncode == 1
    assert "did not answer within 0.5 s" in result.stderr
    assert stored(repo) == []


def test_dry_run_stores_nothing(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url)
    server.add_replies(good_plan())
    result = split(repo, GOAL, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was stored." in result.stdout
    assert "  3. Show the dashboard" in result.stdout and "after: 1, 2" in result.stdout
    assert not (repo / "task_queue.json").exists()


def test_no_llm_never_asks_the_model(repo: Path) -> None:
    configure(repo, f"http://127.0.0.1:{closed_port()}")
    result = split(repo, GOAL + ". Then describe it in README.md", "--no-llm", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "rules"
    titles = [s["title"] for s in data["subtasks"]]
    assert titles[-1] == "Describe it in README.md"
    assert data["tasks"][-1]["files"] == ["README.md"]
    assert len(stored(repo)) == 1 + len(titles)


def test_parent_task_becomes_the_epic(repo: Path, server: ModelServer) -> None:
    configure(repo, server.url)
    added = run_script("localdispatch", "tasks", "add", "Analytics dashboard", "-d", GOAL, cwd=repo)
    assert added.returncode == 0, added.stderr
    server.add_replies(good_plan())
    result = split(repo, "--bead", "t-1")
    assert result.returncode == 0, result.stderr
    epic, *kids = stored(repo)
    assert (epic["id"], epic["kind"]) == ("t-1", "epic")
    assert [k["parent"] for k in kids] == ["t-1"] * 3
    assert "This splits the existing task t-1" in server.chat_requests[0].messages[1]["content"]


def test_unknown_parent_and_missing_goal_and_bad_flags(repo: Path) -> None:
    result = split(repo, "--parent", "t-99", "--no-llm")
    assert result.returncode == 1 and "t-99" in result.stderr
    result = split(repo, "--no-llm")
    assert result.returncode == 2 and "No goal given" in result.stderr
    result = split(repo, GOAL, "--max-subtasks", "0")
    assert result.returncode == 2 and "between 1 and 50" in result.stderr


def test_localdispatch_split_is_the_same_command(repo: Path) -> None:
    result = run_script(
        "localdispatch", "split", "One thing. Another thing.", "--no-llm", "--dry-run", cwd=repo
    )
    assert result.returncode == 0, result.stderr
    assert "Plan: 2 subtasks by sentence rules" in result.stdout
    assert not (repo / ".dispatch").exists()


# ---- the same command against an OpenAI-compatible server --------------------------------


def configure_openai(repo: Path, base_url: str, **llm: Any) -> None:
    section = {"provider": "openai", "base_url": base_url, "model": MODEL, "timeout_secs": 10}
    config = {"llm": {**section, **llm}}
    (repo / "dispatch_config.json").write_text(json.dumps(config), encoding="utf-8")


def test_openai_provider_splits_and_stores(repo: Path, server: ModelServer) -> None:
    configure_openai(repo, server.openai_url)
    server.add_replies(good_plan())
    result = split(repo, GOAL, "--json")
    assert result.returncode == 0, result.stderr
    assert f"Asking {MODEL} at {server.openai_url}" in result.stderr
    data = json.loads(result.stdout)
    assert (data["source"], data["model"], data["attempts"]) == ("model", MODEL, 1)
    assert [t["id"] for t in data["tasks"]] == ["t-2", "t-3", "t-4"]
    assert data["tasks"][2]["depends_on"] == ["t-2", "t-3"]
    request = server.chat_requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["temperature"] == 0
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["required"] == ["subtasks"]
    assert GOAL in request.messages[1]["content"]
    assert len(stored(repo)) == 4


def test_openai_provider_repairs_then_fails_cleanly(repo: Path, server: ModelServer) -> None:
    configure_openai(repo, server.openai_url)
    server.add_replies(good_plan()[:150], ScriptedReply(good_plan()[:300], done_reason="length"))
    server.default_reply = '{"subtasks": [{"name": "no title"}]}'
    result = split(repo, GOAL, "--dry-run", "--json")
    assert result.returncode == 1
    assert "no valid plan in 3 attempts" in result.stderr
    assert "(llm.model)" in result.stderr
    assert "cut off" in server.chat_requests[1].messages[-1]["content"]
    assert "length limit" in server.chat_requests[2].messages[-1]["content"]
    assert len(list((repo / ".dispatch" / "logs").glob("split-*.reply-*.txt"))) == 3
    assert stored(repo) == []


def test_openai_unknown_model_and_missing_key_are_named(repo: Path, server: ModelServer) -> None:
    configure_openai(repo, server.openai_url, model="gpt-4o-mini")
    result = split(repo, GOAL)
    assert result.returncode == 1
    assert "The model gpt-4o-mini is not available" in result.stderr
    assert "llm.model" in result.stderr

    configure_openai(repo, server.openai_url, api_key_env="MY_LLM_KEY")
    server.add_replies(ScriptedReply(status=401, error="Unauthorized"))
    result = split(repo, GOAL, env={"MY_LLM_KEY": ""})
    assert result.returncode == 1
    assert "environment variable MY_LLM_KEY (llm.api_key_env) is not set" in result.stderr


def test_openai_server_down_names_the_url(repo: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    configure_openai(repo, base_url)
    result = split(repo, GOAL)
    assert result.returncode == 1
    assert f"Cannot reach the OpenAI-compatible server at {base_url}" in result.stderr
    assert "llama_cpp.server" in result.stderr
    assert stored(repo) == []


def test_openai_timeout_is_a_clear_failure(repo: Path) -> None:
    with ModelServer([ScriptedReply(good_plan(), delay_secs=10)], models=[MODEL]) as slow:
        configure_openai(repo, slow.openai_url, timeout_secs=0.5)
        result = split(repo, GOAL)
    assert result.returncode == 1
    assert "did not answer within 0.5 s (llm.timeout_secs)" in result.stderr


def test_openai_without_base_url_is_a_config_error(repo: Path) -> None:
    (repo / "dispatch_config.json").write_text(
        json.dumps({"llm": {"provider": "openai", "model": MODEL}}), encoding="utf-8"
    )
    result = split(repo, GOAL)
    assert result.returncode == 2
    assert 'llm.provider "openai" needs llm.base_url' in result.stderr
    assert str(repo / "dispatch_config.json") in result.stderr
