"""The merge thread speaks to the loop in typed wake-ups: each job comes back as one event
carrying what the loop needs, and a merge queue that raises is news, not a dead thread.
Real git repositories and a real merge queue (see test_merging.py for the queue itself)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdispatch.config import CONFIG_FILENAME, load_config
from localdispatch.dispatch.merger import MergeJob, MergeRunner, RetryJob
from localdispatch.dispatch.wakeups import MergeDone, RetryDone, WakeQueue, Wakeup
from localdispatch.errors import StoreError
from test_merging import Env, make_env

# Far beyond any merge here; only reached when the merge thread never answers.
ANSWER_SECS = 60.0


@pytest.fixture
def env(repo: Path) -> Env:
    return make_env(repo)


@pytest.fixture
def wake() -> WakeQueue:
    return queue.Queue()


@pytest.fixture
def runner(env: Env, wake: WakeQueue) -> Iterator[MergeRunner]:
    config = load_config(env.repo / CONFIG_FILENAME)
    runner = MergeRunner(config, env.layout, wake)
    yield runner
    runner.stop(wait=ANSWER_SECS)


def answer(wake: WakeQueue) -> Wakeup:
    return wake.get(timeout=ANSWER_SECS)


def test_a_merge_job_comes_back_as_merge_done_with_the_queue_outcome(
    env: Env, runner: MergeRunner, wake: WakeQueue
) -> None:
    task = env.task()
    branch = env.branch("ld/t-1-work", {"feature.py": "x = 1\n"})

    runner.submit(MergeJob(task, branch))
    done = answer(wake)

    assert isinstance(done, MergeDone)
    assert (done.task, done.branch, done.error) == (task, branch, None)
    assert done.outcome is not None
    assert done.outcome.status == "merged", done.outcome.message
    assert done.outcome.commit == env.tip()


def test_a_retry_job_carries_the_generation_it_was_asked_in(
    runner: MergeRunner, wake: WakeQueue
) -> None:
    runner.submit(RetryJob(7))

    assert answer(wake) == RetryDone(7, (), None)


def test_a_merge_queue_that_raises_is_reported_per_job_and_the_thread_goes_on(
    env: Env, runner: MergeRunner, wake: WakeQueue
) -> None:
    task = env.task()
    env.layout.pending_merges.parent.mkdir(parents=True, exist_ok=True)
    env.layout.pending_merges.write_text("{not json", encoding="utf-8")

    runner.submit(MergeJob(task, "ld/t-1-work"))
    runner.submit(RetryJob(3))
    merged, retried = answer(wake), answer(wake)

    assert isinstance(merged, MergeDone)
    assert merged.outcome is None
    assert isinstance(merged.error, StoreError)
    assert isinstance(retried, RetryDone)
    assert (retried.generation, retried.outcomes) == (3, ())
    assert isinstance(retried.error, StoreError)

    env.layout.pending_merges.unlink()  # a person fixed it: the same thread works again
    runner.submit(RetryJob(4))
    assert answer(wake) == RetryDone(4, (), None)
