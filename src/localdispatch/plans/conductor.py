"""Conductor track plans (``conductor/tracks/<id>/plan.md``) read into an :class:`ImportedPlan`.

The format, as Conductor writes it::

    # Implementation Plan: Authentication

    ## Phase 1: Core Setup
    <!-- execution: parallel -->
    <!-- depends: -->

    - [ ] Task 1: Create auth module
      <!-- files: src/auth/index.ts, src/auth/index.test.ts -->
      - [ ] Write the failing tests
    - [ ] Task 2: Create utilities
      <!-- files: src/utils/index.ts -->
      <!-- depends: task1 -->
    - [ ] Task: Conductor - User Manual Verification 'Core Setup' (Protocol in workflow.md)

    ## Phase 2: Wire it up [checkpoint: 1a2b3c4]
    - [x] Task 1: ...

Each ``## Phase N: Name`` becomes an epic under the track's epic. Its ``- [ ] Task N: Title``
items (the least indented checkboxes) become tasks; the lines under one (sub-steps, prose)
become its description. ``<!-- files: ... -->`` gives a task its files; ``<!-- depends: task1,
phase2 -->`` under a task names tasks of its phase (``taskN``), a whole phase (``phaseN``) or
a task of another phase (``phase1/task2``). Before a phase's first task, ``<!-- execution:
parallel -->`` lets its tasks run side by side (otherwise the phase is sequential: each task
waits for the one before it), and ``<!-- depends: phase1, phase3 -->`` says which phases it
waits for (``<!-- depends: -->``: none). Without that annotation a phase waits for the phase
before it, as Conductor runs phases in order.

Done (``[x]``) and skipped (``[-]``) tasks and Conductor's manual verification steps are not
imported; waiting for them is waiting for nothing. Pure: the reader passes the text in.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localdispatch.plans.model import (
    ImportedPlan,
    LeftOut,
    PlanError,
    PlanItem,
    check_no_cycle,
    clip_title,
    confine_files,
    priority_of,
)
from localdispatch.tasks import find_cycle

FORMAT_HINT = (
    "A Conductor plan has phases and tasks like `## Phase 1: Setup` followed by "
    "`- [ ] Task 1: Create the parser` lines (annotations such as `<!-- files: a.py -->` "
    "go on the lines under a task)."
)

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_PHASE = re.compile(
    r"^phase\s*(?:(?P<num>\d+(?:\.\d+)*)\s*[:.)\-–—]?|[:\-–—])\s*(?P<name>.*)$", re.IGNORECASE
)
_CHECKPOINT = re.compile(r"\s*\[checkpoint:[^\]]*\]\s*$", re.IGNORECASE)
_CHECKBOX = re.compile(r"^(?P<indent>\s*)[-*+]\s+\[(?P<mark>[ xX~!\-])\]\s*(?P<text>.*)$")
_TASK = re.compile(
    r"^task\b\s*(?P<num>\d+(?:\.\d+)*)?\s*[:.)\-–—]?\s*(?P<title>.*)$", re.IGNORECASE
)
_COMMENT = re.compile(r"<!--(.*?)-->")
_ANNOTATION = re.compile(r"^\s*(?P<key>[A-Za-z][\w-]*)\s*:(?P<value>.*)$", re.DOTALL)
# A commit Conductor wrote after a finished task: "(1a2b3c4)", "[1a2b3c4]", "*(1a2b3c4)*".
_COMMIT_TAIL = re.compile(
    r"\s*(?:[-–—]\s*)?\*?[(\[`]?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}[)\]`]?\*?\s*$"
)
_VERIFICATION = re.compile(r"\bmanual verification\b|^conductor\s*[-–—:].*\bverif", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)")
_TITLE_PREFIX = re.compile(r"^(?:implementation\s+)?plan\s*(?:[:\-–—]\s*|$)", re.IGNORECASE)
_RULE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")

DEPENDS_KEYS = ("depends", "depends-on", "depends_on")
REF_HINT = (
    "Under a task, write `<!-- depends: task1, task2 -->` (tasks of its phase), `phase2` (a "
    "whole phase) or `phase1/task3` (a task of another phase); before a phase's first task, "
    "`<!-- depends: phase1 -->` (or `<!-- depends: -->` for none)."
)


@dataclass
class _Ref:
    token: str
    line: int


@dataclass
class _Task:
    number: str | None
    mark: str
    title: str
    line: int
    position: int
    body: list[str] = field(default_factory=list)
    files: list[_Ref] = field(default_factory=list)  # each path with its annotation's line
    depends: list[_Ref] | None = None
    ident: str = ""


@dataclass
class _Phase:
    number: str | None
    name: str
    line: int
    execution: str = "sequential"
    depends: list[_Ref] | None = None
    notes: list[str] = field(default_factory=list)
    tasks: list[_Task] = field(default_factory=list)
    ident: str = ""

    @property
    def heading(self) -> str:
        return f"{self.short}: {self.name}" if self.name else self.short

    @property
    def short(self) -> str:
        return f"Phase {self.number}" if self.number else f"Phase {self.name!r}"


@dataclass
class _Track:
    heading: str | None = None
    phases: list[_Phase] = field(default_factory=list)
    first_stray_checkbox: int | None = None  # the line of a checkbox outside every phase


def parse_plan(
    text: str,
    *,
    source: str,
    track_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    spec: str | None = None,
) -> ImportedPlan:
    """The plan in ``text`` (a plan.md); ``source`` names it in messages and imported_from.

    ``metadata`` is the track's metadata.json (title, description, priority), ``spec`` the
    repo-relative path of its spec.md when there is one (workers are pointed at it).
    """
    track = _read_structure(_lines(text, source), source)
    if not any(phase.tasks for phase in track.phases):
        raise _no_tasks(track, source)
    _name_items(track.phases, source)
    plan = ImportedPlan(source=source, format="conductor")
    meta = dict(metadata or {})
    priority = priority_of(meta.get("priority"))
    epic = _track_epic(track, meta, track_id, source, spec)
    if priority is not None:
        epic.priority = priority
    plan.items.append(epic)
    imported = _imported_tasks(track.phases, plan)
    deps = _dependencies(track.phases, imported, source)
    for phase in track.phases:
        kept = [task for task in phase.tasks if id(task) in imported]
        if not phase.tasks:
            plan.left_out.append(LeftOut(phase.line, phase.heading, "the phase has no tasks"))
            continue
        if not kept:
            continue
        plan.items.append(_phase_epic(phase, epic, priority))
        for task in kept:
            item = imported[id(task)]
            item.depends_on = deps[item.item]
            item.description = _task_description(task, phase, epic.title, spec)
            item.files = _files(task, plan.warnings)
            if priority is not None:
                item.priority = priority
            plan.items.append(item)
    check_no_cycle(
        plan.items,
        source,
        hint="Remove one of these `<!-- depends: ... -->` annotations (or make the phase "
        "parallel if its order made the circle).",
    )
    return plan


# ---- reading the lines -----------------------------------------------------------------------


def _lines(text: str, source: str) -> list[str]:
    """The file's lines (any line ending), with an HTML comment that spans several lines
    joined onto its first line, so every annotation sits on one line with its own number."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    result = list(lines)
    index = 0
    fenced = False
    while index < len(result):
        line = result[index]
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and line.rfind("<!--") > line.rfind("-->"):
            end = index + 1
            while end < len(result) and "-->" not in result[end]:
                end += 1
            if end >= len(result):
                raise PlanError(
                    source,
                    index + 1,
                    "an HTML comment (<!--) is never closed, so everything after it is hidden.",
                    hint="Close it with --> (annotations are one line: <!-- files: a.py -->).",
                )
            joined = " ".join([line, *(part.strip() for part in result[index + 1 : end + 1])])
            result[index] = joined
            for blank in range(index + 1, end + 1):
                result[blank] = ""
            index = end
        index += 1
    return result


