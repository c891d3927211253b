"""Task store timings with 10,000 tasks in task_queue.json (in-process, this machine).

Targets: ready <= 50 ms, add <= 100 ms, close <= 100 ms, load <= 150 ms.
Run: python bench/store_bench.py [--tasks N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from localdispatch.dispatch.scheduling import rank_ready
from localdispatch.store import JsonStore, TaskDraft


def seed(path: Path, count: int) -> None:
    drafts = []
    for i in range(1, count + 1):
        deps = [f"t-{i - 1}"] if i > 1 and i % 4 else []
        drafts.append(
            TaskDraft(
                title=f"Task {i}: improve module {i % 97}",
                description="Make the change described here. " * 3,
                files=[f"src/module_{i % 97}.py"],
                depends_on=deps,
                priority=i % 5,
            )
        )
    JsonStore(path).add_many(drafts)


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task_queue.json"
        seed(path, args.tasks)
        size_mb = path.stat().st_size / 1e6
        store = JsonStore(path)
        ids = iter(range(2, args.tasks, 4))
        figures = {
            "load (fresh process view)": timed(lambda: JsonStore(path).all(), args.repeat),
            "ready (load + rank)": timed(lambda: rank_ready(store.all()), args.repeat),
            "add one task": timed(lambda: store.add(TaskDraft(title="one more")), args.repeat),
            "close one task": timed(lambda: store.close(f"t-{next(ids)}"), args.repeat),
        }
        targets = {"load": 150, "ready": 50, "add": 100, "close": 100}
        print(f"{args.tasks} tasks, task_queue.json {size_mb:.1f} MB, median of {args.repeat}")
        for name, ms in figures.items():
            target = targets[name.split()[0]]
            verdict = "ok" if ms <= target else "OVER"
            print(f"  {name:<28} {ms:8.1f} ms   (target <= {target} ms: {verdict})")


if __name__ == "__main__":
    main()
