"""The default task store: one JSON file (task_queue.json) shared by many processes.

Every read-modify-write runs under a :class:`~localdispatch.statefile.StateLock` and writes the
file with ``write_atomic`` (a temporary file moved over the old one), so a crash at any instant
leaves either the old or the new file, and a reader never sees half a file. A file that cannot
be read or parsed is reported and left exactly as it is: it is never "reset" to an empty queue.

The file is a :class:`~localdispatch.statefile.JsonDocument` in what it shares with the other
state files (decoding with its error messages, the version check, the lock), but it reads and
writes its own way: the parse is cached by the file's exact bytes (10,000 tasks take tens of
milliseconds to validate, one to read), older formats are accepted and upgraded with a
``.pre-upgrade.bak`` copy, every task is validated (``validation.py``), and pydantic writes the
whole document in one call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from localdispatch.errors import DispatchError, StoreError
from localdispatch.statefile import LOCK_TIMEOUT_SECS, JsonDocument, StateLock, write_atomic
from localdispatch.store import base
from localdispatch.store.base import TaskDraft
from localdispatch.store.validation import Problem, validate_document
from localdispatch.tasks import Task, normalize_status

FORMAT_VERSION = 1
ID_PREFIX = "t-"
_TASKS = TypeAdapter(list[Task])


class _Document(BaseModel):
    """The file's shape, so pydantic's fast serializer writes it in one call."""

    version: int
    next_id: int
    tasks: list[Task]


@dataclass
class _Board:
    """The parsed file: what a transaction reads and, if it changed anything, writes."""

    next_id: int
    tasks: list[Task]
    upgraded_from_legacy: bool = False
    changed: bool = field(default=False)

    def new_id(self) -> str:
        task_id = f"{ID_PREFIX}{self.next_id}"
        self.next_id += 1
        return task_id


class JsonStore:
    """TaskStore on a JSON file. ``lock_path`` defaults to the file's name plus ``.lock``."""

    def __init__(
        self, path: Path, lock_path: Path | None = None, lock_timeout: float = LOCK_TIMEOUT_SECS
    ) -> None:
        self.path = Path(path)
        default_lock = self.path.with_name(self.path.name + ".lock")
        self.lock_path = Path(lock_path) if lock_path else default_lock
        self.lock_timeout = lock_timeout
        kind = "the task store"
        self._document = JsonDocument(self.path, version=FORMAT_VERSION, kind=kind)
        self._lock = StateLock(self.lock_path, what=f"{kind} {self.path}")
        # Parsing 10,000 tasks costs tens of milliseconds; reading the bytes costs one. The
        # cache maps the exact bytes last seen to their parse, so it can never be stale.
        self._cache_bytes: bytes | None = None
        self._cache_board: tuple[int, list[Task]] | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    # -- reading ---------------------------------------------------------------------------
    def all(self) -> list[Task]:
        return self._read().tasks

    def get(self, task_id: str) -> Task:
        return base.find(self.all(), task_id, self.location)

    # -- writing ---------------------------------------------------------------------------
    def add(self, draft: TaskDraft) -> Task:
        return self.add_many([draft])[0]

    def add_many(self, drafts: Sequence[TaskDraft]) -> list[Task]:
        with self._transaction() as board:
            ids = [board.new_id() for _ in drafts]
            known = {task.id for task in board.tasks} | set(ids)
            created = [
                base.build_task(task_id, draft, known, self.location)
                for task_id, draft in zip(ids, base.resolve_refs(drafts, ids), strict=True)
            ]
            board.tasks.extend(created)
            board.changed = True
            return created

    def update(self, task_id: str, **changes: Any) -> Task:
        with self._transaction() as board:
            updated = base.apply_update(board.tasks, task_id, changes, self.location)
            if changes.get("status") == "done":
                base.close_completed_epics(board.tasks, self.location)
            board.changed = True
            return updated

    def claim(self, task_id: str, **changes: Any) -> Task | None:
        with self._transaction() as board:
            current = base.find(board.tasks, task_id, self.location)
            if current.status != "open":
                return None
            claimed = base.apply_update(
                board.tasks, task_id, {**changes, "status": "in_progress"}, self.location
            )
            board.changed = True
            return claimed

    def close(self, task_id: str, reason: str | None = None, status: str = "done") -> list[Task]:
        with self._transaction() as board:
            changed = base.apply_close(board.tasks, task_id, reason, status, self.location)
            board.changed = True
            return changed

    def reopen(self, task_id: str) -> Task:
        with self._transaction() as board:
            task = base.apply_reopen(board.tasks, task_id, self.location)
            board.changed = True
            return task

    def add_dependency(self, task_id: str, dep_id: str) -> Task:
        with self._transaction() as board:
            task = base.apply_add_dependency(board.tasks, task_id, dep_id, self.location)
            board.changed = True
            return task

    def remove_dependency(self, task_id: str, dep_id: str) -> Task:
        with self._transaction() as board:
            task = base.apply_remove_dependency(board.tasks, task_id, dep_id, self.location)
            board.changed = True
            return task

    # -- the file --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[_Board]:
        with self._lock.hold(self.lock_timeout):
            board = self._read()
            yield board
            if board.changed:
                self._write(board)

    def _read(self) -> _Board:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _Board(next_id=1, tasks=[])
        except OSError as exc:
            raise StoreError(
                f"Cannot read the task store {self.path}: {exc}.",
                hint="Check its permissions; nothing was changed.",
                path=self.path,
            ) from exc
        if raw == self._cache_bytes and self._cache_board is not None:
            # Tasks are frozen, so sharing them between the cache and callers is safe; the
            # list itself is copied because a transaction replaces its items.
            next_id, tasks = self._cache_board
            return _Board(next_id=next_id, tasks=list(tasks))
        return self._parse(raw)

    def _parse(self, raw: bytes) -> _Board:
        data = self._document.decode(raw)
        if data is None:  # a blank file: an empty queue
            return _Board(next_id=1, tasks=[])
        newer = self._document.newer_version(data) if isinstance(data, dict) else None
        if newer is not None:  # upgrading it "from legacy" would throw away what is new
            raise self._document.too_new(newer)
        problems = validate_document(data)
        if problems:
            raise self._invalid(problems[0], len(problems) - 1)
        if isinstance(data, list):  # a bare list of tasks: accept it as the oldest format
            data = {"tasks": data}
        legacy = data.get("version") != FORMAT_VERSION
        raw_tasks = [_upgrade_task(t) for t in data.get("tasks", [])]
        try:
            tasks = _TASKS.validate_python(raw_tasks)
        except ValidationError as exc:
            raise self._corrupt(*_first_error(exc, raw_tasks)) from exc
        next_id = _next_id(data.get("next_id"), tasks)
        board = _Board(next_id=next_id, tasks=tasks, upgraded_from_legacy=legacy)
        if not legacy:
            self._remember(raw, board)
        return board

    def _corrupt(self, what: str, fix: str = "", task_id: str | None = None) -> DispatchError:
        return self._document.corrupt(what, fix, task_id)

    def _invalid(self, problem: Problem, others: int = 0) -> DispatchError:
        more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
        return self._corrupt(f"{problem}{more}", problem.fix, problem.task_id)

    def _write(self, board: _Board) -> None:
        if board.upgraded_from_legacy and self.path.exists():
            self._keep_legacy_copy()
        document = _Document(version=FORMAT_VERSION, next_id=board.next_id, tasks=board.tasks)
        payload = document.model_dump_json(indent=1).encode("utf-8") + b"\n"
        write_atomic(self.path, payload)
        board.upgraded_from_legacy = False
        self._remember(payload, board)

    def _remember(self, raw: bytes, board: _Board) -> None:
        self._cache_bytes = raw
        self._cache_board = (board.next_id, list(board.tasks))

    def _keep_legacy_copy(self) -> None:
        backup = self.path.with_name(self.path.name + ".pre-upgrade.bak")
        if not backup.exists():
            backup.write_bytes(self.path.read_bytes())


