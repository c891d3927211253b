"""Nothing stranded, every report true: the real dispatch_workers.py and localdispatch CLI on
real repositories, with work that waits for a person, a person's cancel, a dead model server
and the leftovers of a power cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import git, localdispatch
from test_dispatch_e2e import WORKERS, add, configure, dispatch, events, stamps_of, tasks

pytestmark = pytest.mark.slow


def start_dispatcher(repo: Path, stamps: Path) -> subprocess.Popen[str]:
    """dispatch_workers.py --until-idle in the background, as a user starts it."""
    return subprocess.Popen(
        [sys.executable, str(WORKERS.parent.parent / "dispatch_workers.py"), "--until-idle"],
        cwd=repo,
        env={**os.environ, "LD_TEST_STAMPS": str(stamps)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def wait_for_worker(stamps: Path, task_id: str) -> None:
    deadline = time.monotonic() + 60
    while not stamps_of(stamps, task_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stamps_of(stamps, task_id), f"the worker of {task_id} never started"


def test_a_merge_waiting_for_the_users_checkout_ends_the_run_with_3_and_the_steps(
    repo: Path, tmp_path: Path
) -> None:
    configure(repo)
    task_id = add(repo, "Edit the readme", "--files", "README.md")
    (repo / "README.md").write_text("# my own unsaved edit\n", encoding="utf-8")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()
    assert any(line.startswith(f"Waiting for you: {task_id}") for line in last)
    assert "README.md" in result.stderr and "commit, stash or move" in result.stderr
    assert (repo / "README.md").read_text(encoding="utf-8") == "# my own unsaved edit\n"
    status = dispatch(repo, tmp_path / "stamps", "--status")
    assert "Dispatcher: not running" in status.stdout
    assert "Waiting for you:" in status.stdout and "goes ahead by itself" not in status.stdout
    data = json.loads(dispatch(repo, tmp_path / "stamps", "--status", "--json").stdout)
    [entry] = data["pending_merges"]
    assert entry["person"] and entry["task"] == task_id

    git(repo, "checkout", "--", "README.md")  # the user puts their edit away
    again = dispatch(repo, tmp_path / "stamps", "--until-idle")
    assert again.returncode == 0, again.stderr
    assert tasks(repo)[task_id]["status"] == "done"
    assert "Every task is done." in again.stderr


def test_a_test_gate_that_refuses_for_good_is_counted_and_its_output_kept(
    repo: Path, tmp_path: Path
) -> None:
    gate = [sys.executable, "-c", "import sys; print('the answer was 41'); sys.exit(1)"]
    configure(repo, test_command=gate, max_worker_retries=0, max_merge_attempts=1)
    task_id = add(repo, "Break the tests", "--files", "b.txt")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 3, result.stderr
    assert "0 merged, 0 done, 0 to retry, 1 failed" in result.stderr
    task = tasks(repo)[task_id]
    assert task["status"] == "failed"
    assert "the answer was 41" in task["closed_reason"]


def test_cancelling_a_running_task_stops_its_worker_and_nothing_lands(
    repo: Path, tmp_path: Path
) -> None:
    configure(repo, num_workers=1)
    task_id = add(repo, "Slow work", "--files", "slow.txt", "-d", "@sleep: 30")
    stamps = tmp_path / "stamps"
    proc = start_dispatcher(repo, stamps)
    try:
        wait_for_worker(stamps, task_id)
        cancel = localdispatch("tasks", "cancel", task_id, "--reason", "changed my mind", cwd=repo)
        assert cancel.returncode == 0, cancel.stderr
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    task = tasks(repo)[task_id]
    assert task["status"] == "cancelled" and task["closed_reason"] == "changed my mind"
    assert "slow.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")
    [kill] = [e for e in events(repo, "kill") if e.get("task") == task_id]
    assert "cancelled" in kill["reason"]
    assert len(stamps_of(stamps, task_id)) == 1  # started, never finished: it was stopped


def aider_config(repo: Path, port: int) -> None:
    """An Aider-backend config whose model server address answers nothing (the program is
    one that exists, so only the server can stop the run)."""
    configure(
        repo,
        worker_backend="aider",
        worker_command=None,
        aider_cmd=sys.executable,
        aider_extra_args=[],
        model="ollama_chat/qwen2.5-coder:7b",
        ollama={"host": f"http://127.0.0.1:{port}"},
    )


def dead_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_attempt_is_spent_against_a_dead_model_server(repo: Path, tmp_path: Path) -> None:
    port = dead_port()
    aider_config(repo, port)
    task_id = add(repo, "Needs the model", "--files", "m.py")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 3, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "ollama serve" in result.stderr
    task = tasks(repo)[task_id]
    assert task["status"] == "open" and task["attempts"] == 0
    assert events(repo, "start") == []
    assert len(events(repo, "model_down")) == 1


# ---- power cuts ---------------------------------------------------------------------------


def test_stale_git_locks_in_our_trees_do_not_stop_a_restart(repo: Path, tmp_path: Path) -> None:
    configure(repo)
    first = add(repo, "First", "--files", "one.txt")
    assert dispatch(repo, tmp_path / "stamps", "--until-idle").returncode == 0
    # A power cut: git in a slot and in the integration tree died holding their locks.
    for tree in (repo / ".dispatch" / "worktrees" / "w1", repo / ".dispatch" / "integration"):
        (tree / ".git" / "index.lock").write_text("", encoding="utf-8")
        (tree / ".git" / "HEAD.lock").write_text("", encoding="utf-8")
    second = add(repo, "Second", "--files", "two.txt")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 0, result.stderr
    assert tasks(repo)[second]["status"] == "done" and tasks(repo)[first]["status"] == "done"
    removed = [p for e in events(repo, "stale_lock_removed") for p in e["paths"]]
    assert any("w1" in p and p.endswith("index.lock") for p in removed)
    assert any("integration" in p for p in removed)


def test_a_lock_in_the_users_repository_is_named_never_removed_never_looped_on(
    repo: Path, tmp_path: Path
) -> None:
    configure(repo)
    git(repo, "checkout", "-q", "--detach")  # main checked out nowhere: moved by update-ref
    lock = repo / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("", encoding="utf-8")
    task_id = add(repo, "Work", "--files", "w.txt")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 3, result.stderr
    assert str(lock) in result.stderr and lock.exists()
    assert tasks(repo)[task_id]["status"] == "in_progress"
    lock.unlink()
    assert dispatch(repo, tmp_path / "stamps", "--until-idle").returncode == 0
    assert tasks(repo)[task_id]["status"] == "done"


def test_a_worker_that_commits_broken_python_is_refused_and_told_why(
    repo: Path, tmp_path: Path
) -> None:
    """The worker writes "t-1 was here" into a .py file: it commits, but main must keep
    importing. The sanity gate refuses it, the reason names file and line, and the next
    attempt's task text says what was wrong."""
    configure(repo, max_worker_retries=1)
    task_id = add(repo, "Write the module", "--files", "module.py")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 3, result.stderr
    task = tasks(repo)[task_id]
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "sanity gate" in task["closed_reason"] and "module.py line 1" in task["closed_reason"]
    second = (repo / ".dispatch" / "tasks" / f"{task_id}-attempt2.md").read_text(encoding="utf-8")
    assert "earlier attempt did not succeed" in second and "module.py line 1" in second
    assert "module.py" not in git(repo, "ls-tree", "-r", "--name-only", "main")


