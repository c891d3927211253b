"""`localdispatch demo`: the whole cycle in a throwaway repository (no Ollama, no Aider)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from localdispatch.cli import common, status_view
from localdispatch.cli.dispatch_cmd import progress_line
from localdispatch.demo.checks import DemoResult
from localdispatch.demo.run import Demo, DemoOptions, SplitInfo
from localdispatch.dispatch.summary import format_summary
from localdispatch.testing import demo_project


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(
        name,
        help=help_text,
        description="Run the whole cycle in a throwaway repository: a stub model splits a goal, "
        "scripted workers edit and commit in parallel, one planned merge conflict becomes a "
        "conflict task that a worker resolves, and everything is merged into main. Needs only "
        "Python and git (no Ollama, no Aider).",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="PATH",
        help="where to create the demo repository (a new or empty folder; default: a new "
        "folder in the system's temp folder)",
    )
    parser.add_argument(
        "--workers", "-w", type=int, default=3, metavar="N", help="workers at once (2-8, default 3)"
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=DemoOptions.pace_secs,
        metavar="SECS",
        help=f"how long each scripted worker works on a task (default {DemoOptions.pace_secs:g})",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="delete the demo repository at the end if everything worked (default: keep it)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain progress lines even in a terminal"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    demo = Demo(DemoOptions(directory=args.dir, workers=args.workers, pace_secs=args.pace))
    say = common.info
    say("localdispatch demo: a stub model and scripted workers; no Ollama or Aider needed.")
    demo.create_repo()
    say(f"[1/4] Created the sample project 'statkit' on main in {demo.repo}")
    split = demo.split()
    say(f"[2/4] Split the goal with the stub model at {split.server_url}:")
    for line in plan_lines(split):
        say("      " + line)
    say(f"[3/4] Running {args.workers} workers until every task is merged...")
    live = not args.json and not args.plain and status_view.live_capable(sys.stderr)
    restore = _install_interrupts(demo)
    try:
        if live:
            view = status_view.LiveStatus(
                demo.config, demo.layout, demo.store(), progress_line, slots=args.workers
            )
            with view:
                demo.dispatch()
        else:
            demo.dispatch(_progress)
    finally:
        restore()
    say(f"      {format_summary(demo.summary)}")
    result = demo.result()
    if result.ok and args.cleanup:
        result.kept = not demo.remove()
    if args.json:
        common.emit_json(result.as_dict())
    else:
        say("[4/4] Summary")
        common.write(format_result(result))
    if result.interrupted and not result.timed_out:
        return 130
    if not result.ok:
        common.error(
            f"The demo did not finish cleanly: {result.cause.rstrip('.')}. The repository is "
            f"kept at {result.repo} for a look (the worker logs are in .dispatch/logs)."
        )
        return 1
    return 0


def _progress(event: dict[str, Any]) -> None:
    line = progress_line(event)
    if line:
        common.info("      " + line)


def _install_interrupts(demo: Demo) -> Callable[[], None]:
    """Ctrl+C stops the demo at once: its workers are killed and the repository is kept."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        common.info("Stopping the demo: killing its workers...")
        demo.interrupt()

    previous = signal.signal(signal.SIGINT, on_interrupt)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


# ---- formatting -------------------------------------------------------------------------


def plan_lines(split: SplitInfo) -> list[str]:
    epic, children = split.written.epic, split.written.children
    lines = [f"{epic.id}  epic  {epic.title}"]
    for task in children:
        after = f"  (after {', '.join(task.depends_on)})" if task.depends_on else ""
        lines.append(f"{task.id}  {task.title}: {', '.join(task.files)}{after}")
    lines.extend(f"warning: {w}" for w in split.warnings)
    shared = " and ".join(demo_project.SHARED_FILES)
    pair = [children[i].id for i in demo_project.conflicting() if i < len(children)]
    lines.append(
        f"Planned conflict: {' and '.join(pair)} name different files, so they run at once, "
        f"but both also add a line at the end of {shared}."
    )
    return lines


def format_result(result: DemoResult) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
    kinds = {
        kind: sum(1 for t in result.tasks if t["kind"] == kind)
        for kind in ("epic", "task", "conflict")
    }
    merged = [m for m in result.merges if m["status"] == "merged"]
    retried = sum(1 for m in merged if m.get("retried"))
    lines = [
        f"Tasks: {counts} ({kinds['task']} tasks, {kinds['epic']} epic, "
        f"{kinds['conflict']} conflict task)",
        f"Merges into main: {len(merged)}" + (f" ({retried} after a conflict)" if retried else ""),
    ]
    for conflict in result.conflicts:
        lines.append(
            f"Conflict: merging {conflict['branch']} ({conflict['for_task']}) conflicted in "
            f"{', '.join(conflict['files']) or 'some files'}; it became {conflict['task']}, "
            f"which is {conflict['status']}."
        )
        lines.extend(f"  worker: {line}" for line in conflict["resolution"])
        if conflict["merged_after_retry"]:
            lines.append(
                f"  The merge was retried and landed as {str(conflict['merged_commit'])[:10]}; "
                f"{conflict['for_task']} is {conflict['for_task_status']}."
            )
    lines.append("The finished project: python -m statkit " + " ".join(demo_project.REPORT_ARGS))
    lines.extend(f"  {line}" for line in result.report_output.splitlines())
    lines.append(
        f"Time: {result.elapsed_secs:.1f} s (split {result.split_secs:.1f} s, "
        f"workers and merges {result.dispatch_secs:.1f} s)"
    )
    lines.append("main:")
    lines.extend(f"  {line}" for line in result.main_log)
    failed = [c for c in result.checks if not c.ok]
    if failed:
        lines.append("Checks failed:")
        lines.extend(f"  {c.name}: {c.detail}" for c in failed)
    else:
        lines.append("Checks: all passed (" + ", ".join(c.name for c in result.checks) + ")")
    if result.kept:
        lines += [
            f"The repository is at {result.repo}",
            "Look around, then delete the folder (it is only a demo):",
            f'  cd "{result.repo}"',
            "  localdispatch tasks list --all",
            "  git log --graph --oneline",
        ]
    else:
        lines.append(f"The repository {result.repo} was deleted (--cleanup).")
    return "\n".join(lines)
