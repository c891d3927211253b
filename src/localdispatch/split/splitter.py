"""Splitting one big goal into small file-scoped tasks: the prompt, the checks, the writing.

The model is asked (through :mod:`localdispatch.split.llm`) for JSON that follows the schema of
:class:`PlanReply`. Its answer is checked before anything is stored: the number of subtasks,
paths confined to the repository, files that do not exist yet marked as new, dependencies only
within the batch (by number or title), duplicate titles merged, dependency cycles broken.
A reply with the wrong shape or the wrong number of subtasks is sent back to the model with
the problem; everything else is repaired here and reported as a warning.

``--no-llm`` uses :func:`rule_subtasks` instead: sentences and lists in the goal become tasks.
It is never a silent fallback for a model that cannot be reached.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from localdispatch.config import Config
from localdispatch.errors import CycleError, InvalidTransition
from localdispatch.layout import Layout
from localdispatch.split.context import RepoContext, build_context, estimate_tokens
from localdispatch.split.llm import (
    ChatMessage,
    ChatProvider,
    InvalidReply,
    ReplyLog,
    ask_structured,
    extract_json,
    provider_for,
)
from localdispatch.split.plan import (
    EPIC_TITLE_CHARS,
    Limits,
    SplitPlan,
    Subtask,
    check_subtasks,
    clip,
    plan_with_rules,
)
from localdispatch.store import TaskDraft, TaskStore
from localdispatch.tasks import ACTIVE, Task, find_cycle, title_key

log = logging.getLogger(__name__)

REPLY_TOKENS = 3072  # room left in the context window for the answer
_REF = "@split-{}"  # batch-local refs; "@" cannot start a task id, so they never collide


# ---- what the model must answer ----------------------------------------------------------


def _as_list(value: Any) -> Any:
    """Small models write one item where a list belongs, or a comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int | float):
        return [value]
    return [] if value is None else value


class SubtaskReply(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str = Field(min_length=1, description="What to do, as a short imperative sentence.")
    description: str = Field("", description="What to change and how, enough to work alone.")
    files: list[str] = Field(
        default_factory=list, description="Repository-relative paths it creates or changes."
    )
    depends_on: list[int | str] = Field(
        default_factory=list,
        description="Numbers (1 = the first subtask) of subtasks that must be finished first.",
    )
    acceptance_criteria: list[str] = Field(
        default_factory=list, description="Checkable statements that hold when it is done."
    )

    @field_validator("files", "depends_on", "acceptance_criteria", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)


class PlanReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subtasks: list[SubtaskReply] = Field(min_length=1)


def reply_schema() -> dict[str, Any]:
    """The JSON Schema sent as Ollama's ``format``: every field required, so the grammar
    makes even a small model write each one."""
    schema = PlanReply.model_json_schema()
    for definition in schema.get("$defs", {}).values():
        definition["required"] = list(definition.get("properties", {}))
    schema["required"] = ["subtasks"]
    return schema


def resolve_dependencies(raw: Sequence[SubtaskReply]) -> tuple[list[list[int]], list[str]]:
    """Each subtask's dependencies as 0-based indices in the batch; unknown ones warned."""
    by_title = {title_key(s.title): i for i, s in enumerate(raw)}
    numbers = [_as_number(d) for s in raw for d in s.depends_on]
    # Models are told to count from 1, but some count from 0: a 0 anywhere gives them away.
    base = 0 if 0 in numbers else 1
    resolved: list[list[int]] = []
    warnings: list[str] = []
    for i, sub in enumerate(raw):
        deps: list[int] = []
        for dep in sub.depends_on:
            number = _as_number(dep)
            target = number - base if number is not None else by_title.get(title_key(str(dep)))
            if target is None or not 0 <= target < len(raw):
                warnings.append(f"'{sub.title}': dependency {dep!r} is not in this batch; dropped")
            elif target != i and target not in deps:
                deps.append(target)
        resolved.append(deps)
    return resolved, warnings


def _as_number(dep: int | str) -> int | None:
    if isinstance(dep, int):
        return dep
    match = re.fullmatch(r"\s*(?:#|subtask\s*|task\s*|step\s*)?(\d+)\s*", dep, re.IGNORECASE)
    return int(match.group(1)) if match else None


def parse_plan_reply(
    text: str, limits: Limits, exists: Callable[[str], bool]
) -> tuple[list[Subtask], list[str]]:
    """A model's raw reply as checked subtasks and warnings; InvalidReply says what is wrong."""
    data = extract_json(text)
    if isinstance(data, list):
        data = {"subtasks": data}
    elif isinstance(data, dict) and "subtasks" not in data:
        # {"tasks": [...]} and the like: one list of objects under another name.
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) == 1:
            data = {"subtasks": lists[0]}
    try:
        reply = PlanReply.model_validate(data)
    except ValidationError as exc:
        raise InvalidReply(describe_validation(exc)) from None
    deps, warnings = resolve_dependencies(reply.subtasks)
    subtasks = [
        Subtask(s.title, s.description, list(s.files), d, list(s.acceptance_criteria))
        for s, d in zip(reply.subtasks, deps, strict=True)
    ]
    checked, more = check_subtasks(subtasks, limits, exists)
    return checked, warnings + more


