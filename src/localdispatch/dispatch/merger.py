"""The merge queue, driven from a thread of its own so a merge never holds a slot empty.

The dispatcher's loop must stay free to refill slots the moment a worker exits; a merge (and
its test gate) can take much longer. ``MergeRunner`` owns one ``MergeQueue`` (with its own
store handle, whose cache is not shared across threads), runs jobs one at a time in order, and
posts each result to the loop's wake-up queue: a ``MergeJob`` ends as ``MergeDone``, a
``RetryJob`` as ``RetryDone`` (see ``wakeups.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TypeAlias

from localdispatch.config import Config
from localdispatch.dispatch.wakeups import MergeDone, RetryDone, WakeQueue, Wakeup
from localdispatch.events import EventLog
from localdispatch.layout import Layout
from localdispatch.merge.queue import MergeQueue
from localdispatch.store import open_store
from localdispatch.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeJob:
    """Merge ``branch``, the work of ``task``, into the base branch."""

    task: Task
    branch: str


@dataclass(frozen=True)
class RetryJob:
    """Move the pending merges on; ``generation`` is the loop's when it asked (see RetryDone)."""

    generation: int


Job: TypeAlias = MergeJob | RetryJob


class MergeRunner:
    """Every merge-queue call, on one thread, so merges never stall the loop."""

    def __init__(self, config: Config, layout: Layout, wake: WakeQueue) -> None:
        self._config, self._layout, self._wake = config, layout, wake
        self._jobs: queue.Queue[Job | None] = queue.Queue()  # None: stop
        self._outstanding = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="merger", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._outstanding > 0

    def submit(self, job: Job) -> None:
        # Counted before it is queued, so ``busy`` is never False while a job waits.
        with self._lock:
            self._outstanding += 1
        self._jobs.put(job)

    def stop(self, wait: float) -> None:
        self._jobs.put(None)
        self._thread.join(wait)

    def _run(self) -> None:
        merge_queue: MergeQueue | None = None
        while (job := self._jobs.get()) is not None:
            try:
                if merge_queue is None:
                    merge_queue = self._make_queue()
                self._wake.put(self._do(merge_queue, job))
            except Exception as exc:  # reported to the loop, which decides
                log.exception("merge queue: %s failed", _describe(job))
                self._wake.put(_failed(job, exc))
            finally:
                with self._lock:
                    self._outstanding -= 1

    def _make_queue(self) -> MergeQueue:
        store = open_store(self._config, self._layout)
        return MergeQueue(self._config, self._layout, store, EventLog(self._layout.events))

    @staticmethod
    def _do(merge_queue: MergeQueue, job: Job) -> Wakeup:
        if isinstance(job, RetryJob):
            return RetryDone(job.generation, tuple(merge_queue.retry_pending()), None)
        outcome = merge_queue.merge(job.task, job.branch)
        return MergeDone(job.task, job.branch, outcome, None, time.time())


def _failed(job: Job, error: Exception) -> Wakeup:
    if isinstance(job, RetryJob):
        return RetryDone(job.generation, (), error)
    return MergeDone(job.task, job.branch, None, error, time.time())


def _describe(job: Job) -> str:
    if isinstance(job, RetryJob):
        return "retrying the pending merges"
    return f"task {job.task.id}: merging {job.branch}"
