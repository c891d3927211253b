"""`split_task.py "GOAL"` and `localdispatch split "GOAL"`: split a goal into file-scoped tasks."""

from __future__ import annotations

import argparse
from typing import Any

from localdispatch.cli import common
from localdispatch.errors import UsageError
from localdispatch.layout import ensure_state_ignored
from localdispatch.split.plan import SplitPlan
from localdispatch.split.splitter import WrittenPlan, check_parent, split_goal, write_plan
from localdispatch.store import open_store
from localdispatch.tasks import Task

MAX_SUBTASKS_LIMIT = 50


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "goal", nargs="?", metavar="GOAL", help="the big goal, in quotes (optional with --parent)"
    )
    parser.add_argument(
        "--parent", metavar="ID", help="split this existing task; it becomes the epic"
    )
    parser.add_argument("--bead", metavar="ID", help="same as --parent (a Beads issue id)")
    parser.add_argument(
        "--max-subtasks",
        type=_subtask_count,
        metavar="N",
        help="most child tasks (default: split.max_subtasks in the config)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; store nothing")
    parser.add_argument(
        "--no-llm",
        action="store_true",
        help="split by the goal's sentences and lists instead of asking the model",
    )
    common.add_common(parser)
    parser.set_defaults(handler=run)


def register(sub: Any, name: str, help_text: str) -> None:
    configure(sub.add_parser(name, help=help_text, description=help_text))


def _subtask_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_SUBTASKS_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SUBTASKS_LIMIT}")
    return value


def run(args: argparse.Namespace) -> int:
    config, layout = common.load(args)
    store = open_store(config, layout)
    parent = _parent(args, store.get)
    goal = _goal(args, parent)
    if not (args.dry_run and args.no_llm):
        # Raw replies go to .dispatch/logs and tasks to the store: keep both out of git.
        ensure_state_ignored(layout)
    if not args.no_llm:
        model, server = config.splitter_target()
        common.info(
            f"Asking {model} at {server} to split the goal (a local model can take a minute)..."
        )
    plan = split_goal(
        config,
        layout,
        goal,
        parent=parent,
        max_subtasks=args.max_subtasks,
        use_llm=not args.no_llm,
    )
    for warning in plan.warnings:
        common.info(f"warning: {warning}")
    written = None if args.dry_run else write_plan(store, plan, parent)
    if args.json:
        common.emit_json(_as_json(plan, written, dry_run=args.dry_run))
    else:
        common.write(render(plan, written))
    return 0


def _parent(args: argparse.Namespace, get: Any) -> Task | None:
    if args.parent and args.bead and args.parent != args.bead:
        raise UsageError(
            f"--parent {args.parent} and --bead {args.bead} name different tasks.",
            hint="Give one of them.",
        )
    task_id = args.parent or args.bead
    if not task_id:
        return None
    parent: Task = get(task_id)
    check_parent(parent)
    return parent


def _goal(args: argparse.Namespace, parent: Task | None) -> str:
    goal = (args.goal or "").strip()
    if goal:
        return goal
    if parent is not None:
        return f"{parent.title}\n\n{parent.description}".strip()
    raise UsageError(
        "No goal given.",
        hint='Write it in quotes: split-task "Add a dashboard with cycle time and '
        'throughput", or split an existing task with --parent ID.',
    )


def _as_json(plan: SplitPlan, written: WrittenPlan | None, *, dry_run: bool) -> dict[str, Any]:
    return {
        **plan.to_dict(),
        "dry_run": dry_run,
        "epic": written.epic.model_dump(mode="json") if written else None,
        "tasks": [t.model_dump(mode="json") for t in written.children] if written else [],
    }


def render(plan: SplitPlan, written: WrittenPlan | None) -> str:
    """The plan as a person reads it; with task ids once it is stored."""
    if plan.source == "model":
        tries = "attempt" if plan.attempts == 1 else "attempts"
        how = f"by {plan.model} in {plan.attempts} {tries}"
    else:
        how = "by sentence rules (--no-llm)"
    ids = [t.id for t in written.children] if written else []
    lines = [f"Plan: {len(plan.subtasks)} subtasks {how}"]
    for index, sub in enumerate(plan.subtasks):
        label = ids[index] if ids else f"{index + 1}."
        lines.append(f"  {label} {sub.title}")
        if sub.files:
            new = set(sub.new_files)
            files = ", ".join(f"{p} (new)" if p in new else p for p in sub.files)
            lines.append(f"      files: {files}")
        if sub.depends_on:
            after = [ids[d] if ids else str(d + 1) for d in sub.depends_on]
            lines.append(f"      after: {', '.join(after)}")
    if written is None:
        lines.append("Dry run: nothing was stored.")
    else:
        lines.append(
            f"Stored epic {written.epic.id} ({written.epic.title}) with "
            f"{len(written.children)} tasks. Next: `dispatch-workers --plan` shows their "
            "order, `dispatch-workers --until-idle` runs them."
        )
    return "\n".join(lines)
