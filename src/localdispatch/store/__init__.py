"""Task stores: the TaskStore protocol, the JSON backend, and the factory that picks one."""

from __future__ import annotations

from localdispatch.config import Config
from localdispatch.errors import ConfigError
from localdispatch.layout import Layout, layout_for
from localdispatch.store.base import TaskDraft, TaskStore
from localdispatch.store.json_store import JsonStore

__all__ = ["JsonStore", "TaskDraft", "TaskStore", "open_store"]


def open_store(config: Config, layout: Layout | None = None) -> TaskStore:
    """The store the config names, with its lock under .dispatch/."""
    layout = layout or layout_for(config)
    if config.store == "json":
        return JsonStore(layout.task_queue, lock_path=layout.store_lock)
    raise ConfigError(
        'store "beads" is not available in this version.',
        hint='Set "store": "json" in dispatch_config.json (the default).',
        key="store",
        path=config.source,
    )