def describe_validation(exc: ValidationError, limit: int = 5) -> str:
    """Pydantic's errors as 'subtasks[2].title: Field required; ...' for the model to read."""
    problems = []
    for err in exc.errors()[:limit]:
        where = "".join(f"[{p + 1}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        problems.append(f"{where.lstrip('.') or 'the object'}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(problems) + (f"; and {more} more problems" if more > 0 else "")


# ---- the prompt --------------------------------------------------------------------------

SYSTEM_PROMPT = """\
You split one software development goal into small coding subtasks. Each subtask is done by a \
separate AI coding assistant that sees only its own subtask and the files it names, while the \
others work in parallel.

Rules:
1. Make between {min} and {max} subtasks. A few well-scoped subtasks beat many tiny ones.
2. Each subtask can be finished alone in one session and changes few files (ideally 1-3).
3. "files": paths relative to the repository root with forward slashes, spelled exactly as in \
the file list, or the path of a new file to create. Never absolute paths, never "..".
4. Subtasks that may run at the same time must not change the same file; if two must, make the \
later one depend on the earlier one.
5. "depends_on": the numbers (1 = the first subtask) of subtasks that must be finished first. \
Leave it empty when a subtask can start at once; prefer parallel work, never make a cycle.
6. "description": what to change and how, concrete enough to do without asking questions.
7. "acceptance_criteria": one to three checkable statements.
8. Add or update tests where the repository has tests.

Answer with one JSON object only, of this shape:
{{"subtasks": [{{"title": "...", "description": "...", "files": ["path/file.py"], \
"depends_on": [], "acceptance_criteria": ["..."]}}]}}"""


def build_messages(
    goal: str, context: RepoContext, limits: Limits, parent: Task | None = None
) -> list[ChatMessage]:
    system = SYSTEM_PROMPT.format(min=limits.min_subtasks, max=limits.max_subtasks)
    user = [f"Goal: {goal.strip()}"]
    if parent is not None:
        existing = f"This splits the existing task {parent.id}: {parent.title}"
        if parent.description.strip() and parent.description.strip() != goal.strip():
            existing += f"\n{parent.description.strip()}"
        if parent.files:
            existing += "\nFiles named in it: " + ", ".join(parent.files)
        user.append(existing)
    user.append("Repository:\n" + context.text)
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content="\n\n".join(user)),
    ]


def context_window(messages: Sequence[ChatMessage]) -> int:
    """num_ctx for the request: the prompt plus room for the answer, in steps of 2,048."""
    prompt = sum(estimate_tokens(m["content"]) for m in messages)
    return max(8192, math.ceil((prompt + REPLY_TOKENS) / 2048) * 2048)


# ---- planning ----------------------------------------------------------------------------


def plan_with_model(
    provider: ChatProvider,
    goal: str,
    context: RepoContext,
    limits: Limits,
    *,
    max_attempts: int,
    exists: Callable[[str], bool],
    reply_log: ReplyLog | None = None,
    parent: Task | None = None,
) -> SplitPlan:
    """Ask the model for a split, repairing its reply up to ``max_attempts`` times."""
    messages = build_messages(goal, context, limits, parent)
    answer = ask_structured(
        provider,
        messages,
        lambda text: parse_plan_reply(text, limits, exists),
        schema=reply_schema(),
        max_attempts=max_attempts,
        reply_log=reply_log,
        context_tokens=context_window(messages),
        what="plan",
        extra_hint="`--no-llm` splits the goal by its sentences instead.",
    )
    subtasks, warnings = answer.value
    return SplitPlan(
        goal=goal,
        subtasks=subtasks,
        source="model",
        warnings=warnings,
        model=provider.model,
        attempts=answer.attempts,
        log_files=[str(p) for p in answer.log_files],
        context=context_figures(context, messages),
    )