def _read_structure(lines: list[str], source: str) -> _Track:
    track = _Track()
    phase: _Phase | None = None
    task: _Task | None = None
    base_indent: int | None = None
    fenced = False
    for number, raw in enumerate(lines, start=1):
        line = raw.expandtabs(4).rstrip()
        if _FENCE.match(line) or fenced:
            if _FENCE.match(line):
                fenced = not fenced
            _add_text(phase, task, line)
            continue
        heading = _HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            found = _PHASE.match(title)
            if found and level >= 2:
                name = _CHECKPOINT.sub("", found.group("name")).strip()
                phase = _Phase(found.group("num"), name, number)
                track.phases.append(phase)
                task, base_indent = None, None
                continue
            if level == 1 and track.heading is None:
                track.heading = title
            if level <= 2:  # another section: what follows is not the phase's
                phase, task, base_indent = None, None, None
                continue
        if phase is None:
            if track.first_stray_checkbox is None and _CHECKBOX.match(line):
                track.first_stray_checkbox = number
            continue
        box = _CHECKBOX.match(line)
        if box and (base_indent is None or len(box.group("indent")) <= base_indent):
            base_indent = len(box.group("indent")) if base_indent is None else base_indent
            task = _new_task(box, number, len(phase.tasks) + 1, source)
            phase.tasks.append(task)
            _annotate(phase, task, box.group("text"), number, source)
            continue
        _annotate(phase, task, line, number, source)
        _add_text(phase, task, _COMMENT.sub("", line).rstrip())
    return track


