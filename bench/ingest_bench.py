"""Ingest timing: 10,000 suggestion lines into a store of 10,000 tasks (in-process, this machine).

Target: one ingest (take the lines out, parse, dedupe, store the tasks) <= 2 s.
Run: python bench/ingest_bench.py [--tasks N] [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from localdispatch.config import load_config
from localdispatch.layout import layout_for
from localdispatch.store import JsonStore, TaskDraft, open_store
from localdispatch.suggestions import ingest, plan_batch, split_lines

TARGET_SECS = 2.0


def seed_store(path: Path, count: int) -> None:
    drafts = [
        TaskDraft(
            title=f"Existing task {i}: improve module {i % 97}",
            description="Make the change described here. " * 3,
            files=[f"src/module_{i % 97}.py"],
            depends_on=[f"t-{i - 1}"] if i > 1 and i % 4 else [],
            priority=i % 5,
        )
        for i in range(1, count + 1)
    ]
    JsonStore(path).add_many(drafts)


def suggestion_lines(count: int, tasks: int) -> bytes:
    """Lines like workers write: most tagged, some duplicates, comments and blanks."""
    lines = ["# follow-up ideas"]
    for i in range(count):
        if i % 50 == 7:
            lines.append(f"Existing task {i % tasks + 1}: improve module {(i % tasks + 1) % 97}")
        elif i % 40 == 3:
            lines.append("")
        else:
            tags = [f"[files: src/feature_{i % 211}.py, tests/test_{i % 211}.py]"]
            if i % 3 == 0:
                tags.append(f"[after: t-{i % tasks + 1}]")
            if i % 5 == 0:
                tags.append(f"[priority: {i % 5}]")
            if i % 7 == 0:
                tags.append(f"[from: t-{(i * 7) % tasks + 1}]")
            lines.append(
                f"Follow up {i}: handle the edge case in feature {i % 211} " + " ".join(tags)
            )
    return ("\n".join(lines) + "\n").encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "dispatch_config.json").write_text("{}", encoding="utf-8")
        config = load_config(repo / "dispatch_config.json")
        layout = layout_for(config)
        seed_store(layout.task_queue, args.tasks)
        store_bytes = layout.task_queue.read_bytes()
        lines = suggestion_lines(args.lines, args.tasks)

        start = time.perf_counter()
        plan_batch(split_lines(lines, source="s")[0], JsonStore(layout.task_queue).all())
        parse_ms = (time.perf_counter() - start) * 1000

        samples, added = [], 0
        for _ in range(args.repeat):
            layout.task_queue.write_bytes(store_bytes)
            shutil.rmtree(layout.state, ignore_errors=True)
            layout.suggested_tasks.write_bytes(lines)
            store = open_store(config, layout)  # a fresh store: its load is part of the cost
            start = time.perf_counter()
            report = ingest(config, layout, store)
            samples.append(time.perf_counter() - start)
            added = len(report.added)
        median = statistics.median(samples)
        verdict = "ok" if median <= TARGET_SECS else "OVER"
        print(
            f"{args.lines} lines into {args.tasks} tasks: {added} added, median of "
            f"{args.repeat} runs"
        )
        print(
            f"  ingest (take out, parse, dedupe, store) {median:6.2f} s   "
            f"(target <= {TARGET_SECS:.0f} s: {verdict})"
        )
        print(f"  of which parse + dedupe alone           {parse_ms / 1000:6.2f} s")
        print("  runs: " + ", ".join(f"{s:.2f} s" for s in samples))


if __name__ == "__main__":
    main()
