"""What may be wrong with a task document before any of it is trusted (pure, no I/O).

``task_queue.json`` is edited by people as well as by localdispatch. A mistake in it (two tasks
with one id, an id with a space, a conflict task that lost its branch, a dependency list that is
a number) must stop every command with one plain message, never hang the dispatcher or be
"repaired" by overwriting the file. :func:`validate_document` takes what ``json.loads`` made of
the file and returns each problem with the task it is in (by id, or by position when the id
itself is the problem) and the fix; the store turns the first into its error.

The same id rules guard the ids a store is asked to write (:func:`id_problem`), so the store
never writes a file it would refuse to read.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from localdispatch.tasks import Task

# Ids appear in branch names, file names and messages; anything longer is a mistake.
MAX_ID_LENGTH = 100
# Deep enough for any field localdispatch or a person writes; deeper nesting is damage (and
# past a few hundred levels neither json nor pydantic can read or write it).
MAX_DEPTH = 50
TASK_FIELDS = frozenset(Task.model_fields)
# What every id localdispatch makes looks like ("t-12", "task-3", "bd-a1b2").
_PLAIN_ID = re.compile(rf"[A-Za-z0-9_.:/@#+-]{{1,{MAX_ID_LENGTH}}}")
# Fields that name other tasks: an id string, or null.
REFERENCE_FIELDS = ("parent", "discovered_from")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the document: where it is, what it is, and how to fix it."""

    where: str
    what: str
    fix: str
    task_id: str | None = None

    def __str__(self) -> str:
        return f"{self.where} {self.what}"


def validate_document(data: Any) -> list[Problem]:
    """Every problem of a parsed task document, in file order; an empty list means usable.

    ``data`` is the file as ``json.loads`` returns it: ``{"version": 1, "tasks": [...]}``, the
    original format without ``version``, or a bare list of tasks (the oldest format).
    """
    if isinstance(data, list):
        tasks: Any = data
        legacy = True
    elif isinstance(data, dict):
        tasks = data.get("tasks", [])
        legacy = data.get("version") != 1
    else:
        return [
            Problem(
                "the file",
                f'holds {_kind(data)}, not an object with a "tasks" list',
                'Write it as {"version": 1, "next_id": 1, "tasks": [...]}.',
            )
        ]
    if not isinstance(tasks, list):
        return [
            Problem(
                "the file",
                f'has "tasks": {_kind(tasks)}, not a list',
                'Make "tasks" a list of task objects ([] for none).',
            )
        ]
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    for position, raw in enumerate(tasks, start=1):
        problems.extend(_task_problems(position, raw, legacy, first_seen))
    return problems


def id_problem(value: Any, *, legacy: bool = False) -> str | None:
    """Why ``value`` cannot be a task id, or None if it can.

    Integers are accepted only from files in the original format, which used them.
    """
    if isinstance(value, str) and _PLAIN_ID.fullmatch(value):
        return None  # the usual case, decided without looking at each character
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"is {_kind(value)}, not a string"
    if isinstance(value, int):
        return None if legacy else f'is the number {value}, not a string (write "{value}")'
    if not value.strip():
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_ID_LENGTH})"
    for char in value:
        if char.isspace():
            return f"{json.dumps(value)} holds whitespace ({_char_name(char)})"
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            return f"{json.dumps(value)} holds a control character ({_char_name(char)})"
    return None


def _task_problems(
    position: int, raw: Any, legacy: bool, first_seen: dict[str, int]
) -> list[Problem]:
    if not isinstance(raw, dict):
        return [
            Problem(
                f"task #{position}",
                f"is {_kind(raw)}, not an object",
                'Each entry of "tasks" is an object such as {"id": "t-1", "title": "..."}; '
                "fix or remove that entry.",
            )
        ]
    if "id" not in raw:
        return [
            Problem(
                f"task #{position}",
                f'({_title_of(raw)}) has no "id"',
                'Give it an id that no other task has, e.g. "t-<a number not yet used>".',
            )
        ]
    wrong = id_problem(raw["id"], legacy=legacy)
    if wrong is not None:
        return [
            Problem(
                f"task #{position}",
                f"({_title_of(raw)}): its id {wrong}",
                'Give it a short id without spaces, e.g. "t-<a number not yet used>".',
            )
        ]
    task_id = str(raw["id"])
    found: list[tuple[str, str]] = []
    if task_id in first_seen:
        found.append(
            (
                f"has the same id as task #{first_seen[task_id]}",
                "Ids must be unique: give one of the two a new id (a number not yet used) "
                "and change any depends_on/parent that meant it, or delete the copy.",
            )
        )
    else:
        first_seen[task_id] = position
    found.extend(_field_problems(raw))
    where = f"task #{position} (id {task_id!r})"
    return [Problem(where, what, fix, task_id) for what, fix in found]


def _field_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, fix) of each field of one task that its type does not catch plainly."""
    found: list[tuple[str, str]] = []
    depends = raw.get("depends_on", [])
    if isinstance(depends, list):
        stray = [dep for dep in depends if not isinstance(dep, str)]
        if stray:
            found.append(
                (
                    f'has "depends_on" holding {_short(stray[0])}, which is not an id',
                    'Write the ids it waits for as strings, e.g. "depends_on": ["t-1"].',
                )
            )
    elif not isinstance(depends, str):  # a string is the original format's "t-1, t-2"
        found.append(
            (
                f'has "depends_on": {_short(depends)}, which is not a list of ids',
                'Write it as a list, e.g. "depends_on": ["t-1", "t-2"] ([] for none).',
            )
        )
    for key in REFERENCE_FIELDS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            found.append(
                (
                    f'has "{key}": {_short(value)}, which is not an id',
                    f'Write it as one id string (e.g. "{key}": "t-1") or null.',
                )
            )
    if raw.get("kind") == "conflict":
        branch = raw.get("branch")
        if not isinstance(branch, str) or not branch.strip():
            found.append(
                (
                    'is a conflict task without a "branch"',
                    'Add the branch whose merge conflicted ("branch": "ld/..."; `git branch '
                    '--list "ld/*"` lists them), or make it a plain task ("kind": "task").',
                )
            )
    # The Task model types its own fields (a list of strings cannot nest), so only fields
    # it does not know can hide deep nesting; checking just those keeps this cheap.
    if not TASK_FIELDS.issuperset(raw) and any(
        _too_deep(raw[key]) for key in raw.keys() - TASK_FIELDS
    ):
        found.append(
            (
                f"holds a field nested more than {MAX_DEPTH} levels deep",
                "Tasks are flat objects: remove the nested lists or objects from that task.",
            )
        )
    return found


def _too_deep(value: Any) -> bool:
    """Nesting deeper than MAX_DEPTH, found without recursion (the value may be very deep)."""
    if not _is_container(value):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if _is_container(child))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if _is_container(child))
    return False


def _is_container(value: Any) -> bool:
    return isinstance(value, (dict, list))


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true or false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _title_of(raw: dict[str, Any]) -> str:
    title = raw.get("title")
    if isinstance(title, str) and title.strip():
        shown = " ".join(title.split())
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"title {shown!r}"
    return "no title"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _char_name(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed')}"