def test_a_conflict_no_worker_resolves_waits_for_the_user_who_follows_the_steps(
    repo: Path, tmp_path: Path
) -> None:
    """The workers give up on the conflict: the original task waits (not failed), the run ends
    with 3 and the commands; the user runs them, closes the conflict task, and the next run
    lands the branch."""
    (repo / "shared.txt").write_text("base\n", encoding="utf-8")
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "shared")
    configure(repo, "noresolve_worker.py", num_workers=1, max_worker_retries=0)
    task_id = add(repo, "Edit shared", "--files", "shared.txt", "-d", "@sleep: 2")
    stamps = tmp_path / "stamps"
    proc = start_dispatcher(repo, stamps)
    try:
        wait_for_worker(stamps, task_id)
        # The user commits to the same line while the worker works: a real conflict.
        (repo / "shared.txt").write_text("the user's line\n", encoding="utf-8")
        git(repo, "commit", "-q", "-am", "the user's edit")
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()

    assert proc.returncode == 3, err
    board = tasks(repo)
    [conflict] = [t for t in board.values() if t["kind"] == "conflict"]
    assert conflict["status"] == "failed"
    assert board[task_id]["status"] == "in_progress"  # waiting, not failed
    branch = board[task_id]["branch"]
    assert f"Waiting for you: {task_id} ({branch})" in err
    worktree_step = f"git worktree add ../resolve-{conflict['id']} {branch}"
    assert worktree_step in err and f"localdispatch tasks close {conflict['id']}" in err

    # The user does what the steps say.
    resolve = repo.parent / f"resolve-{conflict['id']}"
    git(repo, "worktree", "add", "-q", str(resolve), branch)
    subprocess.run(["git", "merge", "main"], cwd=resolve, capture_output=True, check=False)
    (resolve / "shared.txt").write_text("the user's line\nand the worker's\n", encoding="utf-8")
    git(resolve, "add", "-A")
    git(resolve, "commit", "-q", "--no-edit")
    closed = localdispatch("tasks", "close", conflict["id"], cwd=repo)
    assert closed.returncode == 0 and "is retried" in closed.stdout
    git(repo, "worktree", "remove", str(resolve))

    again = dispatch(repo, stamps, "--until-idle")
    assert again.returncode == 0, again.stderr
    assert tasks(repo)[task_id]["status"] == "done"
    assert git(repo, "show", "main:shared.txt") == "the user's line\nand the worker's"


@pytest.mark.skipif(sys.platform != "linux", reason="orphans are adopted only on Linux")
def test_a_daemon_that_dropped_its_marker_does_not_outlive_its_attempt(
    repo: Path, tmp_path: Path
) -> None:
    import psutil

    configure(repo)
    task_id = add(repo, "Leave a daemon", "--files", "d.txt", "-d", "@daemon: yes")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 0, result.stderr
    daemon = stamps_of(tmp_path / "stamps", task_id)[0]["daemon"]
    assert isinstance(daemon, int)
    try:
        alive = psutil.Process(daemon).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        alive = False
    assert not alive, f"daemon {daemon} outlived its attempt"
