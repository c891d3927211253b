"""What wakes the dispatcher's loop: one frozen dataclass per kind of happening.

Only the loop's thread changes the loop's state. Every other thread (a worker's waiter, a
killer, the merge thread, a Ctrl+C handler) posts one of these on the loop's wake-up queue and
leaves the deciding to the loop (``Dispatcher._handle`` matches on the type). They are typed so
that ``mypy --strict`` follows a merge outcome from the merge queue to the loop.

Not to be confused with ``localdispatch.events``, the event LOG that people and ``--status``
read: a wake-up lives only in memory, for the milliseconds until the loop takes it.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import NoReturn, TypeAlias

from localdispatch.merge.pending import MergeOutcome
from localdispatch.processes.supervisor import WorkerHandle
from localdispatch.tasks import Task


@dataclass(frozen=True)
class WorkerExited:
    """A worker's process ended by itself (posted by its waiter thread once its tree is gone).

    ``handle`` tells this attempt from a later one in the same slot.
    """

    slot: int
    handle: WorkerHandle


@dataclass(frozen=True)
class WorkerKilled:
    """The loop's kill of a worker (timeout, a person's overrule) finished: its tree is gone."""

    slot: int
    handle: WorkerHandle


@dataclass(frozen=True)
class MergeDone:
    """The merge thread merged (or tried to merge) ``branch``, the work of ``task``.

    Exactly one of ``outcome`` and ``error`` is set: ``error`` when the merge queue raised.
    """

    task: Task
    branch: str
    outcome: MergeOutcome | None
    error: Exception | None
    done_at: float  # time.time() when the merge ended, not when the loop took the news


@dataclass(frozen=True)
class RetryDone:
    """The merge thread moved the pending merges on as far as they could go.

    ``generation`` is the loop's generation when the retry was asked for: if nothing moved,
    the merge queue has nothing to do until something bumps it. ``outcomes`` is empty when
    ``error`` is set.
    """

    generation: int
    outcomes: tuple[MergeOutcome, ...]
    error: Exception | None


@dataclass(frozen=True)
class Interrupted:
    """Ctrl+C (the count of them is kept by the dispatcher, which may be read from anywhere)."""


Wakeup: TypeAlias = WorkerExited | WorkerKilled | MergeDone | RetryDone | Interrupted
WakeQueue: TypeAlias = queue.Queue[Wakeup]


def unhandled(wakeup: NoReturn) -> NoReturn:
    """The last ``case`` of a match on a ``Wakeup``: mypy rejects the call, and so the match,
    as soon as a new kind of wake-up is added that the match does not handle."""
    raise AssertionError(f"the dispatcher's loop does not handle {wakeup!r}")
