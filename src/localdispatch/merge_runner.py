"""The merge queue, driven from a thread of its own so a merge never holds a slot empty.

The dispatcher's loop must stay free to refill slots the moment a worker exits; a merge (and
its test gate) can take much longer. ``MergeRunner`` owns one ``MergeQueue`` (with its own
store handle, whose cache is not shared across threads), runs jobs one at a time in order, and
posts each result to the loop's wake-up queue as ``(kind, payload, result, error, done_at)``.
The merge queue module is imported lazily, so the dispatcher works (without merging) in a
build that lacks it.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from typing import Any

from .config import Config
from .errors import DispatchError
from .events import EventLog
from .layout import Layout
from .store import open_store

log = logging.getLogger(__name__)


def merge_queue_class() -> Any | None:
    """``localdispatch.merging.MergeQueue``, or None while that module is not installed."""
    try:
        return importlib.import_module("localdispatch.merging").MergeQueue
    except (ImportError, AttributeError):
        return None


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
        merge_queue = None
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

    def _make_queue(self) -> Any:
        cls = merge_queue_class()
        if cls is None:
            raise DispatchError("The merge queue (localdispatch.merging) is not installed.")
        store = open_store(self._config, self._layout)
        return cls(self._config, self._layout, store, EventLog(self._layout.events))