def _no_tasks(track: _Track, source: str) -> PlanError:
    if track.phases:
        first = track.phases[0]
        return PlanError(
            source,
            first.line,
            f"holds no tasks to import: {first.short} has no `- [ ] Task 1: ...` lines under "
            "it (nor has any other phase).",
            hint=FORMAT_HINT,
        )
    if track.first_stray_checkbox is not None:
        return PlanError(
            source,
            track.first_stray_checkbox,
            "holds no tasks to import: its checkboxes are not under a `## Phase N: Name` heading.",
            hint=FORMAT_HINT,
        )
    return PlanError(source, None, "holds no tasks to import.", hint=FORMAT_HINT)


def _new_task(box: re.Match[str], line: int, position: int, source: str) -> _Task:
    text = _COMMENT.sub("", box.group("text")).replace("**", "").strip()
    found = _TASK.match(text)
    number = found.group("num") if found else None
    title = found.group("title") if found else text
    title = _COMMIT_TAIL.sub("", title).strip()
    if not title:
        raise PlanError(
            source,
            line,
            "a task without a title.",
            hint="Write what the task does after the checkbox, e.g. "
            "`- [ ] Task 1: Create the config parser`.",
        )
    return _Task(number, box.group("mark"), title, line, position)


def _annotate(phase: _Phase, task: _Task | None, line: str, number: int, source: str) -> None:
    for body in _COMMENT.findall(line):
        found = _ANNOTATION.match(body)
        if not found:
            continue  # a plain comment, such as the commit Conductor notes after a task
        key, value = found.group("key").lower(), found.group("value").strip()
        if key == "files" and task is not None:
            parts = [part.strip() for part in re.split(r"[,;]", value)]
            task.files.extend(_Ref(part, number) for part in parts if part)
        elif key in DEPENDS_KEYS:
            refs = [_Ref(token, number) for token in _ref_tokens(value)]
            if task is None:
                phase.depends = [*(phase.depends or []), *refs]
            else:
                task.depends = [*(task.depends or []), *refs]
        elif key in ("execution", "parallel") and task is None:
            phase.execution = _execution(key, value, number, source)


def _execution(key: str, value: str, line: int, source: str) -> str:
    word = value.strip().lower()
    if key == "parallel" and word in ("true", "yes", "false", "no"):
        return "parallel" if word in ("true", "yes") else "sequential"
    if key == "execution" and word in ("parallel", "sequential"):
        return word
    raise PlanError(
        source,
        line,
        f"`{key}: {value.strip()}` is not an execution mode.",
        hint="Write `<!-- execution: parallel -->` or `<!-- execution: sequential -->` "
        "(or leave it out: a phase is sequential by default).",
    )


def _add_text(phase: _Phase | None, task: _Task | None, line: str) -> None:
    if phase is None or _RULE.match(line):
        return
    if task is not None:
        task.body.append(line)
    elif line.strip():
        phase.notes.append(line.strip())


def _ref_tokens(value: str) -> list[str]:
    text = re.sub(r"\b(task|phase)\s+(?=\d)", r"\1", value, flags=re.IGNORECASE)
    tokens = [token for token in re.split(r"[\s,;]+", text) if token]
    if [token.lower() for token in tokens] in (["none"], ["-"], ["n/a"]):
        return []
    return tokens


# ---- naming and linking --------------------------------------------------------------------


def _name_items(phases: list[_Phase], source: str) -> None:
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


def _task_label(phase: _Phase, task: _Task) -> str:
    number = f" {task.number}" if task.number else ""
    return f"{phase.short}, Task{number} ({task.title})"


def _imported_tasks(phases: list[_Phase], plan: ImportedPlan) -> dict[int, PlanItem]:
    """The tasks that become tasks (keyed by id() of the parsed task), in file order."""
    result: dict[int, PlanItem] = {}
    for phase in phases:
        for task in phase.tasks:
            reason = _left_out_reason(task)
            if reason:
                plan.left_out.append(LeftOut(task.line, task.title, reason))
                continue
            if task.mark == "~":
                plan.warnings.append(
                    f"line {task.line}: {task.title!r} was in progress in the plan; "
                    "imported as open"
                )
            elif task.mark == "!":
                plan.warnings.append(
                    f"line {task.line}: {task.title!r} is marked blocked in the plan; imported "
                    "as open (its description keeps the reason)"
                )
            title, overflow = clip_title(task.title)
            if overflow:
                task.body.insert(0, overflow)
            result[id(task)] = PlanItem(
                item=f"{phase.ident}/{task.ident}",
                title=title,
                line=task.line,
                parent=phase.ident,
                label=_task_label(phase, task),
            )
    return result


