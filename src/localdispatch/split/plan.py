"""The plan of a split, and the checks every plan passes before anything is stored.

Pure logic: given subtasks (from a model's reply or from the goal's sentences), merge
duplicate titles, count them against the limits, confine their paths to the repository and
mark the files that do not exist yet, and break dependency cycles. Each repair is reported as
a warning, so the user sees what was changed. :func:`rule_subtasks` is the ``--no-llm`` split.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from localdispatch.errors import UsageError
from localdispatch.paths import confine_all
from localdispatch.split.llm import InvalidReply
from localdispatch.tasks import find_cycle, title_key

EPIC_TITLE_CHARS = 100

# ---- the checked plan --------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    min_subtasks: int
    max_subtasks: int

    @classmethod
    def of(cls, min_subtasks: int, max_subtasks: int) -> Limits:
        # --max-subtasks below the configured minimum lowers the minimum with it.
        return cls(min(min_subtasks, max_subtasks), max_subtasks)


@dataclass
class Subtask:
    title: str
    description: str = ""
    files: list[str] = field(default_factory=list)
    depends_on: list[int] = field(default_factory=list)  # 0-based indices in the batch
    acceptance_criteria: list[str] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)

    def task_description(self, goal_title: str) -> str:
        """What the worker reads: the description, criteria, new files and the bigger goal."""
        parts = [self.description.strip() or self.title]
        if self.acceptance_criteria:
            parts.append(
                "Acceptance criteria:\n" + "\n".join(f"- {c}" for c in self.acceptance_criteria)
            )
        if self.new_files:
            parts.append("New files (they do not exist yet): " + ", ".join(self.new_files))
        parts.append(f"Part of: {goal_title}")
        return "\n\n".join(parts)


@dataclass
class SplitPlan:
    goal: str
    subtasks: list[Subtask]
    source: Literal["model", "rules"]
    warnings: list[str] = field(default_factory=list)
    model: str | None = None
    attempts: int = 0
    log_files: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "source": self.source,
            "model": self.model,
            "attempts": self.attempts,
            "subtasks": [
                {
                    "number": i,
                    "title": s.title,
                    "description": s.description,
                    "files": s.files,
                    "new_files": s.new_files,
                    "depends_on": [d + 1 for d in s.depends_on],
                    "acceptance_criteria": s.acceptance_criteria,
                }
                for i, s in enumerate(self.subtasks, start=1)
            ],
            "warnings": self.warnings,
            "context": self.context,
            "log_files": self.log_files,
        }


# ---- checking (pure) ---------------------------------------------------------------------


def count_problem(count: int, limits: Limits) -> str | None:
    if count > limits.max_subtasks:
        return (
            f"there are {count} subtasks but at most {limits.max_subtasks} are allowed; "
            "merge closely related ones"
        )
    if count < limits.min_subtasks:
        return (
            f"there are only {count} subtasks but at least {limits.min_subtasks} are needed; "
            "split the work further"
        )
    return None


def merge_duplicates(subtasks: list[Subtask]) -> tuple[list[Subtask], list[str]]:
    """One subtask per title (compared without case and spacing); dependencies follow."""
    keep: dict[str, int] = {}
    mapping: list[int] = []
    merged: list[Subtask] = []
    warnings: list[str] = []
    for sub in subtasks:
        key = title_key(sub.title)
        if key in keep:
            into = merged[keep[key]]
            into.files = list(dict.fromkeys([*into.files, *sub.files]))
            if sub.description and sub.description not in into.description:
                into.description = f"{into.description}\n\n{sub.description}".strip()
            into.acceptance_criteria = list(
                dict.fromkeys([*into.acceptance_criteria, *sub.acceptance_criteria])
            )
            into.depends_on = [*into.depends_on, *sub.depends_on]
            mapping.append(keep[key])
            warnings.append(f"merged the duplicate subtask '{sub.title}'")
            continue
        keep[key] = len(merged)
        mapping.append(len(merged))
        merged.append(
            Subtask(
                sub.title,
                sub.description,
                list(sub.files),
                list(sub.depends_on),
                list(sub.acceptance_criteria),
            )
        )
    for index, sub in enumerate(merged):
        targets = (mapping[d] for d in sub.depends_on)
        sub.depends_on = list(dict.fromkeys(t for t in targets if t != index))
    return merged, warnings


def confine_files(subtasks: list[Subtask], exists: Callable[[str], bool]) -> list[str]:
    """Keep only paths inside the repository; note which do not exist yet."""
    warnings: list[str] = []
    for sub in subtasks:
        confined = confine_all(sub.files)
        for raw, reason in confined.dropped:
            warnings.append(f"'{sub.title}': dropped the path {raw!r} ({reason})")
        sub.files = confined.kept
        sub.new_files = [path for path in confined.kept if not exists(path)]
    bare = [f"'{sub.title}'" for sub in subtasks if not sub.files]
    if bare:
        # The dispatcher keeps tasks that touch the same file apart; one without files
        # can collide with anything, which the user should know before it runs.
        warnings.append(
            f"{len(bare)} subtask(s) name no file and may run beside any other: " + ", ".join(bare)
        )
    return warnings


def break_cycles(subtasks: list[Subtask]) -> list[str]:
    """Remove dependencies until there is no cycle, saying which ones went."""
    warnings: list[str] = []
    while True:
        edges = {str(i): [str(d) for d in s.depends_on] for i, s in enumerate(subtasks)}
        cycle = find_cycle(edges)
        if not cycle:
            return warnings
        nodes = [int(n) for n in cycle]
        pairs = list(itertools.pairwise(nodes))
        # Models list work in the order it should happen, so an earlier subtask waiting for
        # a later one is the edge most likely wrong. Every cycle has at least one.
        waiter, waited = next((p for p in pairs if p[0] < p[1]), pairs[-1])
        subtasks[waiter].depends_on.remove(waited)
        warnings.append(
            f"broke a dependency cycle: '{subtasks[waiter].title}' no longer waits for "
            f"'{subtasks[waited].title}'"
        )


def check_subtasks(
    subtasks: list[Subtask], limits: Limits | None, exists: Callable[[str], bool]
) -> tuple[list[Subtask], list[str]]:
    """Merge, count (InvalidReply when out of ``limits``), confine paths, break cycles."""
    merged, warnings = merge_duplicates(subtasks)
    problem = count_problem(len(merged), limits) if limits else None
    if problem:
        raise InvalidReply(problem)
    warnings += confine_files(merged, exists)
    warnings += break_cycles(merged)
    return merged, warnings


_LIST_HEAD = re.compile(
    r"^(?P<head>.+?\b(?:with|including|for|covering)\b:?)\s+(?P<items>.+)$", re.I
)
_LIST_SPLIT = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+and\s+|\s*;\s*", re.I)
_THEN = re.compile(r"^(?:then|after that|afterwards|finally|next)\b[,:]?\s*", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_PATHLIKE = re.compile(
    r"(?<![\w/])[\w.-]*[\w-]/[\w./-]*\w|(?<![\w/.])[\w-]+\.[A-Za-z][A-Za-z0-9]{0,7}\b"
)


def rule_subtasks(goal: str, limits: Limits, known_files: Sequence[str] = ()) -> list[Subtask]:
    """Split a goal by sentences, lines and bullets; lists expand when that is too few.

    "then"/"finally" at the start of a part makes it wait for the part before it. Paths
    written in a part become its files (a bare name like ``app.py`` is resolved when exactly
    one tracked file has that name).
    """
    parts: list[tuple[str, bool]] = []  # (text, waits for the previous part)
    for line in goal.splitlines():
        for sentence in re.split(r"(?<=[.!?;])\s+", _BULLET.sub("", line)):
            text = sentence.strip().rstrip(".!;").strip()
            if text:
                then = bool(_THEN.match(text))
                parts.append((_capitalize(_THEN.sub("", text)), then))
    if len(parts) < limits.min_subtasks:
        parts = [expanded for part in parts for expanded in _expand_list(part)]
    subtasks: list[Subtask] = []
    for index, (text, then) in enumerate(parts):
        subtasks.append(
            Subtask(
                title=clip(text, EPIC_TITLE_CHARS),
                description=text,
                files=_mentioned_files(text, known_files),
                depends_on=[index - 1] if then and index else [],
            )
        )
    return subtasks


def _expand_list(part: tuple[str, bool]) -> list[tuple[str, bool]]:
    text, then = part
    match = _LIST_HEAD.match(text)
    if match:
        head, items = match.group("head"), _LIST_SPLIT.split(match.group("items"))
    else:
        verb, _, rest = text.partition(" ")
        head, items = verb, _LIST_SPLIT.split(rest)
    items = [item.strip() for item in items if item.strip()]
    if len(items) < 2:
        return [part]
    return [(f"{head} {item}", then and i == 0) for i, item in enumerate(items)]


def _mentioned_files(text: str, known_files: Sequence[str]) -> list[str]:
    by_name: dict[str, list[str]] = {}
    for path in known_files:
        by_name.setdefault(path.rsplit("/", 1)[-1], []).append(path)
    found = []
    for raw in _PATHLIKE.findall(text):
        candidates = by_name.get(raw, []) if "/" not in raw else []
        found.append(candidates[0] if len(candidates) == 1 else raw)
    return found


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def clip(text: str, limit: int) -> str:
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    return line[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def plan_with_rules(
    goal: str, limits: Limits, exists: Callable[[str], bool], known_files: Sequence[str] = ()
) -> SplitPlan:
    """The --no-llm split. Too many parts is an error; too few is only a warning."""
    subtasks, warnings = check_subtasks(rule_subtasks(goal, limits, known_files), None, exists)
    count = len(subtasks)
    if count > limits.max_subtasks:
        raise UsageError(
            f"The goal has {count} parts but at most {limits.max_subtasks} subtasks are allowed.",
            hint="Pass --max-subtasks with a larger number, or shorten the goal.",
        )
    if count < limits.min_subtasks:
        warnings.insert(
            0,
            f"the goal gave {count} subtask(s), fewer than split.min_subtasks "
            f"({limits.min_subtasks}); write one sentence per task to get more",
        )
    return SplitPlan(goal=goal, subtasks=subtasks, source="rules", warnings=warnings)
