"""Real Aider and a real model, end to end: whatever the model writes, nothing unsound lands.

Aider (from ``.venv-aider``) talks to SmolLM2-135M served by llama-cpp-python's
OpenAI-compatible server (the ``llama_server`` fixture in conftest.py), through the real
``dispatch_workers.py --until-idle``. A 135M model cannot be relied on to do the task: it may
write the file, break it, chat, or run out of time. The test does not judge the model; it
judges localdispatch, whatever the model did:

- the base branch either did not move, or every Python file on it compiles and holds no
  conflict markers, and the protected config is what the user committed;
- the task's reason is true: done means its merged commit is on the base branch; failed
  means its ``closed_reason`` names a cause that the attempt's log or events bear out;
- the exit status says which (0: done, 3: failed), with no traceback.

Without Aider or the model the test skips and says why.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    LLAMA_ALIAS,
    LlamaServer,
    add_task,
    commit_config,
    event_log,
    git,
    make_repo,
    run_script,
    task_board,
)
from localdispatch.dispatch.aider_output import give_up_in_log

pytestmark = [
    pytest.mark.aider,
    pytest.mark.realmodel,
    pytest.mark.slow,
    pytest.mark.timeout(600),  # the model server's first start may build caches
]

HELLO = 'def greet():\n    return "hello"\n'
# Each attempt is cut off here. On a 2-core machine the model reads Aider's first prompt (about
# 1,000 tokens) in about 12 s and writes 25 tokens a second; with the reply capped below, that
# leaves time for the reply, its commit message and a reflection.
WORKER_TIMEOUT_SECS = 60
# A reply of the small model is capped (Aider's model settings), or it may write until the
# context window is full; rewriting hello.py takes about 30.
MAX_REPLY_TOKENS = 160
MARKERS = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def aider_model_settings(folder: Path) -> Path:
    """Aider's settings for the model: a cap on each reply (outside the repository)."""
    path = folder / "aider-model-settings.yml"
    path.write_text(
        f"- name: openai/{LLAMA_ALIAS}\n  extra_params:\n    max_tokens: {MAX_REPLY_TOKENS}\n",
        encoding="utf-8",
    )
    return path


def base_files(repo: Path) -> dict[str, str]:
    names = git(repo, "ls-tree", "-r", "--name-only", "main").splitlines()
    return {name: git(repo, "show", f"main:{name}") for name in names}


def assert_base_is_sound(repo: Path, before: dict[str, str], start: str) -> None:
    """The base did not move, or what it holds now is sound and the config is the user's."""
    if git(repo, "rev-parse", "main") == start:
        return
    after = base_files(repo)
    assert after["dispatch_config.json"] == before["dispatch_config.json"]
    for name, text in after.items():
        assert not MARKERS.search(text), f"{name} on main holds conflict markers:\n{text}"
        if name.endswith(".py"):
            compile(text, name, "exec")  # raises SyntaxError: an unsound file landed


def assert_reason_is_true(repo: Path, task: dict[str, Any]) -> None:
    """The task's outcome as the task list tells it is what happened."""
    if task["status"] == "done":
        assert task["merged_commit"], task
        merged = subprocess.run(
            ["git", "merge-base", "--is-ancestor", task["merged_commit"], "main"],
            cwd=repo,
            check=False,
        )
        assert merged.returncode == 0, f"{task['merged_commit']} is not on main"
        return
    assert task["status"] == "failed", task
    reason = task["closed_reason"]
    found = re.search(r"\(log: (.+?\.log)\)", reason)
    assert found, f"the reason names no log: {reason}"
    log = Path(found.group(1))
    assert log.is_file(), reason
    give_up = give_up_in_log(log)
    mine = [e for e in event_log(repo) if e.get("task") == task["id"]]
    finished = [e for e in mine if e["event"] == "finish"]
    if give_up is not None and give_up.cause in reason:
        return  # Aider's own words about how it gave up, read from this very log
    if "timed out after" in reason:
        assert any(e["event"] == "kill" for e in mine), (reason, mine)
    elif "without a commit" in reason:
        assert finished and finished[-1]["commits"] == 0, (reason, finished)
        assert not re.search(r"^Commit [0-9a-f]{7,} ", log.read_text("utf-8"), re.MULTILINE)
    elif re.search(r"\.py:\d+", reason):  # a gate named a file and line of the branch
        assert finished and finished[-1]["commits"] > 0, (reason, finished)
    else:
        pytest.fail(f"a reason this test cannot check against the log: {reason}")


def test_real_aider_with_the_real_model_lands_nothing_unsound(
    aider_exe: Path, llama_server: LlamaServer, tmp_path: Path
) -> None:
    # aider_exe first: without Aider the test skips before the model server is started.
    repo = make_repo(tmp_path / "my repo", {"hello.py": HELLO, "README.md": "# demo\n"})
    home = tmp_path / "home"
    home.mkdir()
    config = {
        "branch": "main",
        "num_workers": 1,
        "worker_backend": "aider",
        "aider_cmd": str(aider_exe),
        "model": f"openai/{LLAMA_ALIAS}",
        "llm": {"provider": "openai", "base_url": llama_server.base_url, "model": LLAMA_ALIAS},
        "aider_extra_args": ["--model-settings-file", str(aider_model_settings(tmp_path))],
        "poll_interval_secs": 0.1,
        "worker_timeout_secs": WORKER_TIMEOUT_SECS,
        "worker_kill_grace_secs": 1,
        "max_worker_retries": 0,
    }
    commit_config(repo, config)
    task_id = add_task(
        repo,
        "Make greet say hi",
        "--files",
        "hello.py",
        "--description",
        'Change greet() in hello.py so that it returns "hi" instead of "hello".',
    )
    before, start = base_files(repo), git(repo, "rev-parse", "main")

    began = time.monotonic()
    env = {"HOME": str(home), "USERPROFILE": str(home)}  # no ~/.aider.conf.yml of the machine
    result = run_script("dispatch_workers.py", "--until-idle", cwd=repo, env=env, timeout=300)
    took = time.monotonic() - began

    task = task_board(repo)[task_id]
    logs = sorted((repo / ".dispatch" / "logs").glob(f"{task_id}-attempt*.log"))
    aider_said = "\n".join(p.read_text("utf-8", errors="replace")[-3000:] for p in logs)
    story = (
        f"exit {result.returncode} after {took:.0f} s; task {json.dumps(task, indent=1)}\n"
        f"stderr:\n{result.stderr}\nAider's log (end):\n{aider_said}\n"
        f"model server log:\n{llama_server.log_tail(15)}"
    )
    assert "Traceback" not in result.stderr, story
    assert result.returncode == (0 if task["status"] == "done" else 3), story
    assert task["status"] in ("done", "failed"), story
    assert_base_is_sound(repo, before, start)
    assert_reason_is_true(repo, task)
    assert git(repo, "status", "--porcelain") == "", story
    print(story)  # what the model did this time, for whoever runs with -s