def _left_out_reason(task: _Task) -> str | None:
    if task.mark in "xX":
        return "done in the plan ([x])"
    if task.mark == "-":
        return "skipped in the plan ([-])"
    if _VERIFICATION.search(task.title):
        return "a manual verification step for a person, not a worker"
    return None


def _dependencies(
    phases: list[_Phase], imported: Mapping[int, PlanItem], source: str
) -> dict[str, list[str]]:
    """item id -> the item ids it waits for. Waiting for a whole phase becomes waiting for
    its last tasks, so the dispatcher's critical path sees the real chain."""
    phase_deps = {
        phase.ident: _phase_dependencies(phase, index, phases, source)
        for index, phase in enumerate(phases)
    }
    _check_phase_cycle(phases, phase_deps, source)
    kept = {item.item for item in imported.values()}
    own: dict[str, list[str]] = {}  # item -> tasks it waits for, as written (or chained)
    whole: dict[str, list[str]] = {}  # item -> phases it waits for as a whole
    for phase in phases:
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


def _phase_dependencies(phase: _Phase, index: int, phases: list[_Phase], source: str) -> list[str]:
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
    phases: list[_Phase], phase_deps: Mapping[str, list[str]], source: str
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
    phases: list[_Phase],
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
    phases: list[_Phase],
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


def _resolve(
    ref: _Ref, who: str, phase: _Phase, phases: list[_Phase], source: str
) -> tuple[str, str]:
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


def _task_in(phase: _Phase | None, number: str) -> _Task | None:
    if phase is None:
        return None
    return next((t for t in phase.tasks if t.ident == f"task{number}"), None)


def _unknown(ref: _Ref, who: str, source: str, what: str) -> PlanError:
    return PlanError(source, ref.line, f"{who} depends on {what}.", hint=REF_HINT)


def _files(task: _Task, warnings: list[str]) -> list[str]:
    """The task's paths, confined like a model's; a dropped one is a warning with its line."""
    kept: list[str] = []
    for line in dict.fromkeys(ref.line for ref in task.files):
        raws = [ref.token for ref in task.files if ref.line == line]
        kept.extend(confine_files(raws, f"line {line}", warnings))
    return list(dict.fromkeys(kept))


# ---- descriptions --------------------------------------------------------------------------


def _track_epic(
    track: _Track,
    meta: Mapping[str, Any],
    track_id: str | None,
    source: str,
    spec: str | None,
) -> PlanItem:
    heading = _TITLE_PREFIX.sub("", track.heading or "").strip()
    described = _text(meta.get("description"))
    named = _text(meta.get("title"))
    first_line = described.strip().splitlines()[0] if described.strip() else ""
    raw_title = (
        named.strip()
        or first_line
        or heading
        or (f"Conductor track {track_id}" if track_id else f"Plan {source}")
    )
    title, overflow = clip_title(raw_title)
    lines = []
    if described.strip() and described.strip() != raw_title:
        lines.append(described.strip())
    elif overflow:
        lines.append(overflow)
    kind = _text(meta.get("type")).strip()
    what = f"Conductor track {track_id}" if track_id else "Conductor plan"
    lines.append(f"{what}{f' ({kind})' if kind else ''}, imported from {source}.")
    if spec:
        lines.append(f"Spec: {spec}")
    return PlanItem(
        item="track", title=title, kind="epic", description="\n".join(lines), label=title
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _phase_epic(phase: _Phase, epic: PlanItem, priority: int | None) -> PlanItem:
    how = (
        "its tasks run side by side (parallel)"
        if phase.execution == "parallel"
        else "its tasks run one after another (sequential)"
    )
    lines = [*phase.notes, f"{phase.heading} of {epic.title!r}: {how}."]
    title, _ = clip_title(phase.heading)
    return PlanItem(
        item=phase.ident,
        title=title,
        kind="epic",
        line=phase.line,
        description="\n".join(lines),
        parent=epic.item,
        priority=2 if priority is None else priority,
        label=phase.heading,
    )


def _task_description(task: _Task, phase: _Phase, track_title: str, spec: str | None) -> str:
    body = textwrap.dedent("\n".join(task.body)).strip("\n")
    lines = [body, ""] if body else []
    lines.append(f"Part of {phase.heading} of {track_title!r} ({phase.execution}).")
    if phase.notes:
        lines.append("Notes on this phase: " + " ".join(phase.notes))
    if spec:
        lines.append(f"The track's spec: {spec}")
    return "\n".join(lines)
