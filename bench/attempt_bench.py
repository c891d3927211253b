"""What a new attempt costs the dispatcher in git, before and after isolation.

Before: each slot was a worktree of the user's repository (reset with checkout -B and clean;
the branch was already in the user's repository). After: each slot is a private clone that
borrows the user's objects; an attempt is a check of its .git and a rewrite of its config,
checkout -B and clean, and after the worker, the fetch of its branch into the user's
repository. Both are measured on the same repository (2,000 files), with a "worker" that
commits one file, as the median of repeated attempts in a reused slot.

    python bench/attempt_bench.py [--files 2000] [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from localdispatch.git import branches
from localdispatch.git.clones import clone_at
from localdispatch.git.commands import run_git

IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, encoding="utf-8"
    ).stdout.strip()


def make_repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in range(files):
        folder = repo / f"pkg{n % 40}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{n}.py").write_text(f"VALUE = {n}\n" * 20, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, *IDENTITY, "commit", "-q", "-m", "initial")
    return repo


def worker(tree: Path, n: int) -> None:
    """What a worker does: one edit, one commit."""
    (tree / f"work{n}.txt").write_text(f"attempt {n}\n", encoding="utf-8")
    git(tree, "add", f"work{n}.txt")
    git(tree, *IDENTITY, "commit", "-q", "-m", f"work {n}")


def worktree_attempt(repo: Path, tree: Path, n: int) -> float:
    """The old way: the slot is a worktree sharing the user's refs."""
    branch = f"ld/t-{n}-x"
    started = time.perf_counter()
    start = run_git(["rev-parse", "refs/heads/main"], repo).stdout.strip()
    run_git(["checkout", "--force", "--quiet", "-B", branch, start], tree)
    run_git(["clean", "-ffdxq"], tree)
    prepared = time.perf_counter() - started
    worker(tree, n)
    started = time.perf_counter()
    branches.changed_files(repo, start, branch)
    branches.commits_between(repo, start, branch)
    run_git(["checkout", "--quiet", "--detach"], tree)  # let go of the branch
    return prepared + time.perf_counter() - started


def clone_attempt(repo: Path, path: Path, n: int) -> float:
    """Now: the slot is a private clone; its branch is fetched into the user's repository."""
    branch = f"ld/t-{n}-y"
    clone = clone_at(repo, path)
    started = time.perf_counter()
    start = branches.prepare_task_slot(clone, "main", branch)
    prepared = time.perf_counter() - started
    worker(clone.path, n)
    started = time.perf_counter()
    clone.secure()
    branches.changed_files(clone.path, start, branch)
    commits = branches.commits_between(clone.path, start, branch)
    branches.publish_branch(clone, branch, start, force=True, tip=commits[0])
    return prepared + time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ld-attempt-bench-") as tmp:
        repo = make_repo(Path(tmp), args.files)
        tree = repo / ".dispatch" / "worktrees" / "old1"
        git(repo, "worktree", "add", "-q", "--detach", str(tree), "main")
        slot = repo / ".dispatch" / "worktrees" / "w1"
        started = time.perf_counter()
        branches.prepare_task_slot(clone_at(repo, slot), "main", "ld/first")
        first = time.perf_counter() - started
        old, new = [], []
        for n in range(args.runs):  # interleaved, so a busy machine weighs on both alike
            old.append(worktree_attempt(repo, tree, n))
            new.append(clone_attempt(repo, slot, n))
    print(f"repository: {args.files} files; {args.runs} attempts each in a reused slot")
    print(f"first use of a slot (clone made and checked out): {first * 1000:.0f} ms")
    print(f"worktree slot (before): median {statistics.median(old) * 1000:.1f} ms per attempt")
    print(f"private clone (after):  median {statistics.median(new) * 1000:.1f} ms per attempt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