def _upgrade_task(raw: dict[str, Any]) -> dict[str, Any]:
    """A task of the original Path-B format (``pending``, no fields) in today's shape."""
    task = dict(raw)
    if "id" in task:
        task["id"] = str(task["id"])
    if "title" not in task:
        task["title"] = str(task.get("id", "untitled"))
    if isinstance(task.get("status"), str):
        task["status"] = normalize_status(task["status"])
    for key in ("files", "depends_on"):
        if isinstance(task.get(key), str):
            task[key] = [part.strip() for part in task[key].split(",") if part.strip()]
    return task


def _next_id(declared: Any, tasks: list[Task]) -> int:
    """The next free number: never below what the file says nor below any t-N in use."""
    highest = 0
    for task in tasks:
        if task.id.startswith(ID_PREFIX) and task.id[len(ID_PREFIX) :].isdigit():
            highest = max(highest, int(task.id[len(ID_PREFIX) :]))
    floor = declared if isinstance(declared, int) and declared > 0 else 1
    return max(floor, highest + 1)


def _first_error(
    exc: ValidationError, raw_tasks: list[dict[str, Any]]
) -> tuple[str, str, str | None]:
    """(what, fix, task id) of pydantic's first complaint, naming the task by id."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    position = loc.pop(0) if loc else None
    field = ".".join(str(part) for part in loc) or "the task"
    if not isinstance(position, int):
        return f"a task is not valid ({field}: {err['msg']})", "", None
    task_id = str(raw_tasks[position].get("id", ""))
    value = json.dumps(err.get("input"), default=str, ensure_ascii=False)
    if len(value) > 60:
        value = value[:57] + "..."
    what = f"task #{position + 1} (id {task_id!r}) has {field} {value}: {err['msg']}"
    return what, f"Fix {field} of that task (see the task fields in the README).", task_id
