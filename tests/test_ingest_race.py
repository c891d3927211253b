"""No line lost, none twice: real appender processes against real, crashing, killed ingests.

Appenders do what workers and people do: open the file in append mode, write one line, close,
with no lock of ours. Ingests are real ``ingest_suggested_tasks.py`` processes, two at a time;
some exit hard at a chosen step (the ``LOCALDISPATCH_INGEST_CRASH_AT`` hook) and some are
killed at a random moment. At the end every line must be exactly one task.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, run_script
from localdispatch.store import JsonStore

CRASH_ENV = "LOCALDISPATCH_INGEST_CRASH_AT"
STEPS = ("renamed", "rotated", "pending", "added", "committed")
CRASH_EXIT = 86

# Each appender writes at least MIN_LINES lines and goes on until the stop file appears, so
# the test knows ingests ran while every appender was still writing.
APPENDER = """
import random, sys, time
from pathlib import Path

path, name, stop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
min_lines, max_lines, seed = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rng = random.Random(seed)
turns = None
if sys.platform == "win32":
    # CPython's append mode on Windows is seek-then-write (cpython gh-86772), so two appenders
    # can overwrite each other's lines. That race is between appenders, not with ingest, so
    # the test's appenders take turns among themselves; they never touch a lock of ours.
    from filelock import FileLock
    turns = FileLock(str(stop) + ".appenders.lock")
written = 0
while written < max_lines and (written < min_lines or not stop.exists()):
    if turns is not None:
        turns.acquire()
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{name} idea {written:05d} [priority: {written % 5}]\\n")
    finally:
        if turns is not None:
            turns.release()
    written += 1
    time.sleep(rng.uniform(0, 0.008))
print(written)
"""


def start_ingest(repo: Path, crash: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    return subprocess.Popen(
        [sys.executable, str(ROOT / "ingest_suggested_tasks.py"), "--json"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def ingest_ok(repo: Path, *args: str) -> dict[str, object]:
    result = run_script("ingest_suggested_tasks.py", "--json", *args, cwd=repo)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def task_titles(repo: Path) -> Counter[str]:
    return Counter(task.title for task in JsonStore(repo / "task_queue.json").all())


def assert_inbox_drained(repo: Path) -> None:
    live = repo / "suggested_tasks.txt"
    assert not live.exists() or live.stat().st_size == 0
    folder = repo / ".dispatch" / "suggestions"
    journal = json.loads((folder / "journal.json").read_text(encoding="utf-8"))
    assert journal["pending"] is None
    for name, entry in journal["snapshots"].items():
        assert (folder / name).stat().st_size == entry["offset"], name
    preview = ingest_ok(repo, "--dry-run")
    assert preview["added"] == [] and preview["duplicates"] == [] and preview["waiting"] == 0


Run = tuple[subprocess.Popen[str], str, float | None]


class Ingests:
    """Keeps ``width`` ingest processes running; some crash at a step, some get killed."""

    def __init__(self, repo: Path, rng: random.Random, width: int = 2) -> None:
        self.repo, self.rng, self.width = repo, rng, width
        self.running: list[Run] = []
        self.clean_runs = self.crashed = self.killed = 0

    def tick(self, *, refill: bool = True) -> None:
        for run in list(self.running):
            proc, _, kill_at = run
            if kill_at is not None and proc.poll() is None and time.monotonic() >= kill_at:
                proc.kill()
            if proc.poll() is not None:
                self.running.remove(run)
                self._check(run)
        while refill and len(self.running) < self.width:
            self.running.append(self._start())

    def drain(self) -> None:
        while self.running:
            self.tick(refill=False)
            time.sleep(0.02)

    def _start(self) -> Run:
        roll = self.rng.random()
        if roll < 0.3:
            step = self.rng.choice(STEPS)
            return start_ingest(self.repo, step), step, None
        if roll < 0.45:
            return start_ingest(self.repo), "kill", time.monotonic() + self.rng.uniform(0.05, 0.6)
        return start_ingest(self.repo), "clean", None

    def _check(self, run: Run) -> None:
        proc, mode, _ = run
        out, err = proc.communicate()
        assert "Traceback" not in err, err
        if mode == "clean":
            assert proc.returncode == 0, err
            json.loads(out)
            self.clean_runs += 1
        elif mode == "kill":
            self.killed += 1
        else:
            assert proc.returncode in (0, CRASH_EXIT), err
            self.crashed += proc.returncode == CRASH_EXIT


@pytest.mark.timeout(90)
def test_appenders_and_crashing_ingests_lose_no_line_and_duplicate_none(repo: Path) -> None:
    rng = random.Random(20240607)
    live, stop = repo / "suggested_tasks.txt", repo.parent / "stop-appending"
    appenders = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(live), f"a{k}", str(stop), "60", "3000", str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for k in range(4)
    ]
    ingests = Ingests(repo, rng)
    deadline = time.monotonic() + 60
    # Ingest (two at a time, with crashes and kills) while every appender is still writing.
    while ingests.clean_runs < 4 or ingests.crashed + ingests.killed < 3:
        assert time.monotonic() < deadline, "ingests did not finish in time"
        assert all(a.poll() is None for a in appenders), "an appender stopped early"
        ingests.tick()
        time.sleep(0.02)
    stop.touch()
    written = {}
    for k, appender in enumerate(appenders):
        out, err = appender.communicate(timeout=30)
        assert appender.returncode == 0, err
        written[f"a{k}"] = int(out)
    ingests.drain()

    ingest_ok(repo)  # one more, after everything stopped: settles whatever a crash left
    expected = Counter(
        f"{name} idea {i:05d}" for name, count in written.items() for i in range(count)
    )
    got = task_titles(repo)
    missing = expected - got
    doubled = {title: n for title, n in got.items() if n > 1}
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:3]}"
    assert not doubled, f"{len(doubled)} lines became two tasks, e.g. {sorted(doubled)[:3]}"
    assert got == expected
    assert_inbox_drained(repo)
    # priorities came through the tags, in order of the lines
    for task in JsonStore(repo / "task_queue.json").all():
        assert task.priority == int(task.title.rsplit(" ", 1)[1]) % 5


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_then_a_rerun_loses_nothing_and_adds_nothing_twice(
    repo: Path, step: str
) -> None:
    live = repo / "suggested_tasks.txt"
    live.write_text("One\nTwo [priority: 1]\ntwo\n# note\nBad [priority: 8]\n", encoding="utf-8")
    crashed = run_script("ingest_suggested_tasks.py", cwd=repo, env={CRASH_ENV: step})
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    with live.open("a", encoding="utf-8") as handle:
        handle.write("Three\n")

    rerun = ingest_ok(repo)
    assert task_titles(repo) == Counter({"One": 1, "Two": 1, "Three": 1})
    if step == "added":
        assert rerun["recovered"] == 2  # found the crashed run's tasks instead of adding them
    rejected = (repo / ".dispatch" / "suggestions" / "rejected.txt").read_text(encoding="utf-8")
    assert rejected.count("Bad [priority: 8]\n") == 1
    assert ingest_ok(repo)["added"] == []
    assert_inbox_drained(repo)
