"""Sanity gate benchmark: check_merge on a real merge that changes 100 files.

A real repository in a temporary folder (its name has a space) with a few hundred files; a
branch changes 100 of them (Python, JSON, TOML, Markdown and one binary) and is merged with
``git merge --no-ff``, as the merge queue prepares it. Prints the median, fastest and slowest
time of ``check_merge(base, merged)`` over several runs (target: well under a second), and for
comparison the same checks run in-process on contents already in memory. Figures, not
assertions.

    python bench/sanity_bench.py [--runs 9] [--files 100] [--untouched 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from localdispatch.merge.sanity import check_file, check_merge

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **IDENTITY},
        check=True,
    )
    return result.stdout.strip()


def python_module(n: int, version: int) -> str:
    functions = "".join(
        f"\n\ndef handler_{n}_{i}(request, *, retries={version}):\n"
        f'    """Handle request {i}."""\n'
        f"    data = {{'id': {i}, 'name': f'item-{{request}}', 'tags': [1, 2, 3]}}\n"
        f"    for attempt in range(retries):\n"
        f"        if data['id'] % (attempt + 2) == 0:\n"
        f"            return data\n"
        f"    return None\n"
        for i in range(25)
    )
    header = f'"""Module {n}."""\n\nfrom __future__ import annotations\n\nVERSION = {version}\n'
    return header + functions


def json_document(n: int, version: int) -> str:
    items = [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "v": version} for i in range(60)]
    return json.dumps({"name": f"config {n}", "items": items}, indent=2) + "\n"


def toml_document(n: int, version: int) -> str:
    tables = "".join(f'\n[tool.part{i}]\nname = "part {i}"\nlevel = {i}\n' for i in range(30))
    return f'[project]\nname = "pkg{n}"\nversion = "0.{version}.0"\n{tables}'


def markdown_document(n: int, version: int) -> str:
    sections = "".join(
        f"\nSection {i}\n=========\n\nSome text for section {i}, revision {version}.\n"
        for i in range(40)
    )
    return f"Document {n}\n==========\n{sections}"


def changed_files(count: int, version: int) -> dict[str, bytes]:
    """``count`` files: 40% Python, 20% JSON, 10% TOML, the rest Markdown, and one binary."""
    files: dict[str, bytes] = {"assets/logo.bin": bytes(range(256)) * 256 + bytes([version])}
    for n in range(count - 1):
        share = n * 10 // max(count - 1, 1)
        if share < 4:
            files[f"src/pkg{n % 5}/mod_{n}.py"] = python_module(n, version).encode()
        elif share < 6:
            files[f"config/c_{n}.json"] = json_document(n, version).encode()
        elif share < 7:
            files[f"tools/t_{n}.toml"] = toml_document(n, version).encode()
        else:
            files[f"docs/d_{n}.md"] = markdown_document(n, version).encode()
    return files


def write_and_commit(repo: Path, files: dict[str, bytes], message: str) -> None:
    for name, data in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def build(root: Path, count: int, untouched: int) -> tuple[Path, str, str, dict[str, bytes]]:
    repo = root / "bench repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "core.autocrlf", "false")
    stable = {f"lib/stable_{n}.py": python_module(n, 0).encode() for n in range(untouched)}
    write_and_commit(repo, {**stable, **changed_files(count, 1)}, "initial")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "ld/t-1-bench")
    changed = changed_files(count, 2)
    write_and_commit(repo, changed, "worker change")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge ld/t-1-bench", "ld/t-1-bench")
    return repo, base, git(repo, "rev-parse", "HEAD"), changed


def timed(runs: int, work: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return times


def show(label: str, times: list[float]) -> None:
    print(
        f"{label}: median {statistics.median(times) * 1000:.0f} ms "
        f"(fastest {min(times) * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms, "
        f"{len(times)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--files", type=int, default=100, help="files the merge changes")
    parser.add_argument("--untouched", type=int, default=400, help="other files in the repo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo, base, merged, changed = build(Path(tmp), args.files, args.untouched)
        report = check_merge(repo, base, merged)
        size = sum(len(data) for data in changed.values()) // 1024
        print(
            f"{args.files} changed files ({size} KiB) in a repository of "
            f"{args.files + args.untouched}: {report.checked} checked, "
            f"skipped {report.skipped}; {report.summary()}"
        )
        show(
            "check_merge (git + child parser)",
            timed(args.runs, lambda: check_merge(repo, base, merged)),
        )
        in_memory = lambda: [check_file(path, data) for path, data in changed.items()]  # noqa: E731
        show("check_file on each, in-process", timed(args.runs, in_memory))


if __name__ == "__main__":
    main()
