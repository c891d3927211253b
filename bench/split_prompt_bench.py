"""Size and build time of the splitter's prompt for a large repository (a real git repository).

Builds a repository of N tracked files (5,000 by default) spread over nested folders, with a
few commits so "recently changed" means something, then times what split_task.py does before
it calls the model: git ls-files, git log, the README head, ranking, trimming and rendering.
Targets: prompt <= 6,000 tokens (estimated), build <= 1 s.
Run: python bench/split_prompt_bench.py [--files N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from localdispatch.split.context import build_context, estimate_tokens
from localdispatch.split.plan import Limits
from localdispatch.split.splitter import build_messages

GOAL = "Add a full analytics dashboard with cycle time, throughput and WIP"
WORDS = [
    "core",
    "api",
    "auth",
    "billing",
    "board",
    "cache",
    "client",
    "config",
    "db",
    "events",
    "export",
    "forms",
    "graph",
    "http",
    "importer",
    "jobs",
    "ledger",
    "mail",
    "models",
    "notify",
    "orders",
    "parser",
    "payments",
    "queue",
    "reports",
    "search",
    "server",
    "session",
    "storage",
    "sync",
    "tasks",
    "ui",
    "users",
    "utils",
    "views",
    "worker",
]


def git(repo: Path, *args: str) -> None:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localdispatch.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localdispatch.invalid",
    )
    subprocess.run(
        ["git", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
    )


def make_large_repo(repo: Path, count: int) -> None:
    rng = random.Random(5)
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text(
        "# Tracker\n\nA work tracker with boards, tasks and reports.\n\n" + "Usage text.\n" * 300,
        encoding="utf-8",
    )
    names = ["README.md"]
    for extra in ("pyproject.toml", "Makefile", "setup.cfg", ".gitignore"):
        (repo / extra).write_text("\n", encoding="utf-8")
        names.append(extra)
    while len(names) < count:
        depth = rng.randint(1, 4)
        folder = "/".join(rng.choice(WORDS) for _ in range(depth))
        stem = "_".join(rng.sample(WORDS, 2))
        name = f"src/{folder}/{stem}_{len(names)}.py"
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")
        names.append(name)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    for round_ in range(5):
        for name in rng.sample(names[5:], 20):
            with (repo / name).open("a", encoding="utf-8") as handle:
                handle.write(f"# change {round_}\n")
        git(repo, "commit", "-q", "-am", f"change {round_}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "big repo"
        started = time.perf_counter()
        make_large_repo(repo, args.files)
        setup_s = time.perf_counter() - started
        samples = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            context = build_context(repo, GOAL)
            messages = build_messages(GOAL, context, Limits(3, 10))
            samples.append(time.perf_counter() - start)
        build_s = statistics.median(samples)
        tokens = sum(estimate_tokens(m["content"]) for m in messages)
        chars = sum(len(m["content"]) for m in messages)
        print(
            f"{context.total:,} tracked files (repository built in {setup_s:.1f} s), "
            f"median of {args.repeat}"
        )
        print(f"  files shown in the prompt   {context.shown:>8,}   ({context.omitted:,} left out)")
        print(f"  repository context          {context.tokens:>8,} tokens (estimated)")
        verdict = "ok" if tokens <= 6000 else "OVER"
        print(
            f"  whole prompt                {tokens:>8,} tokens (estimated, {chars:,} chars; "
            f"target <= 6,000: {verdict})"
        )
        verdict = "ok" if build_s <= 1.0 else "OVER"
        print(
            f"  build time                  {build_s * 1000:>8.0f} ms   (target <= 1 s: {verdict})"
        )


if __name__ == "__main__":
    main()
