"""A Conductor track as its plan.md lays it out, and how its tasks wait for each other.

:mod:`localdispatch.plans.conductor` reads the text into a :class:`Track`; this module names
its phases and tasks (``phase2``, ``phase2/task1``) and turns the plan's order and its
``depends`` annotations into dependencies:

- a task's ``<!-- depends: task1, phase2, phase1/task3 -->`` names tasks of its phase, whole
  phases, or a task of another phase;
- in a sequential phase (the default) each task also waits for the one before it;
- a phase waits for the phases its own ``<!-- depends: ... -->`` names (``<!-- depends: -->``:
  none) or, without one, for the phase before it; its first tasks carry that wait;
- waiting for a phase is waiting for its last tasks (those no other task of it waits for), so
  the dispatcher's critical path sees the real chain; a phase with nothing left to import
  passes its own waits on.

Waiting for a task that is not imported (done, skipped, a manual step) is waiting for nothing.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from localdispatch.plans.model import PlanError, PlanItem
from localdispatch.tasks import find_cycle

REF_HINT = (
    "Under a task, write `<!-- depends: task1, task2 -->` (tasks of its phase), `phase2` (a "
    "whole phase) or `phase1/task3` (a task of another phase); before a phase's first task, "
    "`<!-- depends: phase1 -->` (or `<!-- depends: -->` for none)."
)


@dataclass
class Ref:
    """One word of an annotation (a path, ``task2``, ``phase1``) and the line it is on."""

    token: str
    line: int


@dataclass
class TrackTask:
    """A ``- [ ] Task N: Title`` line, the lines under it and its annotations."""

    number: str | None  # "2", "2.1"; None for "Task: Title"
    mark: str  # the checkbox: " ", "x", "~", "!", "-"
    title: str
    line: int
    position: int  # 1-based among the phase's tasks
    body: list[str] = field(default_factory=list)
    files: list[Ref] = field(default_factory=list)  # each path with its annotation's line
    depends: list[Ref] | None = None
    ident: str = ""


@dataclass
class Phase:
    """A ``## Phase N: Name`` heading, its annotations, notes and tasks."""

    number: str | None
    name: str
    line: int
    execution: str = "sequential"
    depends: list[Ref] | None = None
    notes: list[str] = field(default_factory=list)
    tasks: list[TrackTask] = field(default_factory=list)
    ident: str = ""

    @property
    def heading(self) -> str:
        return f"{self.short}: {self.name}" if self.name else self.short

    @property
    def short(self) -> str:
        return f"Phase {self.number}" if self.number else f"Phase {self.name!r}"


@dataclass
class Track:
    """A whole plan.md: its first ``#`` heading and its phases."""

    heading: str | None = None
    phases: list[Phase] = field(default_factory=list)
    first_stray_checkbox: int | None = None  # the line of a checkbox outside every phase


def name_items(phases: list[Phase], source: str) -> None:
    """Give phases and tasks their ids (``phase2``, ``phase2/task1``); duplicates are errors."""
    seen_phases: dict[str, int] = {}
    for position, phase in enumerate(phases, start=1):
        phase.ident = f"phase{phase.number or position}"
        if phase.ident in seen_phases:
            raise PlanError(
                source,
                phase.line,
                f"{phase.heading!r} has the number of the phase at line "
                f"{seen_phases[phase.ident]}.",
                hint="Number the phases 1, 2, 3, ... so that `depends: phaseN` names one.",
            )
        seen_phases[phase.ident] = phase.line
        numbered: dict[str, int] = {}
        for task in phase.tasks:
            if task.number is None:
                continue
            if task.number in numbered:
                raise PlanError(
                    source,
                    task.line,
                    f"{phase.short} has two tasks numbered {task.number} (lines "
                    f"{numbered[task.number]} and {task.line}).",
                    hint="Number the tasks of a phase 1, 2, 3, ... so that `depends: taskN` "
                    "names one.",
                )
            numbered[task.number] = task.line
        for task in phase.tasks:
            if task.number is not None:
                task.ident = f"task{task.number}"
            elif str(task.position) not in numbered:
                task.ident = f"task{task.position}"
            else:
                task.ident = f"item{task.position}"


