"""The run's summary and exit status are tallied from the tasks themselves (pure), and the
model server watch asks again only as often as it should."""

from __future__ import annotations

from typing import Any

from localdispatch.dispatch.model_watch import ModelWatch
from localdispatch.dispatch.summary import (
    EXIT_INTERRUPTED,
    EXIT_NEEDS_PERSON,
    EXIT_OK,
    RunSummary,
    format_summary,
    statuses,
    tally,
)
from localdispatch.tasks import Task


def task(task_id: str, status: str, **extra: Any) -> Task:
    return Task(id=task_id, title=f"title of {task_id}", status=status, **extra)  # type: ignore[arg-type]


def test_every_way_a_task_fails_is_counted_from_the_tasks() -> None:
    before = statuses(
        [
            task("t-1", "open"),
            task("t-2", "open"),
            task("t-3", "in_progress"),
            task("t-4", "failed"),
        ]
    )
    after = [
        task("t-1", "done", merged_commit="abc"),
        task("t-2", "failed", closed_reason="the test command failed\nEnd of the output: 41"),
        task("t-3", "failed", closed_reason="Merging ld/x was given up: conflicts"),
        task("t-4", "failed", closed_reason="an old failure"),
    ]
    summary = tally(RunSummary(started=3, retried=1), before, after, [])
    assert (summary.merged, summary.done, summary.failed) == (1, 0, 2)
    assert [f["task"] for f in summary.failed_tasks] == ["t-2", "t-3", "t-4"]
    assert [f["earlier"] for f in summary.failed_tasks] == [False, False, True]
    assert summary.exit_code == EXIT_NEEDS_PERSON
    text = format_summary(summary)
    assert "1 merged, 0 done, 1 to retry, 2 failed" in text
    assert "Failed (in an earlier run): t-4" in text
    assert "localdispatch tasks reopen t-2" in text
    assert "End of the output" not in text  # one line per task; the rest is in `tasks show`


def test_a_merge_waiting_for_a_person_and_a_task_that_can_never_start_mean_3() -> None:
    tasks = [
        task("t-1", "in_progress"),
        task("t-2", "cancelled"),
        task("t-3", "open", depends_on=["t-2"]),
        task("t-4", "open", depends_on=["t-9"]),
    ]
    pending = [
        {"task": "t-1", "branch": "ld/t-1-x", "reason": "README.md is changed", "person": True,
         "steps": ["commit it", "run again"]},
        {"task": "t-5", "branch": "ld/t-5-y", "reason": "slot busy", "person": False},
    ]
    summary = tally(RunSummary(), statuses(tasks), tasks, pending)
    assert [w["task"] for w in summary.waiting] == ["t-1"]
    assert [(b["task"], b["waits_for"]) for b in summary.blocked] == [
        ("t-3", ["t-2"]),
        ("t-4", ["t-9"]),
    ]
    assert summary.exit_code == EXIT_NEEDS_PERSON
    text = format_summary(summary)
    assert "Waiting for you: t-1 (ld/t-1-x): README.md is changed" in text
    assert "    1. commit it" in text and "Cannot start: t-3" in text


def test_all_done_is_0_and_an_interrupt_is_130() -> None:
    tasks = [task("t-1", "done"), task("e-1", "done", kind="epic"), task("t-2", "cancelled")]
    summary = tally(RunSummary(), {"t-1": "open"}, tasks, [])
    assert summary.exit_code == EXIT_OK and "Every task is done." in format_summary(summary)
    assert summary.as_dict()["exit_code"] == EXIT_OK
    summary.interrupted = True
    assert summary.exit_code == EXIT_INTERRUPTED


def test_a_run_that_stopped_early_says_what_is_left() -> None:
    tasks = [task("t-1", "done"), task("t-2", "open")]
    summary = tally(RunSummary(started=1), {}, tasks, [])
    assert summary.exit_code == EXIT_OK
    assert "1 task(s) still open" in format_summary(summary)


def test_a_dead_model_server_means_3_with_its_reason() -> None:
    summary = tally(RunSummary(), {}, [task("t-1", "open")], [])
    summary.model_server = "no model server answers at http://127.0.0.1:9"
    assert summary.exit_code == EXIT_NEEDS_PERSON
    assert "No work started: no model server answers" in format_summary(summary)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_asks_again_only_after_the_recheck_interval() -> None:
    answers = ["down at :11434", "down at :11434", None]
    asked: list[int] = []

    def probe() -> str | None:
        asked.append(1)
        return answers[len(asked) - 1]

    clock = Clock()
    watch = ModelWatch(probe, enabled=True, recheck_secs=5.0, clock=clock)
    assert watch.check() == "down at :11434"
    assert not watch.may_start() and len(asked) == 1  # too soon to ask again
    clock.now = 5.0
    assert not watch.may_start() and len(asked) == 2
    clock.now = 10.0
    assert watch.may_start() and watch.down is None and len(asked) == 3
    assert watch.may_start() and len(asked) == 3  # up: no more questions


def test_a_disabled_watch_never_asks() -> None:
    watch = ModelWatch(lambda: "never asked", enabled=False)
    assert watch.check() is None and watch.may_start()
