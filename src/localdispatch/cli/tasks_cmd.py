"""`localdispatch tasks add|list|show|ready|close|reopen|cancel|dep`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from localdispatch.cli import common
from localdispatch.dispatch.scheduling import rank_ready
from localdispatch.dispatch.state import load_owner
from localdispatch.errors import UsageError
from localdispatch.layout import Layout, ensure_state_ignored
from localdispatch.paths import confine_all
from localdispatch.store import TaskDraft, TaskStore, open_store
from localdispatch.tasks import ACTIVE, KINDS, STATUSES, Task, blockers, by_id, children_of


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add a task")
    add.add_argument("title", help="what the task is, in one line")
    add.add_argument("-d", "--description", default="", help="the details a worker needs")
    add.add_argument(
        "-f",
        "--files",
        action="append",
        metavar="PATHS",
        help="files the task touches, relative to the current folder as git takes them "
        "(comma-separated or repeated); paths outside the repository or in .git are refused",
    )
    add.add_argument(
        "--depends-on",
        "--after",
        action="append",
        metavar="IDS",
        dest="depends_on",
        help="ids this task waits for (comma-separated or repeated)",
    )
    add.add_argument(
        "-p",
        "--priority",
        type=int,
        default=2,
        choices=range(5),
        metavar="0-4",
        help="0 is the highest; default 2",
    )
    add.add_argument("--parent", metavar="ID", help="the epic this task belongs to")
    add.add_argument("--kind", choices=KINDS, default="task")
    add.add_argument(
        "--from", dest="discovered_from", metavar="ID", help="the task this one was discovered from"
    )
    _finish(add, _add)

    lister = actions.add_parser("list", help="list tasks (open, running and failed by default)")
    lister.add_argument("--all", action="store_true", help="include done and cancelled tasks")
    lister.add_argument("--status", action="append", choices=STATUSES, help="only these statuses")
    lister.add_argument("--kind", action="append", choices=KINDS, help="only these kinds")
    lister.add_argument("--parent", metavar="ID", help="only children of this epic")
    _finish(lister, _list)

    show = actions.add_parser("show", help="show one task in full")
    show.add_argument("id")
    _finish(show, _show)

    ready = actions.add_parser("ready", help="tasks that can start now, in dispatch order")
    _finish(ready, _ready)

    close = actions.add_parser("close", help="close tasks as done (or --failed)")
    close.add_argument("ids", nargs="+", metavar="ID")
    close.add_argument("-r", "--reason", help="why it is closed")
    close.add_argument("--failed", action="store_true", help="close as failed instead of done")
    _finish(close, _close)

    reopen = actions.add_parser("reopen", help="put tasks back to open")
    reopen.add_argument("ids", nargs="+", metavar="ID")
    _finish(reopen, _reopen)

    cancel = actions.add_parser("cancel", help="cancel tasks (they will not run)")
    cancel.add_argument("ids", nargs="+", metavar="ID")
    cancel.add_argument("-r", "--reason", help="why it is cancelled")
    _finish(cancel, _cancel)

    dep = actions.add_parser("dep", help="add or remove a dependency: dep add|remove ID DEP")
    dep.add_argument("op", choices=("add", "remove", "rm"))
    dep.add_argument("id", help="the task that waits")
    dep.add_argument("dep", help="the task it waits for")
    _finish(dep, _dep)


def _finish(parser: argparse.ArgumentParser, handler: Any) -> None:
    common.add_common(parser)
    parser.set_defaults(handler=handler)


def _store(args: argparse.Namespace, *, writing: bool = False) -> TaskStore:
    config, layout = common.load(args)
    if writing:
        ensure_state_ignored(layout)
    return open_store(config, layout)


def confined_files(raws: list[str], layout: Layout, cwd: Path) -> list[str]:
    """``--files`` as repo-relative paths, confined exactly as a model's or a suggestion's.

    A path is taken relative to ``cwd`` when that is inside the repository (as git takes
    paths), else relative to the repository's top level. Any path outside the repository or
    into .git refuses the whole command, so nothing half-right is stored.
    """
    here = layout.repo_relative(cwd) or ""
    confined = confine_all(raws, relative_to=here)
    if confined.dropped:
        listed = "; ".join(f"'{raw}' {why}" for raw, why in confined.dropped)
        raise UsageError(
            f"tasks add --files: {listed}. Nothing was added.",
            hint=f"Give paths of files inside the repository {layout.repo}, relative to the "
            "folder you are in (as git takes them), and none under .git.",
            key="--files",
        )
    return confined.kept


# ---- handlers ---------------------------------------------------------------------------


def _add(args: argparse.Namespace) -> int:
    config, layout = common.load(args)
    files = confined_files(common.csv_list(args.files), layout, Path.cwd())
    ensure_state_ignored(layout)
    store = open_store(config, layout)
    task = store.add(
        TaskDraft(
            title=args.title,
            description=args.description,
            kind=args.kind,
            priority=args.priority,
            files=files,
            depends_on=common.csv_list(args.depends_on),
            parent=args.parent,
            discovered_from=args.discovered_from,
        )
    )
    _print_tasks(args, [task], f"Added {task.id}: {task.title}")
    return 0


def _list(args: argparse.Namespace) -> int:
    tasks = _store(args).all()
    if args.status:
        wanted = set(args.status)
    elif args.all:
        wanted = set(STATUSES)
    else:
        wanted = {"open", "in_progress", "failed"}
    shown = [
        t
        for t in tasks
        if t.status in wanted
        and (not args.kind or t.kind in args.kind)
        and (not args.parent or t.parent == args.parent)
    ]
    if args.json:
        common.emit_json([t.model_dump(mode="json") for t in shown])
    elif not shown:
        common.info("No tasks." if not tasks else "No tasks match (try --all).")
    else:
        common.write(table(shown, tasks))
    return 0


def _show(args: argparse.Namespace) -> int:
    store = _store(args)
    task = store.get(args.id)
    if args.json:
        common.emit_json(task.model_dump(mode="json"))
        return 0
    everything = store.all()
    common.write(describe(task, everything))
    return 0


def _ready(args: argparse.Namespace) -> int:
    everything = _store(args).all()
    ranked = rank_ready(everything)
    if args.json:
        common.emit_json([t.model_dump(mode="json") for t in ranked])
    elif not ranked:
        common.info("No task is ready.")
    else:
        common.write(table(ranked, everything))
    return 0


def _close(args: argparse.Namespace) -> int:
    status = "failed" if args.failed else "done"
    return _change(args, lambda store, task_id: store.close(task_id, args.reason, status), "Closed")


def _reopen(args: argparse.Namespace) -> int:
    return _change(args, lambda store, task_id: [store.reopen(task_id)], "Reopened")


def _cancel(args: argparse.Namespace) -> int:
    reason = args.reason or "cancelled"
    return _change(
        args, lambda store, task_id: store.close(task_id, reason, "cancelled"), "Cancelled"
    )


def _change(
    args: argparse.Namespace,
    act: Callable[[TaskStore, str], list[Task]],
    verb: str,
) -> int:
    """Apply ``act`` to each task, then say what happens next (a stopped worker, a merge
    that is retried): the person who closed a task should not have to guess."""
    config, layout = common.load(args)
    ensure_state_ignored(layout)
    store = open_store(config, layout)
    running = load_owner(layout) is not None
    changed: list[Task] = []
    lines: list[str] = []
    for task_id in args.ids:
        before = store.get(task_id)
        done = act(store, task_id)
        changed.extend(done)
        lines.extend(f"{verb} {t.id} ({t.status}): {t.title}" for t in done)
        note = next_step_note(before, done[0], config.branch, running)
        if note:
            lines.append(f"  {note}")
    _print_tasks(args, changed, "\n".join(lines))
    return 0


def next_step_note(before: Task, after: Task, base: str, running: bool) -> str | None:
    """What the change of ``before`` into ``after`` sets in motion, in one sentence."""
    who = "the running dispatcher" if running else "the next dispatcher run"
    when = "now" if running else "(dispatch-workers --until-idle)"
    if after.kind == "conflict" and after.status == "done" and after.branch:
        origin = f"; {after.discovered_from} is done once it lands" if after.discovered_from else ""
        return f"Merging {after.branch} into {base} is retried by {who} {when}{origin}."
    if after.kind == "conflict" and after.status == "open":
        return f"A worker gets the conflict of {after.branch} again from {who}."
    if after.kind == "conflict" and after.status == "cancelled":
        return f"The merge of {after.branch} is given up; {after.discovered_from} fails."
    if before.status == "in_progress":
        if running:
            return "Its worker is stopped by the running dispatcher; nothing of it is merged."
        return "No dispatcher is running; nothing of it will be merged."
    return None


def _dep(args: argparse.Namespace) -> int:
    store = _store(args, writing=True)
    if args.id == args.dep and args.op == "add":
        raise UsageError(f"A task cannot depend on itself ({args.id}).")
    if args.op == "add":
        task = store.add_dependency(args.id, args.dep)
        message = f"{task.id} now waits for {args.dep}."
    else:
        task = store.remove_dependency(args.id, args.dep)
        message = f"{task.id} no longer waits for {args.dep}."
    _print_tasks(args, [task], message)
    return 0


# ---- formatting -------------------------------------------------------------------------


def _print_tasks(args: argparse.Namespace, tasks: list[Task], message: str) -> None:
    if args.json:
        data = [t.model_dump(mode="json") for t in tasks]
        common.emit_json(data[0] if len(data) == 1 else data)
    else:
        common.write(message)


def table(tasks: Iterable[Task], context: Iterable[Task]) -> str:
    """One line per task: id, status, priority, kind, title and what it still waits for."""
    index = by_id(context)
    rows = []
    for task in tasks:
        waits = blockers(task, index) if task.status in ACTIVE else []
        suffix = f"  [waits for {', '.join(waits)}]" if waits else ""
        rows.append((task.id, task.status, f"P{task.priority}", task.kind, task.title + suffix))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines: list[str] = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        lines.append("  ".join([*cells, row[4]]))
    return "\n".join(lines)


def describe(task: Task, everything: list[Task]) -> str:
    index = by_id(everything)
    lines = [
        f"{task.id}  {task.title}",
        f"  status: {task.status}   kind: {task.kind}   "
        f"priority: P{task.priority}   attempts: {task.attempts}",
    ]
    for label, value in (
        ("files", ", ".join(task.files)),
        ("depends on", ", ".join(task.depends_on)),
        ("waiting for", ", ".join(blockers(task, index)) if task.status in ACTIVE else ""),
        ("parent", task.parent or ""),
        ("children", ", ".join(t.id for t in children_of(task.id, everything))),
        ("discovered from", task.discovered_from or ""),
        ("branch", task.branch or ""),
        ("merged commit", task.merged_commit or ""),
        ("closed because", task.closed_reason or ""),
    ):
        if value:
            lines.append(f"  {label}: {value}")
    lines.append(f"  created: {task.created_at}   updated: {task.updated_at}")
    if task.description:
        lines.append("")
        lines.extend("  " + line for line in task.description.splitlines())
    return "\n".join(lines)
