"""Merge queue benchmark: finished, non-conflicting branches merged in turn.

A real repository in a temporary folder (its name has a space), the user's checkout on the base
branch, N branches that each add one file; every merge goes through MergeQueue.merge exactly as
the dispatcher calls it, including moving the base branch and the user's checkout forward,
marking the task done and deleting the branch. Prints merges per second and the median merge
time (target: at most 150 ms each without a test gate). Figures, not assertions.

    python bench/merge_bench.py [--branches 20] [--files 300] [--gate] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localdispatch.config import load_config
from localdispatch.events import EventLog
from localdispatch.layout import ensure_state_ignored, layout_for
from localdispatch.merge.queue import MergeQueue
from localdispatch.store import TaskDraft, open_store

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **IDENTITY, **(env or {})},
        check=True,
    )
    return result.stdout.strip()


def make_repo(root: Path, files: int, gate: bool) -> Path:
    repo = root / "bench repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in range(files):
        target = repo / f"pkg{n % 10}" / f"module_{n}.py"
        target.parent.mkdir(exist_ok=True)
        target.write_text(f"VALUE = {n}\n" * 20, encoding="utf-8")
    config: dict[str, object] = {}
    if gate:
        config["test_command"] = [sys.executable, "-c", "pass"]
    (repo / "dispatch_config.json").write_text(json.dumps(config), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def make_branch(repo: Path, index_file: Path, name: str, path: str, text: str) -> None:
    """A branch adding one file, made with plumbing so the user's checkout is untouched."""
    env = {"GIT_INDEX_FILE": str(index_file)}
    git(repo, "read-tree", "refs/heads/main", env=env)
    blob = git(repo, "hash-object", "-w", "--stdin", stdin=text)
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
    tree = git(repo, "write-tree", env=env)
    commit = git(repo, "commit-tree", tree, "-p", "refs/heads/main", "-m", f"add {path}")
    git(repo, "branch", name, commit)


@contextmanager
def counting_git() -> Iterator[list[int]]:
    """Count git processes started (for --profile only: it wraps subprocess.run)."""
    count = [0]
    original = subprocess.run

    def counted(*args: object, **kwargs: object) -> object:
        argv = args[0] if args else kwargs.get("args")
        if isinstance(argv, list) and argv and argv[0] == "git":
            count[0] += 1
        return original(*args, **kwargs)  # type: ignore[call-overload]

    subprocess.run = counted  # type: ignore[assignment]
    try:
        yield count
    finally:
        subprocess.run = original


def run(branches: int, files: int, gate: bool, profile: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="merge bench ") as tmp:
        repo = make_repo(Path(tmp), files, gate)
        for n in range(branches):
            make_branch(repo, Path(tmp) / "index", f"ld/t-{n + 1}-bench", f"new/f{n}.py", f"{n}\n")
        config = load_config(repo / "dispatch_config.json")
        layout = layout_for(config)
        ensure_state_ignored(layout)
        store = open_store(config, layout)
        tasks = [store.add(TaskDraft(title=f"bench {n}")) for n in range(branches)]
        for task in tasks:
            store.claim(task.id)
        queue = MergeQueue(config, layout, store, EventLog(layout.events))

        profiler = cProfile.Profile() if profile else None
        times: list[float] = []
        with counting_git() if profile else _nothing() as count:
            if profiler:
                profiler.enable()
            for n, task in enumerate(tasks):
                started = time.perf_counter()
                outcome = queue.merge(store.get(task.id), f"ld/t-{n + 1}-bench")
                times.append(time.perf_counter() - started)
                if outcome.status != "merged":
                    raise SystemExit(f"merge {n + 1} ended {outcome.status}: {outcome.message}")
            if profiler:
                profiler.disable()
        assert git(repo, "status", "--porcelain") == "", "the user's checkout was left dirty"
        report(times, gate, files, count[0] if count else None)
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


@contextmanager
def _nothing() -> Iterator[list[int]]:
    yield []


def report(times: list[float], gate: bool, files: int, git_calls: int | None) -> None:
    total = sum(times)
    ordered = sorted(times)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    print(f"merge queue: {len(times)} branches, {files} files in the repo, user checkout on main")
    print(f"  test gate:              {'python -c pass' if gate else 'none'}")
    print(f"  merges per second:      {len(times) / total:.1f}")
    print(f"  median merge:           {statistics.median(times) * 1000:.1f} ms  (target <= 150 ms)")
    print(f"  first merge (cold):     {times[0] * 1000:.1f} ms")
    print(f"  p90 / max:              {p90 * 1000:.1f} / {ordered[-1] * 1000:.1f} ms")
    if git_calls is not None:
        print(f"  git processes / merge:  {git_calls / len(times):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--files", type=int, default=300, help="files in the repository")
    parser.add_argument("--gate", action="store_true", help="with a trivial test command")
    parser.add_argument("--profile", action="store_true", help="cProfile and count git calls")
    args = parser.parse_args()
    run(args.branches, args.files, args.gate, args.profile)


if __name__ == "__main__":
    main()
