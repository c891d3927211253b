"""Scheduling benchmark: a 24-task DAG on 4 slots with sleep-then-commit workers.

Prints the lower bound (the larger of the critical path and total work / slots), the wall
time, their ratio, and the dispatcher's own overhead per task as medians:

- slot free -> next start: a worker exits while a task is ready; how long until the next
  worker starts in that slot;
- ready -> start: a task became ready (its last dependency merged) while a slot was free;
- worker exit -> merge done: from a worker's exit to its branch landing in the base branch.

Real git, real processes, real merge queue, at the default 0.5 s poll interval (exits are
awaited, not polled). Usage: python bench/scheduling_bench.py [--seed N] [--slots N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from localdispatch.config import load_config  # noqa: E402
from localdispatch.dispatch.loop import Dispatcher  # noqa: E402
from localdispatch.dispatch.scheduling import plan_waves  # noqa: E402
from localdispatch.events import EventLog  # noqa: E402
from localdispatch.layout import layout_for  # noqa: E402
from localdispatch.store import TaskDraft, open_store  # noqa: E402

WORKER = """\
import re, subprocess, sys, time
from pathlib import Path
task_file, task_id, *files = sys.argv[1:]
text = Path(task_file).read_text(encoding="utf-8")
time.sleep(float(re.search(r"@sleep: ([0-9.]+)", text).group(1)))
name = files[0] if files else task_id + ".txt"
Path(name).parent.mkdir(parents=True, exist_ok=True)
Path(name).write_text(task_id + "\\n", encoding="utf-8")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-q", "-m", task_id], check=True)
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_dag(rng: random.Random) -> list[dict[str, Any]]:
    """Three chains (of 4, 3 and 3 tasks), a fan-in, and independent tasks: 24 in all."""
    specs: list[dict[str, Any]] = []

    def add(after: list[int]) -> int:
        specs.append({"secs": round(rng.uniform(1.0, 3.0), 2), "after": after})
        return len(specs) - 1

    for length in (4, 3, 3):
        previous: list[int] = []
        for _ in range(length):
            previous = [add(previous)]
    roots = [add([]) for _ in range(3)]
    add(roots)  # waits for three independent tasks
    while len(specs) < 24:
        add([])
    return specs


def critical_path(specs: list[dict[str, Any]]) -> float:
    finish: list[float] = []
    for spec in specs:  # specs only depend on earlier ones
        finish.append(spec["secs"] + max((finish[d] for d in spec["after"]), default=0.0))
    return max(finish)