def context_figures(context: RepoContext, messages: Sequence[ChatMessage]) -> dict[str, Any]:
    return {
        "files_total": context.total,
        "files_shown": context.shown,
        "files_left_out": context.omitted,
        "readme": context.readme,
        "prompt_tokens_estimated": sum(estimate_tokens(m["content"]) for m in messages),
    }


# ---- writing -----------------------------------------------------------------------------


@dataclass
class WrittenPlan:
    epic: Task
    children: list[Task]


def epic_title(goal: str) -> str:
    return clip(goal.strip().splitlines()[0] if goal.strip() else goal, EPIC_TITLE_CHARS)


def check_parent(parent: Task) -> None:
    """Only an open task can be split (a running one belongs to a worker)."""
    if parent.status != "open":
        raise InvalidTransition(
            f"Task {parent.id} is {parent.status}; only an open task can be split.",
            hint=f"Reopen it first (`localdispatch tasks reopen {parent.id}`) or split a new goal.",
            task_id=parent.id,
        )


def plan_drafts(plan: SplitPlan, parent: Task | None, all_tasks: Sequence[Task]) -> list[TaskDraft]:
    """The epic (unless ``parent`` is the epic) and the children, linked by batch refs."""
    if find_cycle({str(i): [str(d) for d in s.depends_on] for i, s in enumerate(plan.subtasks)}):
        raise CycleError(["the plan"])  # break_cycles makes this impossible; never store one
    drafts: list[TaskDraft] = []
    epic_ref = _REF.format("epic")
    if parent is None:
        how = f"the model {plan.model}" if plan.source == "model" else "sentence rules"
        note = f"Split into {len(plan.subtasks)} tasks by {how}."
        drafts.append(
            TaskDraft(
                title=epic_title(plan.goal),
                description=f"{plan.goal.strip()}\n\n{note}",
                kind="epic",
                ref=epic_ref,
            )
        )
    status = {t.id: t.status for t in all_tasks}
    # The epic is never dispatched, so what it waited for, its first children must wait for.
    inherited = [d for d in (parent.depends_on if parent else []) if status.get(d) in ACTIVE]
    goal_title = parent.title if parent else epic_title(plan.goal)
    for index, sub in enumerate(plan.subtasks):
        deps = [_REF.format(d) for d in sub.depends_on] or list(inherited)
        drafts.append(
            TaskDraft(
                title=sub.title,
                description=sub.task_description(goal_title),
                priority=parent.priority if parent else 2,
                files=sub.files,
                depends_on=deps,
                parent=parent.id if parent else epic_ref,
                ref=_REF.format(index),
            )
        )
    return drafts


def write_plan(store: TaskStore, plan: SplitPlan, parent: Task | None = None) -> WrittenPlan:
    """Store the epic and children in one batch; with ``parent``, it becomes the epic."""
    if parent is None:
        created = store.add_many(plan_drafts(plan, None, store.all()))
        return WrittenPlan(epic=created[0], children=created[1:])
    parent = store.get(parent.id)
    check_parent(parent)
    # Make it an epic first, so no dispatcher claims it while its children are being added;
    # if adding them fails, it goes back to what it was.
    epic = store.update(parent.id, kind="epic") if parent.kind != "epic" else parent
    try:
        created = store.add_many(plan_drafts(plan, epic, store.all()))
    except BaseException:
        if parent.kind != "epic":
            store.update(parent.id, kind=parent.kind)
        raise
    return WrittenPlan(epic=epic, children=created)


def split_goal(
    config: Config,
    layout: Layout,
    goal: str,
    *,
    parent: Task | None = None,
    max_subtasks: int | None = None,
    use_llm: bool = True,
    provider: ChatProvider | None = None,
) -> SplitPlan:
    """The whole planning step as the command runs it (nothing is stored; see write_plan).

    ``provider`` defaults to the one the config names; the demo passes its own.
    """
    limits = Limits.of(config.split.min_subtasks, max_subtasks or config.split.max_subtasks)
    hints = list(parent.files) if parent else []
    context = build_context(layout.repo, goal, hint_files=hints)
    tracked = set(context.files)

    def exists(path: str) -> bool:
        return path in tracked or (layout.repo / path).exists()

    if not use_llm:
        plan = plan_with_rules(goal, limits, exists, context.files)
        plan.context = {"files_total": context.total}
        return plan
    owned = provider is None
    chosen = provider or provider_for(config)
    try:
        return plan_with_model(
            chosen,
            goal,
            context,
            limits,
            max_attempts=config.split.max_attempts,
            exists=exists,
            reply_log=ReplyLog.new(layout.logs, "split"),
            parent=parent,
        )
    finally:
        if owned:
            chosen.close()
