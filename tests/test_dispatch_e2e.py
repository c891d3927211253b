"""End to end: the real dispatch_workers.py on real repositories with real worker scripts.

Timing is proven by the timestamps the workers write, never by asserting on wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import (
    ROOT,
    add_task,
    commit_config,
    event_log,
    git,
    run_script,
    task_board,
)
from localdispatch.processes.supervisor import repo_marker
from localdispatch.processes.trees import marked_processes

pytestmark = pytest.mark.slow
WORKERS = Path(__file__).resolve().parent / "workers"


def configure(repo: Path, script: str = "commit_worker.py", **settings: Any) -> None:
    config = {
        "branch": "main",
        "num_workers": 3,
        "worker_backend": "command",
        "worker_command": [
            sys.executable,
            str(WORKERS / script),
            "{task_file}",
            "{task_id}",
            "{files}",
        ],
        "poll_interval_secs": 0.05,
        "worker_timeout_secs": 30,
        "worker_kill_grace_secs": 1,
        "max_worker_retries": 1,
        **settings,
    }
    commit_config(repo, config)


add, tasks, events = add_task, task_board, event_log  # short names for the scenarios below


def dispatch(repo: Path, stamps: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_script("dispatch_workers.py", *args, cwd=repo, env={"LD_TEST_STAMPS": str(stamps)})
    return result


def stamps_of(stamps: Path, task_id: str) -> list[dict[str, Any]]:
    path = stamps / f"{task_id}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def test_workers_run_in_parallel_and_their_work_is_merged(repo: Path, tmp_path: Path) -> None:
    configure(repo)
    ids = [add(repo, f"Part {n}", "--files", f"part{n}.txt", "-d", "@sleep: 1") for n in range(3)]
    result = dispatch(repo, tmp_path / "stamps", "--until-idle")
    assert result.returncode == 0, result.stderr
    assert "started t-1" in result.stderr and "merged into main as" in result.stderr
    spans = []
    for task_id in ids:
        lines = stamps_of(tmp_path / "stamps", task_id)
        spans.append((lines[0]["t"], lines[-1]["t"]))
        assert Path(lines[0]["cwd"]).resolve() != repo.resolve()  # never the user's checkout
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all overlapped
    board = tasks(repo)
    for n, task_id in enumerate(ids):
        assert board[task_id]["status"] == "done" and board[task_id]["merged_commit"]
        assert git(repo, "show", f"main:part{n}.txt") == f"{task_id} was here"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_dependencies_start_only_on_merged_work(repo: Path, tmp_path: Path) -> None:
    configure(repo)
    a = add(repo, "Make a", "--files", "a.txt")
    b = add(repo, "Make b", "--files", "b.txt", "--after", a, "-d", "@requires: a.txt")
    c = add(repo, "Make c", "--files", "c.txt", "--after", b, "-d", "@requires: a.txt,b.txt")
    result = dispatch(repo, tmp_path / "stamps", "--until-idle")
    assert result.returncode == 0, result.stderr
    for later, earlier in ((b, a), (c, b)):
        start = stamps_of(tmp_path / "stamps", later)[0]
        assert start["missing"] == []  # the dependency's files were already in its tree
        assert stamps_of(tmp_path / "stamps", earlier)[-1]["t"] < start["t"]
    assert all(t["status"] == "done" for t in tasks(repo).values())


def test_a_hanging_worker_leaves_nothing_alive(repo: Path, tmp_path: Path) -> None:
    configure(repo, "hang_worker.py", worker_timeout_secs=1, max_worker_retries=0)
    plain = add(repo, "Hang with a child")
    orphaned = add(repo, "Hang with an orphaned grandchild", "-d", "@detach: yes")
    result = dispatch(repo, tmp_path / "stamps", "--until-idle")
    assert result.returncode == 3, result.stderr  # failed tasks: a person must look
    assert f"Failed: {plain}" in result.stderr and f"Failed: {orphaned}" in result.stderr
    for task_id in (plain, orphaned):
        start = stamps_of(tmp_path / "stamps", task_id)[0]
        assert not _same_process_alive(start["child"], start["child_created"])
        assert tasks(repo)[task_id]["status"] == "failed"
    for event in events(repo, "start"):
        assert not _same_process_alive(event["pid"], None)
    assert marked_processes(repo_marker(repo)) == []


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_process_alive(pid: int, created: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 1e-3:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_exit_zero_without_a_commit_is_not_done(repo: Path, tmp_path: Path) -> None:
    configure(repo, "nocommit_worker.py", max_worker_retries=1)
    task_id = add(repo, "Pretend")
    result = dispatch(repo, tmp_path / "stamps", "--until-idle")
    assert result.returncode == 3, result.stderr
    assert "0 merged, 0 done, 1 to retry, 1 failed" in result.stderr
    task = tasks(repo)[task_id]
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "without a commit" in task["closed_reason"]
    assert len(stamps_of(tmp_path / "stamps", task_id)) == 4  # two attempts, start and end
    assert "uncommitted.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")


def test_sigkill_mid_run_then_restart_finishes_every_task_once(repo: Path, tmp_path: Path) -> None:
    configure(repo, num_workers=2)
    ids = [add(repo, f"Step {n}", "--files", f"s{n}.txt", "-d", "@sleep: 0.6") for n in range(6)]
    stamps = tmp_path / "stamps"
    env = {**os.environ, "LD_TEST_STAMPS": str(stamps)}
    proc = psutil.Popen(
        [sys.executable, str(ROOT / "dispatch_workers.py")],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until one merged and others are running
            merged = [e for e in events(repo, "merge_outcome") if e["status"] == "merged"]
            running = read_json(repo / ".dispatch" / "state.json").get("runs", [])
            if merged and any(r["phase"] == "running" for r in running):
                break
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(30)
    finally:
        if proc.is_running():
            proc.kill()
    assert any(e["event"] == "start" for e in events(repo))
    before = len(events(repo))
    # What the kill interrupted: attempts still running with their task in progress (a worker
    # may have finished, and its merge landed, in the moment between the look and the kill).
    board = tasks(repo)
    pending = {e["task"] for e in read_json(repo / ".dispatch" / "pending_merges.json").get(
        "pending", []
    )}
    interrupted = [
        r["task_id"]
        for r in read_json(repo / ".dispatch" / "state.json").get("runs", [])
        if r["phase"] == "running"
        and board[r["task_id"]]["status"] == "in_progress"
        and r["task_id"] not in pending
    ]
    result = dispatch(repo, stamps, "--until-idle")
    assert result.returncode == 0, result.stderr
    board = tasks(repo)
    log_lines = git(repo, "log", "--format=%s", "main").splitlines()
    for n, task_id in enumerate(ids):
        assert board[task_id]["status"] == "done", board[task_id]
        assert git(repo, "show", f"main:s{n}.txt") == f"{task_id} was here"  # once, not twice
        assert log_lines.count(f"{task_id}: edit s{n}.txt") == 1
    # Every task merged (recorded on the task; the log above proves main got each task's
    # commit exactly once, even when a kill fell between moving main and the event log).
    assert all(board[task_id]["merged_commit"] for task_id in ids)
    # An attempt the kill interrupted was settled: requeued, or its commits recovered.
    if interrupted:
        assert {e["event"] for e in events(repo)[before:]} & {"requeue", "recovered"}
    assert marked_processes(repo_marker(repo)) == []
    state = json.loads((repo / ".dispatch" / "state.json").read_text("utf-8"))
    assert state["runs"] == [] and state["owner"] is None


def test_plan_and_status(repo: Path, tmp_path: Path) -> None:
    configure(repo, num_workers=2)
    a = add(repo, "A", "--files", "a.txt")
    add(repo, "B", "--files", "b.txt", "--after", a)
    add(repo, "C", "--files", "c.txt")
    plan = dispatch(repo, tmp_path, "--plan", "--json")
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert [[r["task_id"] for r in wave] for wave in data["waves"]] == [["t-1", "t-3"], ["t-2"]]
    assert data["speedup"] == 1.5
    text = dispatch(repo, tmp_path, "--plan")
    assert "Wave 1 (now)" in text.stdout and "speed-up 1.50x" in text.stdout
    status = dispatch(repo, tmp_path, "--status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["counts"]["open"] == 3 and info["ready"] == ["t-1", "t-3"]
    assert info["dispatcher"] is None and info["workers"] == []
    human = dispatch(repo, tmp_path, "--status")
    assert "Dispatcher: not running" in human.stdout and "3 open" in human.stdout


def test_bad_usage_exits_2(repo: Path, tmp_path: Path) -> None:
    configure(repo)
    assert dispatch(repo, tmp_path, "--workers", "0").returncode == 2
    assert dispatch(repo, tmp_path, "--plan", "--status").returncode == 2


def test_a_committed_suggestions_file_is_taken_out_of_the_branch(
    repo: Path, tmp_path: Path
) -> None:
    """Aider commits every file it edits, suggested_tasks.txt included: the work still lands,
    the idea becomes a task, and the state file never reaches main."""
    configure(repo, "state_commit_worker.py", max_worker_retries=0)
    real = add(repo, "Real work", "--files", "real.txt")
    empty = add(repo, "Only an idea")  # no files: the worker commits just the suggestion
    result = dispatch(repo, tmp_path / "stamps", "--until-idle")
    assert result.returncode == 3, result.stderr  # the empty attempts failed
    assert f"Failed: {empty}" in result.stderr
    state = tasks(repo)
    assert state[real]["status"] == "done" and state[real]["merged_commit"]
    assert state[empty]["status"] == "failed"
    assert git(repo, "show", "main:real.txt") == f"{real} was here"
    assert "suggested_tasks.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")
    titles = {t["title"] for t in state.values()}
    assert f"Follow-up idea from {real}" in titles
    # the ideas' own attempts commit nothing and fail: exit 0 is not trusted
    assert all(t["status"] == "failed" for t in state.values() if "Follow-up" in t["title"])
    assert events(repo, "state_files_dropped")
