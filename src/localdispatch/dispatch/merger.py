"""The merge queue, driven from a thread of its own so a merge never holds a slot empty.

The dispatcher's loop must stay free to refill slots the moment a worker exits; a merge (and
its test gate) can take much longer. ``MergeRunner`` owns one ``MergeQueue`` (with its own
store handle, whose cache is not shared across threads), runs jobs one at a time in order, and
posts each result to the loop's wake-up queue as ``(kind, payload, result, error, done_at)``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from localdispatch.config import Config
from localdispatch.events import EventLog
from localdispatch.layout import Layout
from localdispatch.merge.queue import MergeQueue
from localdispatch.store import open_store

log = logging.getLogger(__name__)


class MergeRunner:
    """Every merge-queue call, on one thread, so merges never stall the loop."""

    def __init__(self, config: Config, layout: Layout, wake: queue.Queue[tuple[Any, ...]]) -> None:
        self._config, self._layout, self._wake = config, layout, wake
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._outstanding = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="merger", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._outstanding > 0

    def submit(self, kind: str, payload: Any = None) -> None:
        with self._lock:
            self._outstanding += 1
        self._jobs.put((kind, payload))

    def stop(self, wait: float) -> None:
        self._jobs.put(None)
        self._thread.join(wait)

    def _run(self) -> None:
        merge_queue: MergeQueue | None = None
        while (job := self._jobs.get()) is not None:
            kind, payload = job
            try:
                if merge_queue is None:
                    merge_queue = self._make_queue()
                result: Any = (
                    merge_queue.retry_pending() if kind == "retry" else merge_queue.merge(*payload)
                )
                self._wake.put((kind, payload, result, None, time.time()))
            except Exception as exc:  # reported to the loop, which decides
                log.exception("merge queue: %s failed", kind)
                self._wake.put((kind, payload, None, exc, time.time()))
            finally:
                with self._lock:
                    self._outstanding -= 1

    def _make_queue(self) -> MergeQueue:
        store = open_store(self._config, self._layout)
        return MergeQueue(self._config, self._layout, store, EventLog(self._layout.events))
