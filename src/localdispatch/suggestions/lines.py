"""Lines of suggested_tasks.txt, pure: splitting bytes into lines, tags, titles, duplicates.

Nothing here touches a file: given bytes and the store's tasks, these functions say which
lines become which tasks, which are duplicates, and which are invalid and why.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localdispatch.paths import confine_all
from localdispatch.store import TaskDraft
from localdispatch.tasks import ACTIVE, Task, title_key

MAX_TITLE = 200
# The field every task created by one ingest carries, so a re-run after a crash can tell
# whether that batch was stored.
MARK_FIELD = "ingest_batch"

_TAG = re.compile(r"\[\s*(files|after|priority|from)\s*:([^\[\]]*)\]", re.IGNORECASE)
FROM_TAG = re.compile(rb"\[\s*from\s*:", re.IGNORECASE)
_CONTROL = re.compile(r"[\x01-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class RawLine:
    """One line as read: ``data`` is its bytes (no newline), ``text`` the decoded, cleaned text."""

    source: str
    number: int
    data: bytes
    text: str
    bad_utf8: bool = False

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


@dataclass(frozen=True)
class LineIssue:
    """Why a line was not added (or a note about one that was)."""

    source: str
    number: int
    text: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.source, "line": self.number, "text": self.text, "reason": self.reason}


@dataclass(frozen=True)
class Suggestion:
    """A valid line, ready to become a task."""

    line: RawLine
    title: str
    description: str = ""
    files: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    priority: int | None = None
    discovered_from: str | None = None
    notes: tuple[str, ...] = ()

    def draft(self, batch_id: str | None = None) -> TaskDraft:
        return TaskDraft(
            title=self.title,
            description=self.description,
            priority=2 if self.priority is None else self.priority,
            files=list(self.files),
            depends_on=list(self.after),
            discovered_from=self.discovered_from,
            extra={MARK_FIELD: batch_id} if batch_id else {},
        )


@dataclass
class Batch:
    """What a set of lines amounts to: tasks to add, duplicates, invalid lines, notes."""

    accepted: list[Suggestion] = field(default_factory=list)
    duplicates: list[LineIssue] = field(default_factory=list)
    invalid: list[LineIssue] = field(default_factory=list)
    notes: list[LineIssue] = field(default_factory=list)
    skipped: int = 0


def split_lines(
    data: bytes, *, source: str, first_line: int = 1, final: bool = True
) -> tuple[list[RawLine], int, int]:
    """Split bytes at ``\\n`` into lines; return them, the bytes used and the lines used.

    Without ``final`` a last line lacking its newline is left unread (its writer may not be
    done). Invalid UTF-8 is decoded with replacement and flagged; a BOM, a CR before the
    newline and NUL bytes are dropped; other control characters become spaces.
    """
    end = len(data) if final else data.rfind(b"\n") + 1
    if end == 0:
        return [], 0, 0
    pieces = data[:end].split(b"\n")
    if data[end - 1 : end] == b"\n":
        pieces.pop()  # the empty string after the last newline
    lines = []
    for offset, piece in enumerate(pieces):
        chunk = piece[:-1] if piece.endswith(b"\r") else piece
        chunk = chunk.replace(b"\x00", b"")
        try:
            text, bad = chunk.decode("utf-8"), False
        except UnicodeDecodeError:
            text, bad = chunk.decode("utf-8", errors="replace"), True
        text = _CONTROL.sub(" ", text.lstrip("\ufeff"))
        lines.append(RawLine(source, first_line + offset, chunk, text, bad))
    return lines, end, len(pieces)


def cut_title(text: str, limit: int = MAX_TITLE) -> str:
    """``text`` if short enough, else cut at a word boundary with an ellipsis (<= limit)."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    if space > limit // 2:
        head = head[:space]
    return head.rstrip() + "…"


def id_index(ids: Iterable[str]) -> dict[str, str]:
    """Lower-cased id -> id, so ``[after: T-3]`` finds ``t-3``."""
    return {task_id.lower(): task_id for task_id in ids}


def parse_line(
    line: RawLine, known_ids: Mapping[str, str] | Collection[str]
) -> Suggestion | LineIssue | None:
    """A Suggestion, a LineIssue saying why the line is invalid, or None (blank or comment).

    ``known_ids`` are the ids tags may name; pass ``id_index(ids)`` when parsing many lines.
    """
    text = line.text.strip()
    if not text or text.startswith("#"):
        return None
    ids = known_ids if isinstance(known_ids, Mapping) else id_index(known_ids)
    files: list[str] = []
    after: list[str] = []
    priority: set[int] = set()
    origin: set[str] = set()
    problems: list[str] = []
    for match in _TAG.finditer(text):
        name, value = match.group(1).lower(), match.group(2).strip()
        items = [item.strip() for item in re.split(r"[,;]", value) if item.strip()]
        if name == "files":
            files.extend(items)
        elif name == "priority":
            number = value.lower().removeprefix("p")
            if number.isdigit() and 0 <= int(number) <= 4:
                priority.add(int(number))
            else:
                problems.append(f"[priority: {value}] is not 0 (highest) to 4")
        else:
            found = [ids.get(item.lower()) for item in items]
            missing = [item for item, hit in zip(items, found, strict=True) if hit is None]
            if missing:
                problems.append(f"[{name}: {value}] names no existing task ({', '.join(missing)})")
            elif not items:
                problems.append(f"[{name}: ] names no task")
            resolved = [hit for hit in found if hit]
            if name == "after":
                after.extend(resolved)
            else:
                origin.update(resolved)
    if len(priority) > 1:
        problems.append("two different [priority: ] tags")
    if len(origin) > 1:
        problems.append("[from: ] names more than one task")
    body = " ".join(_TAG.sub(" ", text).split())
    if not body:
        problems.append("it has tags but no title")
    if problems:
        return LineIssue(line.source, line.number, text, "; ".join(problems))
    confined = confine_all(files)
    notes = [f"dropped path {raw!r}: it {why}" for raw, why in confined.dropped]
    if line.bad_utf8:
        notes.append("not valid UTF-8; the undecodable bytes were replaced with U+FFFD")
    title = cut_title(body)
    return Suggestion(
        line=line,
        title=title,
        description=body if title != body else "",
        files=tuple(confined.kept),
        after=tuple(dict.fromkeys(after)),
        priority=priority.pop() if priority else None,
        discovered_from=origin.pop() if origin else None,
        notes=tuple(notes),
    )


def plan_batch(lines: Iterable[RawLine], tasks: Sequence[Task]) -> Batch:
    """Parse ``lines`` against the store's ``tasks`` and drop the duplicates."""
    known = id_index(task.id for task in tasks)
    taken = {title_key(t.title): t for t in tasks if t.status in ACTIVE}
    earlier: dict[str, int] = {}
    batch = Batch()
    for line in lines:
        result = parse_line(line, known)
        if result is None:
            batch.skipped += 1
        elif isinstance(result, LineIssue):
            batch.invalid.append(result)
        else:
            key = title_key(result.title)
            twin = taken.get(key)
            if twin is not None:
                reason = f"same as {twin.status.replace('_', '-')} task {twin.id}"
            elif key in earlier:
                reason = f"same as line {earlier[key]}"
            else:
                earlier[key] = line.number
                batch.accepted.append(result)
                batch.notes.extend(
                    LineIssue(line.source, line.number, line.text.strip(), note)
                    for note in result.notes
                )
                continue
            batch.duplicates.append(LineIssue(line.source, line.number, result.title, reason))
    return batch