def dependencies(
    phases: list[Phase], imported: Mapping[int, PlanItem], source: str
) -> dict[str, list[str]]:
    """item id -> the item ids it waits for (``imported`` maps each imported task, by id(),
    to its item). Waiting for a whole phase becomes waiting for its last tasks."""
    phase_deps = {
        phase.ident: _phase_dependencies(phase, index, phases, source)
        for index, phase in enumerate(phases)
    }
    _check_phase_cycle(phases, phase_deps, source)
    own: dict[str, list[str]] = {}  # item -> tasks it waits for, as written (or chained)
    whole: dict[str, list[str]] = {}  # item -> phases it waits for as a whole
    for phase in phases:
        _task_dependencies(phase, phases, imported, source, own, whole)
    exits = _phase_exits(phases, phase_deps, own, imported)
    result: dict[str, list[str]] = {}
    for phase in phases:
        members = [imported[id(task)].item for task in phase.tasks if id(task) in imported]
        for item_id in members:
            deps = list(own[item_id])
            if not any(dep in members for dep in deps):  # the phase's first tasks
                for before in phase_deps[phase.ident]:
                    deps.extend(exits[before])
            for wanted in whole[item_id]:
                deps.extend(exits[wanted])
            result[item_id] = list(dict.fromkeys(deps))
    return result


def _task_dependencies(
    phase: Phase,
    phases: list[Phase],
    imported: Mapping[int, PlanItem],
    source: str,
    own: dict[str, list[str]],
    whole: dict[str, list[str]],
) -> None:
    """Fill ``own`` (tasks) and ``whole`` (phases) for the imported tasks of one phase."""
    kept = {item.item for item in imported.values()}
    previous: str | None = None
    for task in phase.tasks:
        item = imported.get(id(task))
        if item is None:
            continue
        deps = [previous] if phase.execution == "sequential" and previous else []
        whole[item.item] = []
        for ref in task.depends or []:
            kind, target = _resolve(ref, item.label, phase, phases, source)
            if kind == "task":
                deps.append(target)
            elif target == phase.ident:
                raise PlanError(
                    source,
                    ref.line,
                    f"{item.label} waits for its own phase, so it could never start.",
                    hint=REF_HINT,
                )
            else:
                whole[item.item].append(target)
        # Waiting for a task that is done (or left out) is waiting for nothing.
        own[item.item] = [dep for dep in dict.fromkeys(deps) if dep in kept]
        previous = item.item


def _phase_dependencies(phase: Phase, index: int, phases: list[Phase], source: str) -> list[str]:
    if phase.depends is None:
        return [phases[index - 1].ident] if index > 0 else []
    result = []
    for ref in phase.depends:
        found = re.fullmatch(r"phase(\d+(?:\.\d+)*)", ref.token, re.IGNORECASE)
        target = next((p for p in phases if found and p.ident == f"phase{found.group(1)}"), None)
        if target is None:
            known = ", ".join(p.ident for p in phases)
            raise PlanError(
                source,
                ref.line,
                f"{phase.short} depends on {ref.token!r}, which is not a phase of this plan "
                f"(it has {known}).",
                hint=REF_HINT,
            )
        if target is phase:
            raise PlanError(source, ref.line, f"{phase.short} depends on itself.", hint=REF_HINT)
        result.append(target.ident)
    return list(dict.fromkeys(result))


def _check_phase_cycle(
    phases: list[Phase], phase_deps: Mapping[str, list[str]], source: str
) -> None:
    cycle = find_cycle(phase_deps)
    if cycle:
        by_id = {phase.ident: phase for phase in phases}
        names = " -> ".join(by_id[ident].heading for ident in cycle)
        raise PlanError(
            source,
            by_id[cycle[0]].line,
            f"these phases wait for each other in a circle: {names}.",
            hint="Remove one of their `<!-- depends: ... -->` annotations.",
        )


