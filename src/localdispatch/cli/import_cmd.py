"""`localdispatch import PATH`: a Conductor track or a task-dispatcher YAML file as tasks.

Exit code 0 when the plan was imported (or had nothing new), 2 when the file cannot be used
(the message names the file and line, and the fix), 1 for a failure the message explains.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from localdispatch.cli import common
from localdispatch.layout import ensure_state_ignored
from localdispatch.plans import ImportResult, NewTask, import_plan, load_plan
from localdispatch.statefile import StateLock
from localdispatch.store import open_store

FORMATS = {"conductor": "Conductor track plan", "task-dispatcher": "task-dispatcher file"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="a Conductor track folder (conductor/tracks/<id>) or its plan.md, a track id, or "
        "a task-dispatcher YAML file",
    )
    parser.add_argument(
        "--parent", metavar="ID", help="put the plan's epic under this task or epic"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be added; store nothing"
    )
    common.add_common(parser)
    parser.set_defaults(handler=run)


def register(sub: Any, name: str, help_text: str) -> None:
    configure(sub.add_parser(name, help=help_text, description=help_text))


def run(args: argparse.Namespace) -> int:
    config, layout = common.load(args)
    plan = load_plan(Path(args.path), layout.repo)
    store = open_store(config, layout)
    if args.dry_run:
        result = import_plan(store, plan, parent_id=args.parent, dry_run=True)
    else:
        ensure_state_ignored(layout)
        # Finding what is already imported and adding the rest is one step: two imports of
        # the same file at once must not both add it.
        with StateLock(layout.import_lock, what="plan imports").hold():
            result = import_plan(store, plan, parent_id=args.parent)
    if args.json:
        common.emit_json(result.to_dict())
    else:
        common.write(render(result))
    return 0


def render(result: ImportResult) -> str:
    """What was (or would be) added, what was already there, what was left out, and why."""
    plan = result.plan
    lines = [f"{FORMATS[plan.format]} {plan.source}: {plan.epic.title}"]
    if result.added:
        verb = "Would add" if result.dry_run else "Added"
        lines.append(f"{verb} {_count(len(result.added), 'task')}:")
        width = max(len(entry.label) for entry in result.added)
        for entry in result.added:
            lines.extend(_entry_lines(entry, width))
    if result.already:
        lines.append(
            f"Already imported, skipped ({_count(len(result.already), 'task')}; a second "
            "import changes nothing in them):"
        )
        width = max(len(task.id) for _, task in result.already)
        for item, task in result.already:
            lines.append(f"  {task.id.ljust(width)}  {task.title}  ({item.item}, {task.status})")
    if plan.left_out:
        lines.append(f"Not imported from the plan ({len(plan.left_out)}):")
        lines.extend(f"  line {gone.line}: {gone.title}: {gone.reason}" for gone in plan.left_out)
    if plan.warnings:
        lines.append("Warnings:")
        lines.extend(f"  {warning}" for warning in plan.warnings)
    lines.append(_closing(result))
    return "\n".join(lines)


def _entry_lines(entry: NewTask, width: int) -> list[str]:
    item = entry.item
    kind = "epic  " if item.kind == "epic" else ""
    where = [f"line {item.line}"] if item.line else []
    if entry.parent:
        where.insert(0, f"in {entry.parent}")
    suffix = f"  ({', '.join(where)})" if where else ""
    lines = [f"  {entry.label.ljust(width)}  {kind}{item.title}{suffix}"]
    pad = " " * (width + 4)
    if entry.depends_on:
        lines.append(f"{pad}after: {', '.join(entry.depends_on)}")
    if item.files:
        lines.append(f"{pad}files: {', '.join(item.files)}")
    if item.estimate_secs is not None:
        lines.append(f"{pad}estimate: {item.estimate_secs / 3600:g} h (from the plan)")
    return lines


def _closing(result: ImportResult) -> str:
    tasks = [entry for entry in result.added if entry.item.kind == "task"]
    if not result.added:
        if result.already:
            return "Nothing new to add: everything in the plan is already imported."
        return "Nothing to import: every task of the plan is done or left out."
    if result.dry_run:
        return "Dry run: nothing was stored. Run it again without --dry-run to add them."
    return (
        f"Stored {_count(len(tasks), 'task')}. `dispatch-workers --plan` shows the order they "
        "will run in; `dispatch-workers` starts them."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
