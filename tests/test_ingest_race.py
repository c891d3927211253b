"""No line lost, none twice: real appender processes against real, crashing, killed ingests.

Appenders do what workers and people do: open the file in append mode, write one line, close,
with no lock of ours. Ingests are real ``ingest_suggested_tasks.py`` processes, two at a time;
some exit hard at a chosen step (the ``LOCALDISPATCH_INGEST_CRASH_AT`` hook) and some are
killed at a random moment. At the end every line must be exactly one task.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, run_script
from localdispatch.store import JsonStore
from localdispatch.suggestions import inbox

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
pause = float(sys.argv[7])
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
    if pause:
        time.sleep(rng.uniform(pause / 10, pause))
print(written)
"""


def start_appenders(
    live: Path, stop: Path, count: int, *, min_lines: int, max_lines: int, pause_secs: float
) -> list[subprocess.Popen[str]]:
    limits = (str(min_lines), str(max_lines))
    pause = str(pause_secs)
    return [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(live), f"a{k}", str(stop), *limits, str(k), pause],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for k in range(count)
    ]


def stop_appenders(appenders: list[subprocess.Popen[str]], stop: Path) -> dict[str, int]:
    """Tell the appenders to stop; return how many lines each wrote."""
    stop.touch()
    written = {}
    for k, appender in enumerate(appenders):
        out, err = appender.communicate(timeout=60)
        assert appender.returncode == 0, err
        written[f"a{k}"] = int(out)
    return written


@dataclass
class Run:
    """One ingest process; its output goes to files (a full pipe would block it)."""

    proc: subprocess.Popen[bytes]
    mode: str  # "clean", "kill" or the step it crashes at
    out: Path
    err: Path
    kill_at: float | None = None

    def finished(self) -> bool:
        due = self.kill_at is not None and time.monotonic() >= self.kill_at
        if due and self.proc.poll() is None:
            self.proc.kill()
        return self.proc.poll() is not None

    def output(self) -> tuple[str, str]:
        self.proc.wait()
        return (
            self.out.read_text(encoding="utf-8", errors="replace"),
            self.err.read_text(encoding="utf-8", errors="replace"),
        )


def start_ingest(repo: Path, logs: Path, mode: str, kill_at: float | None = None) -> Run:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if mode in STEPS:
        env[CRASH_ENV] = mode
    logs.mkdir(exist_ok=True)
    number = len(list(logs.glob("*.out")))
    out, err = logs / f"{number:04d}.out", logs / f"{number:04d}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "ingest_suggested_tasks.py"), "--json"],
            cwd=repo,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    return Run(proc, mode, out, err, kill_at)


def ingest_ok(repo: Path, *args: str) -> dict[str, object]:
    result = run_script("ingest_suggested_tasks.py", "--json", *args, cwd=repo)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def task_titles(repo: Path) -> Counter[str]:
    return Counter(task.title for task in JsonStore(repo / "task_queue.json").all())


def close_open_tasks(repo: Path, limit: int | None = None) -> None:
    """Finish tasks as a dispatcher would, so a line read twice cannot hide as a duplicate.

    (A line read twice while its task is still open is reported as a duplicate instead, which
    the race test also counts.)
    """
    locks = repo / ".dispatch" / "locks"  # the product's own store lock, shared with ingest
    store = JsonStore(repo / "task_queue.json", lock_path=locks / "task_queue.lock")
    for task in [task for task in store.all() if task.status == "open"][:limit]:
        store.close(task.id, reason="done by the test")


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


class Ingests:
    """Keeps ``width`` ingest processes running; some crash at a step, some get killed."""

    def __init__(self, repo: Path, logs: Path, rng: random.Random, width: int = 2) -> None:
        self.repo, self.logs, self.rng, self.width = repo, logs, rng, width
        self.running: list[Run] = []
        self.clean_runs = self.crashed = self.killed = 0
        # the steps where a lost journal entry would hurt most come first
        self.steps = itertools.cycle(("added", "renamed", "pending", "rotated", "committed"))
        self.reported_duplicates: list[object] = []

    def tick(self, *, refill: bool = True) -> None:
        for run in [run for run in self.running if run.finished()]:
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
            return start_ingest(self.repo, self.logs, next(self.steps))
        if roll < 0.45:
            kill_at = time.monotonic() + self.rng.uniform(0.05, 0.6)
            return start_ingest(self.repo, self.logs, "kill", kill_at)
        return start_ingest(self.repo, self.logs, "clean")

    def _check(self, run: Run) -> None:
        out, err = run.output()
        assert "Traceback" not in err, err
        if run.mode == "clean":
            assert run.proc.returncode == 0, err
            self.reported_duplicates.extend(json.loads(out)["duplicates"])
            self.clean_runs += 1
        elif run.mode == "kill":
            self.killed += 1
        else:
            assert run.proc.returncode in (0, CRASH_EXIT), err
            self.crashed += run.proc.returncode == CRASH_EXIT


@pytest.mark.timeout(90)
def test_appenders_and_crashing_ingests_lose_no_line_and_duplicate_none(repo: Path) -> None:
    rng = random.Random(20240607)
    live, stop = repo / "suggested_tasks.txt", repo.parent / "stop-appending"
    appenders = start_appenders(live, stop, 4, min_lines=60, max_lines=5000, pause_secs=0.03)
    ingests = Ingests(repo, repo.parent / "ingest logs", rng)
    deadline = time.monotonic() + 60
    # Ingest (two at a time, with crashes and kills) while every appender is still writing.
    while ingests.clean_runs < 4 or ingests.crashed < 3 or ingests.killed < 1:
        assert time.monotonic() < deadline, "ingests did not finish in time"
        assert all(a.poll() is None for a in appenders), "an appender stopped early"
        ingests.tick()
        close_open_tasks(repo, limit=2)
        time.sleep(0.02)
    written = stop_appenders(appenders, stop)
    ingests.drain()
    close_open_tasks(repo)

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
    assert ingests.reported_duplicates == []  # no line was ever read twice
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
    if (repo / "task_queue.json").exists():
        close_open_tasks(repo)  # so only the journal, not the duplicate check, can stop a repeat
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


@pytest.mark.timeout(60)
def test_taking_lines_out_while_appenders_hammer_the_file_loses_none(tmp_path: Path) -> None:
    """The take-out mechanism alone (no store), rotated as fast as it goes while thousands of
    lines a second arrive: an in-place trim (read, then truncate) loses lines here."""
    live, stop, folder = tmp_path / "ideas.txt", tmp_path / "stop", tmp_path / "inbox"
    folder.mkdir()
    appenders = start_appenders(live, stop, 3, min_lines=2000, max_lines=100000, pause_secs=0.0005)
    journal = inbox.Journal.load(folder)
    taken: Counter[str] = Counter()

    def take_all() -> None:
        inbox.rotate(live, journal)
        for snap in journal.ordered():
            lines, snap.offset, snap.line, _ = inbox.take(snap, folder)
            taken.update(line.text.split(" [", 1)[0] for line in lines)

    # Until the file was renamed 150 times with every appender writing all along.
    while journal.seq < 150 or len({title.split()[0] for title in taken}) < len(appenders):
        assert all(a.poll() is None for a in appenders), "an appender stopped early"
        take_all()
    written = stop_appenders(appenders, stop)
    take_all()
    take_all()
    expected = Counter(f"{name} idea {i:05d}" for name, n in written.items() for i in range(n))
    missing, doubled = expected - taken, taken - expected
    assert not missing, f"{sum(missing.values())} lines lost, e.g. {sorted(missing)[:3]}"
    assert not doubled, f"{sum(doubled.values())} lines taken twice"
