"""Task-dispatcher YAML files (``.conductor/task-dispatcher.yaml``) read into an
:class:`ImportedPlan`.

The format is a list of tasks, at the top of the file or under ``tasks:`` (or grouped under
``groups:``, each group a list of tasks or a mapping with ``tasks:``)::

    tasks:
      - taskId: "T1"
        title: "PostgreSQL Schema Design"
        priority: "CRITICAL"
        effortHours: 4
        agent:
          type: "database-engineer"
        inputs:
          - path: "docs/04-planning/breakdown.md"
            section: "T1: PostgreSQL Schema Design"
        outputs:
          - path: "database/migrations/001_error_recovery_and_scheduling.sql"
        validation:
          - type: "file_exists"
          - type: "sql_syntax"
        dependencies: []

``outputs[].path`` become the task's files, ``dependencies`` (taskIds, or a group's name) its
dependencies, ``effortHours`` its ``estimate_secs``; ``description``, the agent, ``inputs`` and
``validation`` go into its description, because they are what the worker must read and check.
A task whose ``status`` says it is done is not imported. Parsed with PyYAML's safe loader; its
node marks give every message a line. Pure: the reader passes the text in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

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
from localdispatch.tasks import normalize_status

FORMAT_HINT = (
    "A task-dispatcher file is a list of tasks, e.g. `tasks:` followed by "
    '`- taskId: "T1"` items, each with a `title` (and optionally `outputs`, `dependencies`, '
    "`validation`, `effortHours`)."
)
ID_KEYS = ("taskId", "task_id", "id")
TITLE_KEYS = ("title", "name")
DEPENDENCY_KEYS = ("dependencies", "dependsOn", "depends_on")
EFFORT_KEYS = ("effortHours", "effort_hours", "estimatedHours")
DONE = frozenset({"done", "cancelled"})


@dataclass
class _Raw:
    """One task entry with the lines of its parts."""

    data: Mapping[Any, Any]
    line: int
    key_lines: dict[str, int] = field(default_factory=dict)
    item_lines: dict[str, list[int]] = field(default_factory=dict)
    group: str | None = None


@dataclass
class _Group:
    name: str
    line: int
    description: str = ""


def parse_plan(text: str, *, source: str) -> ImportedPlan:
    """The tasks of the YAML ``text``; ``source`` names the file in messages and imported_from."""
    text = text.removeprefix("\ufeff")
    try:
        data = yaml.safe_load(text)
        # The same text as nodes, only for the line each task and value starts on.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from None
    entries, groups = _entries(data, root, source)
    if not entries:
        line = _line(_child(root, "tasks")) or _line(_child(root, "groups"))
        raise PlanError(source, line, "holds no tasks to import.", hint=FORMAT_HINT)
    plan = ImportedPlan(source=source, format="task-dispatcher")
    plan.items.append(_plan_epic(data, source))
    ids = _task_ids(entries, source)
    done = {ids[index] for index, raw in enumerate(entries) if _is_done(raw.data)}
    group_members: dict[str, list[str]] = {}
    for index, raw in enumerate(entries):
        if raw.group is not None:
            group_members.setdefault(raw.group, []).append(ids[index])
    for group in groups:  # an epic only for a group with something left to do
        if any(task_id not in done for task_id in group_members.get(group.name, [])):
            plan.items.append(_group_epic(group, plan.epic))
    known = set(ids)
    for index, raw in enumerate(entries):
        task_id = ids[index]
        title = _title(raw, task_id, source)
        if task_id in done:
            plan.left_out.append(LeftOut(raw.line, title, f"{task_id} is done ({_status(raw)})"))
            continue
        deps = _dependencies(raw, task_id, known, group_members, source)
        plan.items.append(_task_item(raw, task_id, title, deps, done, plan))
    check_no_cycle(
        plan.items,
        source,
        hint="Remove one of these taskIds from the other's `dependencies`.",
    )
    return plan


# ---- finding the tasks -----------------------------------------------------------------------


def _syntax_error(exc: yaml.YAMLError, source: str) -> PlanError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    line = mark.line + 1 if mark is not None else None
    column = f", column {mark.column + 1}" if mark is not None else ""
    what = f"{context} {problem}" if context else problem
    return PlanError(
        source,
        line,
        f"the YAML does not parse{column}: {what}.",
        hint="Fix that line; common causes are a tab used for indenting (use spaces), an item "
        "indented differently from its neighbours, or a `:` or `#` inside an unquoted text "
        '(put the text in quotes: title: "Fix: the parser").',
    )


def _entries(data: Any, root: yaml.Node | None, source: str) -> tuple[list[_Raw], list[_Group]]:
    """The task entries in file order, and the groups they came in (if any)."""
    if isinstance(data, list):
        return _grouped(_task_list(data, root, source, None), [])
    if not isinstance(data, dict):
        raise PlanError(source, None, "holds no list of tasks.", hint=FORMAT_HINT)
    if "tasks" in data:
        node = _child(root, "tasks")
        if not isinstance(data["tasks"], list):
            raise PlanError(source, _line(node), "`tasks` is not a list.", hint=FORMAT_HINT)
        entries = _task_list(data["tasks"], node, source, None)
    else:
        entries = []
    groups: list[_Group] = []
    raw_groups = data.get("groups")
    groups_node = _child(root, "groups")
    if isinstance(raw_groups, dict):
        pairs = [(str(k), v, _child(groups_node, k)) for k, v in raw_groups.items()]
    elif isinstance(raw_groups, list):
        pairs = [
            (str(g.get("name") or g.get("id") or f"group {n}"), g, _index(groups_node, n - 1))
            for n, g in enumerate(raw_groups, start=1)
            if isinstance(g, dict)
        ]
    else:
        pairs = []
    for name, value, node in pairs:
        members, members_node, text = value, node, ""
        if isinstance(value, dict):
            members, members_node = value.get("tasks", []), _child(node, "tasks")
            described = value.get("description") or value.get("title") or ""
            text = described if isinstance(described, str) else ""
        if not isinstance(members, list):
            raise PlanError(
                source, _line(node), f"group {name!r} has no list of tasks.", hint=FORMAT_HINT
            )
        groups.append(_Group(name, _line(node) or 0, text))
        entries.extend(_task_list(members, members_node, source, name))
    if not entries and "tasks" not in data and raw_groups is None:
        raise PlanError(source, None, "holds no `tasks:` list.", hint=FORMAT_HINT)
    return _grouped(entries, groups)


def _grouped(entries: list[_Raw], groups: list[_Group]) -> tuple[list[_Raw], list[_Group]]:
    for raw in entries:  # a `group:` field on a task works like listing it under `groups:`
        named = raw.data.get("group")
        if raw.group is None and isinstance(named, str) and named.strip():
            raw.group = named.strip()
            if all(g.name != raw.group for g in groups):
                groups.append(_Group(raw.group, raw.line))
    return entries, groups


def _task_list(
    items: list[Any], node: yaml.Node | None, source: str, group: str | None
) -> list[_Raw]:
    result = []
    for position, value in enumerate(items):
        item_node = _index(node, position)
        if not isinstance(value, dict):
            raise PlanError(
                source,
                _line(item_node),
                f"task #{position + 1} is not a mapping of fields.",
                hint='Write each task as `- taskId: "T1"` with `title: ...` on the next line.',
            )
        raw = _Raw(value, _line(item_node) or 0, group=group)
        if isinstance(item_node, yaml.MappingNode):
            for key_node, value_node in item_node.value:
                key = str(key_node.value)
                raw.key_lines[key] = value_node.start_mark.line + 1
                if isinstance(value_node, yaml.SequenceNode):
                    raw.item_lines[key] = [n.start_mark.line + 1 for n in value_node.value]
        result.append(raw)
    return result


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if str(key_node.value) == str(key):
            found: yaml.Node = value_node
            return found
    return None


def _index(node: yaml.Node | None, position: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and position < len(node.value):
        value: yaml.Node = node.value[position]
        return value
    return None


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


# ---- one task ----------------------------------------------------------------------------------


def _field(raw: _Raw, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in raw.data:
            return key, raw.data[key]
    return None, None


def _task_ids(entries: list[_Raw], source: str) -> list[str]:
    ids: list[str] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(entries, start=1):
        key, value = _field(raw, ID_KEYS)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise PlanError(
                source,
                raw.key_lines.get(key or "", raw.line),
                f"task #{position} has no taskId.",
                hint='Give every task a unique `taskId` (e.g. taskId: "T7"): dependencies and '
                "a second import of the file find tasks by it.",
            )
        task_id = str(value).strip()
        if task_id in seen:
            raise PlanError(
                source,
                raw.line,
                f"taskId {task_id!r} is used twice (lines {seen[task_id]} and {raw.line}).",
                hint="Give each task its own taskId.",
            )
        seen[task_id] = raw.line
        ids.append(task_id)
    return ids


def _title(raw: _Raw, task_id: str, source: str) -> str:
    key, value = _field(raw, TITLE_KEYS)
    if not isinstance(value, str) or not value.strip():
        raise PlanError(
            source,
            raw.key_lines.get(key or "", raw.line),
            f"task {task_id} has no title.",
            hint=f'Add a `title:` line to {task_id} saying what it does (title: "...").',
        )
    return value.strip()


def _status(raw: _Raw) -> str:
    value = raw.data.get("status")
    return value.strip() if isinstance(value, str) else ""


def _is_done(data: Mapping[Any, Any]) -> bool:
    value = data.get("status")
    return isinstance(value, str) and normalize_status(value) in DONE


def _dependencies(
    raw: _Raw,
    task_id: str,
    known: set[str],
    groups: Mapping[str, list[str]],
    source: str,
) -> list[str]:
    key, value = _field(raw, DEPENDENCY_KEYS)
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        values: list[Any] = [part for part in re.split(r"[,\s]+", str(value)) if part]
        lines = [raw.key_lines.get(key or "", raw.line)] * len(values)
    elif isinstance(value, list):
        values = value
        lines = raw.item_lines.get(key or "", [])
    else:
        raise PlanError(
            source,
            raw.key_lines.get(key or "", raw.line),
            f"`{key}` of {task_id} is not a list of taskIds.",
            hint='Write it as a list: dependencies: ["T1", "T2"] ([] for none).',
        )
    result = []
    for position, dep in enumerate(values):
        line = lines[position] if position < len(lines) else raw.line
        name = str(dep).strip() if isinstance(dep, (str, int)) and not isinstance(dep, bool) else ""
        if name in known:
            result.append(name)
        elif name in groups:
            result.extend(groups[name])
        else:
            listed = ", ".join(sorted(known)[:12]) + (" ..." if len(known) > 12 else "")
            raise PlanError(
                source,
                line,
                f"{task_id} depends on {dep!r}, which is not a taskId in this file.",
                hint=f"Use one of the taskIds the file has ({listed}) or remove it from `{key}`.",
            )
    if task_id in result:
        raise PlanError(
            source,
            raw.key_lines.get(key or "", raw.line),
            f"{task_id} depends on itself, so it could never start.",
            hint=f"Remove {task_id} from its own `{key}`.",
        )
    return list(dict.fromkeys(result))


def _effort(raw: _Raw, task_id: str, source: str) -> float | None:
    key, value = _field(raw, EFFORT_KEYS)
    if value is None:
        return None
    hours: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        hours = float(value)
    elif isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:h|hrs?|hours?)?\s*", value, re.IGNORECASE)
        hours = float(found.group(1)) if found else None
    if hours is None or not math.isfinite(hours) or hours < 0:
        raise PlanError(
            source,
            raw.key_lines.get(key or "", raw.line),
            f"`{key}` of {task_id} is {value!r}, not a number of hours.",
            hint=f"Write the effort in hours as a number, e.g. {key}: 4 (or 0.5).",
        )
    return hours * 3600.0


def _task_item(
    raw: _Raw,
    task_id: str,
    title: str,
    deps: list[str],
    done: set[str],
    plan: ImportedPlan,
) -> PlanItem:
    short, overflow = clip_title(title)
    estimate = _effort(raw, task_id, plan.source)
    priority = priority_of(raw.data.get("priority"))
    if raw.data.get("priority") is not None and priority is None:
        plan.warnings.append(
            f"line {raw.line}: {task_id}'s priority {raw.data.get('priority')!r} is not one of "
            "CRITICAL, HIGH, MEDIUM, LOW (or 0-4); it gets the default 2"
        )
    outputs = _outputs(raw.data.get("outputs"))
    files = confine_files(outputs, f"line {raw.line} ({task_id})", plan.warnings)
    return PlanItem(
        item=f"task/{task_id}",
        title=short,
        line=raw.line,
        description=_description(raw, task_id, overflow, estimate),
        files=files,
        depends_on=[f"task/{dep}" for dep in deps if dep not in done],
        parent=f"group/{raw.group}" if raw.group else plan.epic.item,
        priority=2 if priority is None else priority,
        estimate_secs=estimate,
        label=f"{task_id} ({short})",
    )


def _outputs(value: Any) -> list[str]:
    result = []
    for entry in value if isinstance(value, list) else [value] if value else []:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(path, str) and path.strip():
            result.append(path.strip())
    return result


def _description(raw: _Raw, task_id: str, overflow: str, estimate: float | None) -> str:
    data = raw.data
    parts: list[str] = []
    if overflow:
        parts.append(overflow)
    described = data.get("description")
    if isinstance(described, str) and described.strip():
        parts.append(described.strip())
    agent = data.get("agent")
    agent_type = agent.get("type") if isinstance(agent, dict) else agent
    if isinstance(agent_type, str) and agent_type.strip():
        parts.append(f"Agent: {agent_type.strip()}")
    inputs = [_describe(entry) for entry in _as_list(data.get("inputs"))]
    if inputs:
        parts.append("Read first:\n" + "\n".join(f"- {text}" for text in inputs if text))
    checks = [_describe(entry) for entry in _as_list(data.get("validation"))]
    if checks:
        parts.append(
            "Validation (check these before you commit):\n"
            + "\n".join(f"- {text}" for text in checks if text)
        )
    footer = f"Task {task_id} of the task-dispatcher plan"
    if estimate is not None:
        footer += f"; effort {estimate / 3600:g} h"
    parts.append(footer + ".")
    return "\n\n".join(parts)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [
            {"type": key, **item} if isinstance(item, dict) else {"type": key, "value": item}
            for key, item in value.items()
        ]
    return value if isinstance(value, list) else [value]


def _describe(entry: Any) -> str:
    """One input or validation entry as a line: ``path (section: ...)``, ``sql_syntax``."""
    if isinstance(entry, dict):
        head = entry.get("path") or entry.get("type") or entry.get("name") or ""
        rest = [
            f"{key}: {value}"
            for key, value in entry.items()
            if key not in ("path", "type", "name") and value not in (None, "", [])
        ]
        text = str(head)
        return f"{text} ({'; '.join(rest)})" if rest and text else text or "; ".join(rest)
    return str(entry).strip() if entry is not None else ""


# ---- the epics ---------------------------------------------------------------------------------


def _plan_epic(data: Any, source: str) -> PlanItem:
    named = ""
    described = ""
    if isinstance(data, dict):
        for key in ("title", "name", "phase", "project"):
            if isinstance(data.get(key), str) and data[key].strip():
                named = data[key].strip()
                break
        if isinstance(data.get("description"), str):
            described = data["description"].strip()
    title, overflow = clip_title(named or f"Tasks from {source.rsplit('/', 1)[-1]}")
    lines = [text for text in (overflow, described) if text]
    lines.append(f"Task-dispatcher plan imported from {source}.")
    return PlanItem(
        item="plan", title=title, kind="epic", description="\n\n".join(lines), label=title
    )


def _group_epic(group: _Group, epic: PlanItem) -> PlanItem:
    title, _ = clip_title(f"Group {group.name}")
    lines = [group.description] if group.description else []
    lines.append(f"Group {group.name} of {epic.title!r}.")
    return PlanItem(
        item=f"group/{group.name}",
        title=title,
        kind="epic",
        line=group.line,
        description="\n".join(lines),
        parent=epic.item,
        label=f"group {group.name}",
    )
