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
before it, as Conductor runs phases in order. :mod:`localdispatch.plans.track` holds these
rules; this module reads the text.

Done (``[x]``) and skipped (``[-]``) tasks and Conductor's manual verification steps are not
imported; waiting for them is waiting for nothing. Pure: the reader passes the text in.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
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
from localdispatch.plans.track import (
    Phase,
    Ref,
    Track,
    TrackTask,
    dependencies,
    name_items,
)

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
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)*?\1")  # `code`: an annotation written in one is text
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
    name_items(track.phases, source)
    plan = ImportedPlan(source=source, format="conductor")
    meta = dict(metadata or {})
    priority = priority_of(meta.get("priority"))
    epic = _track_epic(track, meta, track_id, source, spec)
    if priority is not None:
        epic.priority = priority
    plan.items.append(epic)
    imported = _imported_tasks(track.phases, plan)
    deps = dependencies(track.phases, imported, source)
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
        bare = _CODE_SPAN.sub("", line)
        if not fenced and bare.rfind("<!--") > bare.rfind("-->"):
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


def _read_structure(lines: list[str], source: str) -> Track:
    track = Track()
    phase: Phase | None = None
    task: TrackTask | None = None
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
                phase = Phase(found.group("num"), name, number)
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
        _add_text(phase, task, _without_comments(line).rstrip())
    return track


def _without_comments(line: str) -> str:
    """``line`` without its HTML comments, leaving those written inside `code` as text."""
    parts, last = [], 0
    for span in _CODE_SPAN.finditer(line):
        parts += [_COMMENT.sub("", line[last : span.start()]), span.group(0)]
        last = span.end()
    return "".join([*parts, _COMMENT.sub("", line[last:])])


def _no_tasks(track: Track, source: str) -> PlanError:
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


def _new_task(box: re.Match[str], line: int, position: int, source: str) -> TrackTask:
    text = _without_comments(box.group("text")).replace("**", "").strip()
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
    return TrackTask(number, box.group("mark"), title, line, position)


def _annotate(phase: Phase, task: TrackTask | None, line: str, number: int, source: str) -> None:
    for body in _COMMENT.findall(_CODE_SPAN.sub("", line)):
        found = _ANNOTATION.match(body)
        if not found:
            continue  # a plain comment, such as the commit Conductor notes after a task
        key, value = found.group("key").lower(), found.group("value").strip()
        if key == "files" and task is not None:
            parts = [part.strip() for part in re.split(r"[,;]", value)]
            task.files.extend(Ref(part, number) for part in parts if part)
        elif key in DEPENDS_KEYS:
            refs = [Ref(token, number) for token in _ref_tokens(value)]
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


def _add_text(phase: Phase | None, task: TrackTask | None, line: str) -> None:
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


def _task_label(phase: Phase, task: TrackTask) -> str:
    number = f" {task.number}" if task.number else ""
    return f"{phase.short}, Task{number} ({task.title})"


def _imported_tasks(phases: list[Phase], plan: ImportedPlan) -> dict[int, PlanItem]:
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


def _left_out_reason(task: TrackTask) -> str | None:
    if task.mark in "xX":
        return "done in the plan ([x])"
    if task.mark == "-":
        return "skipped in the plan ([-])"
    if _VERIFICATION.search(task.title):
        return "a manual verification step for a person, not a worker"
    return None


def _files(task: TrackTask, warnings: list[str]) -> list[str]:
    """The task's paths, confined like a model's; a dropped one is a warning with its line."""
    kept: list[str] = []
    for line in dict.fromkeys(ref.line for ref in task.files):
        raws = [ref.token for ref in task.files if ref.line == line]
        kept.extend(confine_files(raws, f"line {line}", warnings))
    return list(dict.fromkeys(kept))


# ---- descriptions --------------------------------------------------------------------------


def _track_epic(
    track: Track,
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


def _phase_epic(phase: Phase, epic: PlanItem, priority: int | None) -> PlanItem:
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


def _task_description(task: TrackTask, phase: Phase, track_title: str, spec: str | None) -> str:
    body = textwrap.dedent("\n".join(task.body)).strip("\n")
    lines = [body, ""] if body else []
    lines.append(f"Part of {phase.heading} of {track_title!r} ({phase.execution}).")
    if phase.notes:
        lines.append("Notes on this phase: " + " ".join(phase.notes))
    if spec:
        lines.append(f"The track's spec: {spec}")
    return "\n".join(lines)
