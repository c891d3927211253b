"""The dispatcher loop in-process, with real git repositories and real worker scripts."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import git
from localdispatch.config import load_config
from localdispatch.dispatch.loop import Dispatcher
from localdispatch.dispatch.state import RunRecord, StateFile, dispatcher_lock, read_state
from localdispatch.dispatch.views import status_snapshot
from localdispatch.errors import LockBusy
from localdispatch.events import EventLog
from localdispatch.git import branches
from localdispatch.git.clones import clone_at
from localdispatch.layout import Layout, layout_for
from localdispatch.processes.supervisor import start_worker, worker_marker
from localdispatch.processes.trees import ProcessKey, find_process
from localdispatch.store import JsonStore, TaskDraft, open_store

WORKERS = Path(__file__).resolve().parent / "workers"


class Env:
    """A repository with a command-backend config, its store, and the workers' stamps."""

    def __init__(self, repo: Path, stamps: Path, script: str, **settings: Any) -> None:
        config = {
            "branch": "main",
            "num_workers": 2,
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
            "auto_merge_worktrees": False,
            "max_worker_retries": 1,
            **settings,
        }
        (repo / "dispatch_config.json").write_text(json.dumps(config), encoding="utf-8")
        git(repo, "add", "dispatch_config.json")
        git(repo, "commit", "-q", "-m", "config")
        self.repo, self.stamps = repo, stamps
        self.config = load_config(repo / "dispatch_config.json")
        self.layout: Layout = layout_for(self.config)
        self.store: JsonStore = open_store(self.config, self.layout)  # type: ignore[assignment]
        self.seen: list[dict[str, Any]] = []

    def add(self, title: str, **fields: Any) -> str:
        return self.store.add(TaskDraft(title=title, **fields)).id

    def dispatcher(self, **kwargs: Any) -> Dispatcher:
        kwargs.setdefault("until_idle", True)
        return Dispatcher(self.config, self.layout, reporter=self.seen.append, **kwargs)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in EventLog(self.layout.events).read() if e["event"] == name]

    def stamp_lines(self, task_id: str) -> list[dict[str, Any]]:
        path = self.stamps / f"{task_id}.jsonl"
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def make_env(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    stamps = tmp_path / "stamps"
    monkeypatch.setenv("LD_TEST_STAMPS", str(stamps))

    def make(script: str = "commit_worker.py", **settings: Any) -> Env:
        return Env(repo, stamps, script, **settings)

    return make


def test_tasks_run_to_done_with_their_branches_left_for_the_user(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    ids = [env.add(f"Task {n}", files=[f"f{n}.txt"]) for n in range(3)]
    summary = env.dispatcher().run()
    assert summary.started == 3 and summary.done == 3 and summary.failed == 0
    for task_id in ids:
        task = env.store.get(task_id)
        assert task.status == "done" and task.attempts == 1
        assert task.branch and task.branch.startswith(f"ld/{task_id}-")
        assert len(branches.commits_between(env.repo, "main", task.branch)) == 1
    assert branches.current_branch(env.repo) == "main"
    assert git(env.repo, "status", "--porcelain") == ""
    assert read_state(env.layout)["runs"] == [] and read_state(env.layout)["owner"] is None
    assert {e["event"] for e in env.seen} >= {"start", "finish", "done"}
    starts = env.events("start")
    assert len(starts) == 3 and all(Path(e["log"]).exists() for e in starts)
    for task_id in ids:  # the task text was outside the worktree, and named the files
        text = (env.layout.state / "tasks" / f"{task_id}-attempt1.md").read_text(encoding="utf-8")
        assert "Commit your work" in text


def test_exit_zero_without_a_commit_is_not_done(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env("nocommit_worker.py", max_worker_retries=1)
    task_id = env.add("Looks busy")
    summary = env.dispatcher().run()
    task = env.store.get(task_id)
    assert task.status == "failed" and task.attempts == 2
    assert "without a commit" in (task.closed_reason or "")
    assert "attempt2.log" in (task.closed_reason or "")
    assert summary.retried == 1 and summary.failed == 1
    assert [e["outcome"] for e in env.events("finish")] == ["retry", "failed"]


def test_a_hanging_worker_and_its_grandchild_die_at_the_timeout(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env("hang_worker.py", worker_timeout_secs=1, max_worker_retries=0)
    task_id = env.add("Hang forever")
    env.dispatcher().run()
    task = env.store.get(task_id)
    assert task.status == "failed" and "timed out after 1 s" in (task.closed_reason or "")
    start = env.stamp_lines(task_id)[0]
    assert find_process(ProcessKey(start["child"], start["child_created"])) is None
    worker = env.events("start")[0]
    assert env.events("kill")[0]["pid"] == worker["pid"]
    assert not [p for p in _alive_pids([worker["pid"], start["child"]])]


def _alive_pids(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_dependencies_wait_for_their_work(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    first = env.add("First", files=["a.txt"], description="@sleep: 0.3")
    second = env.add("Second", files=["b.txt"], depends_on=[first])
    env.dispatcher().run()
    end_first = env.stamp_lines(first)[-1]["t"]
    start_second = env.stamp_lines(second)[0]["t"]
    assert end_first < start_second
    assert env.store.get(second).status == "done"


def test_max_tasks_stops_starting(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    for n in range(3):
        env.add(f"Task {n}")
    summary = env.dispatcher(max_tasks=1, workers=3).run()
    assert summary.started == 1
    assert sorted(t.status for t in env.store.all()) == ["done", "open", "open"]


def test_a_second_dispatcher_is_refused_clearly(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    with dispatcher_lock(env.layout):
        StateFile(env.layout).claim_owner()
        with pytest.raises(LockBusy) as caught:
            env.dispatcher().run()
    message = str(caught.value)
    assert "already running" in message and "dispatcher.lock" in message
    import os

    assert f"pid {os.getpid()}" in message


def previous_run(env: Env, task_id: str, slot: int = 1) -> RunRecord:
    """Stage what a dispatcher killed mid-run leaves: a claimed task, a live worker, a record."""
    task = env.store.claim(task_id, attempts=1, branch=f"ld/{task_id}-x")
    assert task is not None
    worktree = env.layout.slot_worktree(slot)
    start = branches.prepare_task_slot(clone_at(env.repo, worktree), "main", f"ld/{task_id}-x")
    marker = worker_marker(env.repo, slot, task_id)
    handle = start_worker(
        "old",
        [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)\n"],
        cwd=worktree,
        log_path=env.layout.logs / "old.log",
        marker=marker,
    )
    return RunRecord(
        slot=slot,
        task_id=task_id,
        kind="task",
        branch=f"ld/{task_id}-x",
        start_commit=start,
        worktree=str(worktree),
        log=str(env.layout.logs / "old.log"),
        attempt=1,
        marker=marker,
        pid=handle.pid,
        create_time=handle.key.create_time,
        started_at=handle.started,
    )


def test_restart_kills_the_old_workers_and_requeues_their_tasks(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    interrupted = env.add("Interrupted")
    orphan = env.add("Orphan")
    record = previous_run(env, interrupted)
    assert env.store.claim(orphan, attempts=1) is not None  # claimed, never started
    state = StateFile(env.layout)
    state.save([record])
    env.dispatcher().run()
    assert find_process(ProcessKey(record.pid or 0, record.create_time or 0)) is None
    for task_id in (interrupted, orphan):
        task = env.store.get(task_id)
        assert task.status == "done" and task.attempts == 2
    reasons = {e["task"]: e["reason"] for e in env.events("requeue")}
    assert "interrupted" in reasons[interrupted] and "orphaned" in reasons[orphan]


def test_committed_work_of_a_killed_worker_is_kept_not_redone(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    task_id = env.add("Half way")
    record = previous_run(env, task_id)
    worktree = Path(record.worktree)
    (worktree / "done.txt").write_text("committed before the crash\n", encoding="utf-8")
    git(worktree, "add", "done.txt")
    git(worktree, "commit", "-q", "-m", "work")
    StateFile(env.layout).save([record])
    env.dispatcher().run()
    task = env.store.get(task_id)
    assert task.status == "done" and task.attempts == 1
    assert env.events("start") == []
    assert env.events("recovered")[0]["commits"] == 1


def test_interrupt_once_lets_running_work_finish(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(num_workers=1)
    first = env.add("Runs", description="@sleep: 0.5")
    second = env.add("Never starts")
    dispatcher = env.dispatcher(until_idle=False)
    dispatcher.reporter = lambda e: e["event"] == "start" and dispatcher.interrupt()
    summary = dispatcher.run()
    assert summary.interrupted
    assert env.store.get(first).status == "done"
    assert env.store.get(second).status == "open"


def test_interrupt_twice_kills_and_puts_tasks_back(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env("hang_worker.py", num_workers=2)
    ids = [env.add("Hang A"), env.add("Hang B")]
    dispatcher = env.dispatcher(until_idle=False)
    started: list[dict[str, Any]] = []

    def report(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            started.append(event)
            if len(started) == 2:
                threading.Timer(
                    0.3, lambda: (dispatcher.interrupt(), dispatcher.interrupt())
                ).start()

    dispatcher.reporter = report
    summary = dispatcher.run()
    assert summary.interrupted
    for task_id in ids:
        task = env.store.get(task_id)
        assert task.status == "open" and task.attempts == 0
        child = env.stamp_lines(task_id)[0]
        assert find_process(ProcessKey(child["child"], child["child_created"])) is None
    assert not _alive_pids([e["pid"] for e in started])
    assert read_state(env.layout)["runs"] == []


def test_a_conflict_task_resolves_on_its_branch(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env("resolve_worker.py")
    clone = clone_at(env.repo, env.layout.slot_worktree(2))
    start = branches.prepare_task_slot(clone, "main", "ld/t-0-readme")
    (clone.path / "README.md").write_text("# branch side\n", encoding="utf-8")
    git(clone.path, "commit", "-q", "-am", "branch edit")
    branches.publish_branch(clone, "ld/t-0-readme", start, force=True)
    (env.repo / "README.md").write_text("# main side\n", encoding="utf-8")
    git(env.repo, "commit", "-q", "-am", "main edit")
    task_id = env.add(
        "Resolve merge conflict: ld/t-0-readme", kind="conflict", extra={"branch": "ld/t-0-readme"}
    )
    env.dispatcher().run()
    task = env.store.get(task_id)
    assert task.status == "done" and task.branch == "ld/t-0-readme"
    assert git(env.repo, "merge-base", "--is-ancestor", "main", "ld/t-0-readme") == ""
    text = git(env.repo, "show", "ld/t-0-readme:README.md")
    assert "branch side" in text and "main side" in text and "<<<<<<<" not in text


def test_status_snapshot_while_a_worker_runs(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env("hang_worker.py", num_workers=1)
    task_id = env.add("Hang for status")
    env.add("Waiting")
    dispatcher = env.dispatcher(until_idle=False)
    seen: dict[str, Any] = {}

    def report(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            seen.update(status_snapshot(env.config, env.layout, env.store, sample_secs=0.05))
            dispatcher.interrupt()
            dispatcher.interrupt()

    dispatcher.reporter = report
    dispatcher.run()
    assert seen["dispatcher"]["pid"] > 0
    assert seen["counts"]["in_progress"] == 1 and seen["counts"]["open"] == 1
    (worker,) = seen["workers"]
    assert worker["task"] == task_id and worker["alive"] and worker["rss_mb"] > 0
    assert worker["elapsed_secs"] is not None
    assert seen["pending_merges"] == [] and seen["merging"] == []


def test_finished_work_is_merged_into_the_base_branch(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(auto_merge_worktrees=True)
    ids = [env.add(f"Task {n}", files=[f"f{n}.txt"]) for n in range(3)]
    summary = env.dispatcher().run()
    assert summary.merged == 3
    for n, task_id in enumerate(ids):
        task = env.store.get(task_id)
        assert task.status == "done" and task.merged_commit
        assert git(env.repo, "show", f"main:f{n}.txt") == f"{task_id} was here"
    assert [e["status"] for e in env.events("merge_outcome")] == ["merged"] * 3
    assert git(env.repo, "status", "--porcelain") == ""


def test_a_conflict_becomes_a_task_and_the_merge_is_retried_after_it(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env("resolve_worker.py", auto_merge_worktrees=True, num_workers=2)
    # No files declared, so both run at once and both append to the same file.
    first = env.add("Edit shared A", description="@write: shared.txt\n@sleep: 0.2")
    second = env.add("Edit shared B", description="@write: shared.txt\n@sleep: 0.2")
    env.dispatcher().run()
    tasks = env.store.all()
    conflicts = [t for t in tasks if t.kind == "conflict"]
    assert len(conflicts) == 1 and conflicts[0].status == "done"
    assert env.store.get(first).status == "done" and env.store.get(second).status == "done"
    text = git(env.repo, "show", "main:shared.txt")
    assert f"{first} was here" in text and f"{second} was here" in text and "<<<" not in text
    statuses = [e["status"] for e in env.events("merge_outcome")]
    assert statuses.count("merged") == 2 and statuses.count("conflict") == 1


def test_a_rejected_merge_is_a_failed_attempt(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(auto_merge_worktrees=True, max_worker_retries=1)
    before = (env.repo / "dispatch_config.json").read_text(encoding="utf-8")
    task_id = env.add("Touch the config", description="@write: dispatch_config.json")
    summary = env.dispatcher().run()
    task = env.store.get(task_id)
    assert task.status == "failed" and task.attempts == 2
    assert "merge rejected" in (task.closed_reason or "")
    assert summary.retried == 1 and summary.failed == 1 and summary.merged == 0
    assert [e["status"] for e in env.events("merge_outcome")] == ["rejected", "rejected"]
    assert git(env.repo, "show", "main:dispatch_config.json") == before.strip()


def test_a_workers_follow_up_idea_becomes_a_task_and_runs(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(auto_merge_worktrees=True)
    first = env.add("Write code", description="@suggest: Write the docs [files: docs.txt]")
    env.dispatcher().run()
    board = {t.title: t for t in env.store.all()}
    follow_up = board["Write the docs"]
    assert follow_up.discovered_from == first and follow_up.files == ["docs.txt"]
    assert follow_up.status == "done" and env.store.get(first).status == "done"
    assert git(env.repo, "show", "main:docs.txt") == f"{follow_up.id} was here"
    assert "suggested_tasks.txt" not in git(env.repo, "ls-tree", "-r", "--name-only", "main")
