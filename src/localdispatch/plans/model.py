"""An imported plan before it is stored: its items, what was left out, and its errors.

Both parsers (:mod:`localdispatch.plans.conductor`, :mod:`localdispatch.plans.task_dispatcher`)
turn a file into an :class:`ImportedPlan`; :mod:`localdispatch.plans.writer` turns that into
tasks. Items name each other by their ``item`` id inside the file ("phase2/task1", "task/T4"),
which is also what ``imported_from`` records, so a second import of the same file finds them.
Pure: nothing here reads a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from localdispatch.errors import DispatchError
from localdispatch.paths import confine_all
from localdispatch.tasks import find_cycle

ItemKind = Literal["task", "epic"]

TITLE_CHARS = 120  # longer titles are cut; the whole text goes into the description

# Priority words of both formats (Conductor metadata, task-dispatcher `priority`) on our 0..4.
PRIORITY_WORDS: dict[str, int] = {
    "critical": 0,
    "urgent": 0,
    "highest": 0,
    "high": 1,
    "medium": 2,
    "normal": 2,
    "low": 3,
    "lowest": 4,
}


class PlanError(DispatchError):
    """A plan file that cannot be imported; the message names the file and line (exit 2)."""

    exit_code = 2

    def __init__(self, source: str, line: int | None, what: str, *, hint: str) -> None:
        self.source = source
        self.line = line
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {what}", hint=hint, path=source)


@dataclass
class PlanItem:
    """One task or epic of the plan, as the file says it."""

    item: str  # its id inside the file: stable across imports of the same file
    title: str
    kind: ItemKind = "task"
    line: int = 0  # where it starts (1-based); 0 for the file as a whole
    description: str = ""
    files: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)  # item ids of this plan
    parent: str | None = None  # item id of its epic; None for the plan's own epic
    priority: int = 2
    estimate_secs: float | None = None
    label: str = ""  # how to name it to a person ("Phase 2, Task 1"); the title if empty

    @property
    def name(self) -> str:
        return self.label or self.title


@dataclass(frozen=True)
class LeftOut:
    """Something in the file that is deliberately not imported, and why."""

    line: int
    title: str
    reason: str


@dataclass
class ImportedPlan:
    """A parsed plan file. ``items`` start with the plan's epic; parents come before children."""

    source: str  # the file as messages and ``imported_from`` name it (repo-relative if inside)
    format: Literal["conductor", "task-dispatcher"]
    items: list[PlanItem] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def epic(self) -> PlanItem:
        return self.items[0]

    @property
    def tasks(self) -> list[PlanItem]:
        return [item for item in self.items if item.kind == "task"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "title": self.epic.title if self.items else "",
            "left_out": [vars(entry) for entry in self.left_out],
            "warnings": list(self.warnings),
        }


# ---- helpers the parsers share -------------------------------------------------------------


def clip_title(text: str) -> tuple[str, str]:
    """``(title, overflow)``: one line of at most TITLE_CHARS; ``overflow`` is the whole text
    when it had to be cut (to go into the description), else empty."""
    flat = " ".join(text.split())
    if len(flat) <= TITLE_CHARS:
        return flat, ""
    cut = flat[: TITLE_CHARS - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return cut + "…", flat


def priority_of(value: Any) -> int | None:
    """0..4 from a number, "P1", or a word such as "CRITICAL"/"high"; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value <= 4:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        match = re.fullmatch(r"p?([0-4])", text)
        if match:
            return int(match.group(1))
        return PRIORITY_WORDS.get(text)
    return None


def confine_files(raws: Iterable[str], where: str, warnings: list[str]) -> list[str]:
    """Paths from the plan, confined exactly like a model's; each dropped one is a warning."""
    confined = confine_all(raws)
    for raw, why in confined.dropped:
        warnings.append(f"{where}: dropped path {raw!r}: it {why}")
    return confined.kept


def check_no_cycle(items: list[PlanItem], source: str, hint: str) -> None:
    """PlanError at the first item of a dependency cycle, naming the items around it."""
    edges: Mapping[str, list[str]] = {item.item: list(item.depends_on) for item in items}
    cycle = find_cycle(edges)
    if not cycle:
        return
    by_id = {item.item: item for item in items}
    first = by_id[cycle[0]]
    names = " -> ".join(by_id[node].name for node in cycle)
    raise PlanError(
        source,
        first.line,
        f"these tasks wait for each other in a circle, so none could ever start: {names}.",
        hint=hint,
    )