def _phase_exits(
    phases: list[Phase],
    phase_deps: Mapping[str, list[str]],
    own: Mapping[str, list[str]],
    imported: Mapping[int, PlanItem],
) -> dict[str, list[str]]:
    """Per phase, what waiting for the whole phase means: its imported tasks that no other
    task of the phase waits for; for a phase with none left (all done), what it waited for."""
    exits: dict[str, list[str]] = {}
    for phase in phases:  # a phase's own dependencies can come later in the file
        _exit_of(phase.ident, phases, phase_deps, own, imported, exits)
    return exits


def _exit_of(
    ident: str,
    phases: list[Phase],
    phase_deps: Mapping[str, list[str]],
    own: Mapping[str, list[str]],
    imported: Mapping[int, PlanItem],
    exits: dict[str, list[str]],
) -> list[str]:
    if ident in exits:
        return exits[ident]
    exits[ident] = []  # phase cycles were refused before; this only guards the recursion
    phase = next(p for p in phases if p.ident == ident)
    members = [imported[id(task)].item for task in phase.tasks if id(task) in imported]
    if members:
        waited = {dep for member in members for dep in own.get(member, [])}
        result = [member for member in members if member not in waited]
    else:
        result = []
        for before in phase_deps[ident]:
            result.extend(_exit_of(before, phases, phase_deps, own, imported, exits))
    exits[ident] = list(dict.fromkeys(result))
    return exits[ident]


def _resolve(ref: Ref, who: str, phase: Phase, phases: list[Phase], source: str) -> tuple[str, str]:
    """``("task", item id)`` or ``("phase", phase id)`` for one ``depends`` token of ``who``."""
    token = ref.token.lower().replace("_", "").replace("-", "")
    found = re.fullmatch(r"phase(\d+(?:\.\d+)*)", token)
    if found and any(p.ident == token for p in phases):
        return "phase", token
    pair = re.fullmatch(r"phase(\d+(?:\.\d+)*)(?:[/:.]|/?task)(?:task)?(\d+(?:\.\d+)*)", token)
    if pair:
        target = next((p for p in phases if p.ident == f"phase{pair.group(1)}"), None)
        task = _task_in(target, pair.group(2)) if target else None
        if target and task:
            return "task", f"{target.ident}/{task.ident}"
        raise _unknown(ref, who, source, f"{ref.token!r}, which names no task of this plan")
    if found:
        raise _unknown(ref, who, source, f"{ref.token!r}, which is not a phase of this plan")
    found = re.fullmatch(r"(?:task)?(\d+(?:\.\d+)*)", token)
    if not found:
        raise _unknown(ref, who, source, f"{ref.token!r}, which is not a task or a phase")
    number = found.group(1)
    task = _task_in(phase, number)
    if task is not None:
        return "task", f"{phase.ident}/{task.ident}"
    # "task2.1" in a plan that numbers tasks across phases: accept it when only one phase has it.
    elsewhere = [(p, t) for p in phases if p is not phase for t in [_task_in(p, number)] if t]
    if len(elsewhere) == 1:
        other, task = elsewhere[0]
        return "task", f"{other.ident}/{task.ident}"
    numbers = ", ".join(t.ident for t in phase.tasks)
    raise _unknown(
        ref, who, source, f"{ref.token!r}, which is not a task of {phase.short} (it has {numbers})"
    )


def _task_in(phase: Phase | None, number: str) -> TrackTask | None:
    if phase is None:
        return None
    return next((t for t in phase.tasks if t.ident == f"task{number}"), None)


def _unknown(ref: Ref, who: str, source: str, what: str) -> PlanError:
    return PlanError(source, ref.line, f"{who} depends on {what}.", hint=REF_HINT)
