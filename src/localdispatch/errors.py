"""The exception family of localdispatch.

Every error a user can cause or fix derives from :class:`DispatchError`. Each one carries the
subject it is about (a file, a config key, a task id) and builds its message in ``__str__``, so
the command line can print it as one or two plain sentences and choose the exit code from the
class: ``2`` for bad usage or bad configuration, ``1`` for everything else.
"""

from __future__ import annotations

from pathlib import Path


class DispatchError(Exception):
    """Root of every error that localdispatch reports to a user."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        path: Path | str | None = None,
        key: str | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = Path(path) if path is not None else None
        self.key = key
        self.task_id = task_id

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} {self.hint}"
        return self.message


class UsageError(DispatchError):
    """The command line was used wrongly (exit code 2)."""

    exit_code = 2


class ConfigError(DispatchError):
    """dispatch_config.json is missing, unreadable or invalid (exit code 2)."""

    exit_code = 2


class StoreError(DispatchError):
    """The task store cannot be read or written. Its file is never overwritten."""


class TaskNotFound(StoreError):
    """A task id that the store does not hold."""


class InvalidTransition(StoreError):
    """A change the task's current state does not allow (closing a closed task, say)."""


class CycleError(DispatchError):
    """A dependency would make a cycle; ``cycle`` lists the ids around it."""

    def __init__(self, cycle: list[str], *, task_id: str | None = None) -> None:
        self.cycle = cycle
        path = " -> ".join(cycle)
        super().__init__(
            f"Refused: the dependency would make a cycle ({path}).",
            hint="Remove one of these dependencies first.",
            task_id=task_id,
        )


class GitError(DispatchError):
    """A git operation failed; the message carries git's own words."""


class WorkerError(DispatchError):
    """A worker could not be started (program not found, bad argv template)."""


class LLMError(DispatchError):
    """The model server is unreachable, lacks the model, timed out or answered garbage."""


class LockBusy(DispatchError):
    """Another process holds a lock that only one may hold (one dispatcher per repository)."""