def setup(folder: Path, specs: list[dict[str, Any]], slots: int) -> Path:
    repo = folder / "bench repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# bench\n", encoding="utf-8")
    worker = folder / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    config = {
        "num_workers": slots,
        "worker_backend": "command",
        "worker_command": [sys.executable, str(worker), "{task_file}", "{task_id}", "{files}"],
        "worker_timeout_secs": 60,
    }
    (repo / "dispatch_config.json").write_text(json.dumps(config), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    store = open_store(load_config(repo / "dispatch_config.json"))
    drafts = [
        TaskDraft(
            title=f"bench task {n}",
            description=f"@sleep: {spec['secs']}",
            files=[f"out/{n}.txt"],
            depends_on=[f"r{d}" for d in spec["after"]],
            ref=f"r{n}",
        )
        for n, spec in enumerate(specs)
    ]
    store.add_many(drafts)
    return repo


def latencies(events: list[dict[str, Any]]) -> dict[str, list[float]]:
    starts = [e for e in events if e["event"] == "start"]
    finishes = {e["task"]: e for e in events if e["event"] == "finish"}
    merged = {
        e["task"]: e["done_at"]
        for e in events
        if e["event"] == "merge_outcome" and e["status"] == "merged"
    }
    deps: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "bench_deps":
            deps = e["deps"]
    refill, unlock, merge = [], [], []
    for task, finish in finishes.items():
        if task in merged:
            merge.append(merged[task] - finish["exited_at"])
    for start in starts:
        ready_at = max((merged.get(d, 0.0) for d in deps.get(start["task"], [])), default=0.0)
        previous = [
            f["exited_at"]
            for f in finishes.values()
            if f["slot"] == start["slot"] and f["exited_at"] <= start["started_at"]
        ]
        slot_free = max(previous, default=0.0)
        if slot_free and ready_at <= slot_free:
            refill.append(start["started_at"] - slot_free)
        elif ready_at and ready_at > slot_free:
            unlock.append(start["started_at"] - ready_at)
    return {"refill": refill, "unlock": unlock, "merge": merge}


def main() -> int:
    # The workers commit; a machine without a git identity must not make them all fail.
    for key, value in (("NAME", "localdispatch bench"), ("EMAIL", "bench@localdispatch.invalid")):
        os.environ.setdefault(f"GIT_AUTHOR_{key}", value)
        os.environ.setdefault(f"GIT_COMMITTER_{key}", value)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--events", type=Path, help="copy the event log here for analysis")
    args = parser.parse_args()
    specs = make_dag(random.Random(args.seed))
    total = sum(s["secs"] for s in specs)
    bound = max(critical_path(specs), total / args.slots)
    with tempfile.TemporaryDirectory(prefix="ld-bench-") as folder:
        repo = setup(Path(folder), specs, args.slots)
        config = load_config(repo / "dispatch_config.json")
        layout = layout_for(config)
        store = open_store(config, layout)
        deps = {t.id: list(t.depends_on) for t in store.all()}
        secs = {t.id: float(t.description.split(":")[1]) for t in store.all()}
        # The same choices with zero overhead: what the policy alone allows.
        policy = plan_waves(store.all(), args.slots, lambda t: secs[t.id], weight=lambda _t: 1.0)
        began = time.perf_counter()
        summary = Dispatcher(config, layout, until_idle=True).run()
        wall = time.perf_counter() - began
        events = EventLog(layout.events).read()
        if args.events:
            args.events.write_text(layout.events.read_text(encoding="utf-8"), encoding="utf-8")
        events.append({"event": "bench_deps", "deps": deps})
        measured = latencies(events)
        done = sum(1 for t in store.all() if t.status == "done")
        problems = [f"{t.id}: {t.closed_reason}" for t in store.all() if t.status != "done"]
        logs = sorted(layout.logs.glob("*.log"))
        first_log = logs[0].read_text(encoding="utf-8", errors="replace")[-600:] if logs else ""
    if problems:
        print("not done:", *problems[:3], sep="\n  ")
        print("first worker log ends with:\n" + first_log)

    def ms(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"{statistics.median(values) * 1000:.0f} ms (n={len(values)})"

    print(f"tasks: {len(specs)} ({done} done, {summary.merged} merged), slots: {args.slots}")
    print(f"total work: {total:.2f} s, critical path: {critical_path(specs):.2f} s")
    print(f"lower bound: {bound:.2f} s")
    print(f"wall time:   {wall:.2f} s")
    print(f"ratio (bound / wall): {bound / wall:.3f}  (target >= 0.92)")
    print(
        f"same choices with zero overhead (simulated): {policy.parallel_secs:.2f} s, ratio "
        f"{bound / policy.parallel_secs:.3f}; dispatcher efficiency "
        f"{policy.parallel_secs / wall:.3f}"
    )
    worker_extra = [e["secs"] - secs[e["task"]] for e in events if e["event"] == "finish"]
    print(f"median worker time beyond its sleep (start-up, git commit): {ms(worker_extra)}")
    print(f"median slot free -> next start:   {ms(measured['refill'])}  (target <= 50 ms)")
    print(f"median dependency merged -> start: {ms(measured['unlock'])}")
    print(f"median worker exit -> merge done:  {ms(measured['merge'])}  (target <= 150 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
