"""Task stores: the TaskStore protocol, the JSON backend, and the factory that picks one."""

from __future__ import annotations

from localdispatch.config import Config
from localdispatch.layout import Layout, layout_for
from localdispatch.store.base import TaskDraft, TaskStore
from localdispatch.store.json_store import JsonStore

__all__ = ["JsonStore", "TaskDraft", "TaskStore", "open_store"]


def open_store(config: Config, layout: Layout | None = None) -> TaskStore:
    """The store the config names (only the JSON file so far), its lock under .dispatch/."""
    layout = layout or layout_for(config)
    return JsonStore(layout.task_queue, lock_path=layout.store_lock)
