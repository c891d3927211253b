"""The merge queue end to end: the real CLI closes conflict tasks, real processes share the
merge slot, and a process killed in the middle of a merge loses nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import git, localdispatch
from localdispatch.config import CONFIG_FILENAME
from localdispatch.merge.queue import MergeQueue
from localdispatch.processes.trees import kill_tree
from test_merging import Env, assert_never_mid_merge, make_env, resolve_on_branch

# A process that merges the given task/branch pairs through its own MergeQueue.
MERGER = """
import sys
from pathlib import Path
from localdispatch.config import load_config
from localdispatch.events import EventLog
from localdispatch.layout import layout_for
from localdispatch.merge.queue import MergeQueue
from localdispatch.store import open_store

config = load_config(Path(sys.argv[1]))
layout = layout_for(config)
store = open_store(config, layout)
queue = MergeQueue(config, layout, store, EventLog(layout.events))
for pair in sys.argv[2:]:
    task_id, branch = pair.split("=", 1)
    outcome = queue.merge(store.get(task_id), branch)
    print(task_id, outcome.status, flush=True)
"""


@pytest.fixture
def env(repo: Path) -> Env:
    return make_env(repo)


def start_merger(env: Env, pairs: list[tuple[str, str]]) -> subprocess.Popen[str]:
    args = [f"{task_id}={branch}" for task_id, branch in pairs]
    return subprocess.Popen(
        [sys.executable, "-c", MERGER, str(env.repo / CONFIG_FILENAME), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def test_conflict_resolved_and_closed_with_the_cli_then_merged_by_the_next_tick(env: Env) -> None:
    (env.repo / "app.py").write_text("greeting = 'hello'\n", encoding="utf-8")
    git(env.repo, "add", "app.py")
    git(env.repo, "commit", "-q", "-m", "app")
    first, second = env.task("say hi"), env.task("say hey")
    a = env.branch("ld/t-1-hi", {"app.py": "greeting = 'hi'\n"})
    b = env.branch("ld/t-2-hey", {"app.py": "greeting = 'hey'\n"})
    assert env.queue.merge(first, a).status == "merged"
    conflict = env.queue.merge(second, b)
    assert conflict.status == "conflict" and conflict.conflict_task_id
    assert_never_mid_merge(env)

    resolve_on_branch(env, b, {"app.py": "greeting = 'hi and hey'\n"})
    closed = localdispatch(
        "tasks",
        "close",
        conflict.conflict_task_id,
        "--reason",
        "resolved by hand",
        "--config",
        str(env.repo / CONFIG_FILENAME),
        cwd=env.repo,
    )
    assert closed.returncode == 0, closed.stderr
    assert f"Merging {b} into main is retried by the next dispatcher run" in closed.stdout
    assert f"{second.id} is done once it lands" in closed.stdout
    [outcome] = env.queue.retry_pending()

    assert outcome.status == "merged" and outcome.task_id == second.id
    original = env.store.get(second.id)
    assert original.status == "done" and original.merged_commit == env.tip()
    assert (env.repo / "app.py").read_text(encoding="utf-8") == "greeting = 'hi and hey'\n"
    assert git(env.repo, "status", "--porcelain") == ""
    assert_never_mid_merge(env)


def test_two_processes_merging_at_once_take_turns_and_lose_nothing(env: Env) -> None:
    pairs = []
    for n in range(6):
        task = env.task(f"file {n}")
        pairs.append((task.id, env.branch(f"ld/p{n}", {f"p{n}.py": f"n = {n}\n"})))
    procs = [start_merger(env, pairs[:3]), start_merger(env, pairs[3:])]
    results = [proc.communicate(timeout=60) for proc in procs]

    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert [line.split()[1] for line in out.splitlines()] == ["merged"] * 3
    for n in range(6):
        assert (env.repo / f"p{n}.py").read_text(encoding="utf-8") == f"n = {n}\n"
    assert len(git(env.repo, "log", "--merges", "--format=%H").splitlines()) == 6
    assert {t.status for t in env.store.all()} == {"done"}
    assert git(env.repo, "status", "--porcelain") == ""


def test_a_merging_process_killed_mid_gate_leaves_the_task_pending_then_it_lands(
    repo: Path,
) -> None:
    started, hold = repo.parent / "gate-started", repo.parent / "gate-hold"
    gate = (
        "import pathlib, sys, time\n"
        f"pathlib.Path({str(started)!r}).write_text('x', encoding='utf-8')\n"
        f"while pathlib.Path({str(hold)!r}).exists(): time.sleep(0.05)\n"
    )
    env = make_env(repo, test_command=[sys.executable, "-c", gate])
    task = env.task()
    branch = env.branch("ld/crash", {"c.py": "\n"})
    before = env.tip()
    hold.write_text("hold", encoding="utf-8")
    proc = start_merger(env, [(task.id, branch)])
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), proc.communicate()[1]
    finally:
        kill_tree(psutil.Process(proc.pid), grace=0)  # the dispatcher and its gate die together
        proc.communicate()

    fresh = MergeQueue(env.queue.config, env.layout, env.store, env.events)
    assert fresh.pending_task_ids() == {task.id}
    assert env.tip() == before and env.store.get(task.id).status == "in_progress"
    hold.unlink()
    [outcome] = fresh.retry_pending()

    assert outcome.status == "merged", outcome.message
    assert env.store.get(task.id).merged_commit == env.tip() != before
    assert fresh.pending() == []
    assert_never_mid_merge(env)
