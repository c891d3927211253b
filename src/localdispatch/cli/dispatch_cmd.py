"""`dispatch_workers.py` / `localdispatch dispatch`: run workers, or show --plan / --status."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from rich.console import Console

from localdispatch.cli import common, status_view
from localdispatch.dispatch.loop import Dispatcher
from localdispatch.dispatch.scheduling import WavePlan
from localdispatch.dispatch.summary import format_summary
from localdispatch.dispatch.views import EstimateBasis, plan_snapshot, status_snapshot
from localdispatch.errors import UsageError
from localdispatch.store import open_store


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    configure(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", "-w", type=int, metavar="N", help="workers at once (default: num_workers)"
    )
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="exit when no task is ready, running or waiting (default: keep polling)",
    )
    parser.add_argument(
        "--max-tasks", type=int, metavar="N", help="start at most N worker attempts, then finish"
    )
    parser.add_argument(
        "--plan", action="store_true", help="show what would run now and next, and exit"
    )
    parser.add_argument(
        "--status", action="store_true", help="show tasks, running workers and pending merges"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain progress lines instead of the live view (automatic when not a terminal)",
    )
    common.add_common(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    for flag in ("workers", "max_tasks"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1 (got {value}).")
    if args.plan and args.status:
        raise UsageError("Use --plan or --status, not both.")
    config, layout = common.load(args)
    if args.status:
        data = status_snapshot(config, layout, open_store(config, layout))
        if args.json:
            common.emit_json(data)
        elif status_view.live_capable(sys.stdout) and not args.plain:
            events = status_view.recent_event_lines(layout, progress_line)
            status_view.print_once(Console(), data, events, slots=config.num_workers)
        else:
            common.write(format_status(data))
        return 0
    if args.plan:
        slots = args.workers or config.num_workers
        plan, basis = plan_snapshot(layout, open_store(config, layout).all(), slots)
        if args.json:
            common.emit_json({**plan.as_dict(), "estimate": basis})
        else:
            common.write(format_plan(plan, basis))
        return 0
    live = not args.json and not args.plain and status_view.live_capable(sys.stderr)
    dispatcher = Dispatcher(
        config,
        layout,
        workers=args.workers,
        max_tasks=args.max_tasks,
        until_idle=args.until_idle,
        reporter=None if args.json or live else _progress,
    )
    restore = _install_interrupts(dispatcher)
    try:
        if live:
            view = status_view.LiveStatus(
                config,
                layout,
                open_store(config, layout),
                progress_line,
                slots=args.workers or config.num_workers,
            )
            with view:
                summary = dispatcher.run()
        else:
            summary = dispatcher.run()
    finally:
        restore()
    if args.json:
        common.emit_json(summary.as_dict())
    else:
        common.info(format_summary(summary))
    return summary.exit_code


def _install_interrupts(dispatcher: Dispatcher) -> Callable[[], None]:
    """Ctrl+C once: finish running work; twice: kill it. SIGTERM means "kill now"."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        count = dispatcher.interrupt()
        if count == 1:
            common.info(
                "Stopping: no new work starts; waiting for running workers. "
                "Press Ctrl+C again to kill them and put their tasks back."
            )
        elif count == 2:
            common.info("Killing running workers...")

    def on_terminate(_signum: int, _frame: FrameType | None) -> None:
        while dispatcher.interrupt() < 2:
            pass

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_interrupt)}
    if hasattr(signal, "SIGTERM"):
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_terminate)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


# ---- formatting -------------------------------------------------------------------------


def _progress(event: dict[str, Any]) -> None:
    line = progress_line(event)
    if line:
        common.info(line)


def progress_line(event: dict[str, Any]) -> str | None:
    """One plain line per event worth telling a person about."""
    kind = event.get("event")
    task = event.get("task", "")
    slot = f"[w{event['slot']}] " if event.get("slot") else ""
    if kind == "start":
        return (
            f"{slot}started {task}: {event.get('title', '')} (attempt {event.get('attempt')}, "
            f"pid {event.get('pid')})"
        )
    if kind == "finish":
        return (
            f"{slot}{task} finished in {event.get('secs', 0):.1f} s with "
            f"{event.get('commits', 0)} commit(s): {event.get('outcome')}"
        )
    if kind == "merge_outcome":
        extra = f" -> conflict task {event['conflict_task']}" if event.get("conflict_task") else ""
        status = event.get("status")
        message = str(event.get("message", ""))
        if status == "merged":  # the queue's message already says "merged into main as ..."
            return f"{task} {message}"
        return f"{task} merge: {status}{extra} {message}".rstrip()
    if kind in ("retry", "failed", "requeue", "done"):
        return f"{task} {kind}: {event.get('reason', '')}"
    if kind == "kill":
        return f"{slot}killed {task or ''} pid {event.get('pid', event.get('pids'))}: " + str(
            event.get("reason", "")
        )
    if kind == "model_down":
        return f"Waiting for the model server: {event.get('reason', '')}"
    if kind == "model_up":
        return "The model server answers again; work goes on."
    if kind == "merge_needs_person":
        return f"{task} waits for you: {event.get('reason', '')}"
    if kind == "stale_lock_removed":
        return f"removed stale git lock file(s) {', '.join(event.get('paths', []))}"
    if kind == "checkout_update_finished":
        return "finished an update of your checkout that a crash had cut off"
    if kind == "recovered":
        return f"{task}: recovered {event.get('commits')} commit(s) from an earlier run"
    if kind == "stopping":
        return f"Stopping: waiting for {event.get('running')} running worker(s)."
    return None


def format_status(data: dict[str, Any]) -> str:
    owner = data.get("dispatcher")
    lines = [
        f"Repository: {data['repo']}",
        f"Dispatcher: running (pid {owner['pid']}, since {owner.get('started_at')})"
        if owner
        else "Dispatcher: not running",
        "Tasks: " + ", ".join(f"{n} {status}" for status, n in data["counts"].items() if n),
    ]
    if data["ready"]:
        lines.append(f"Ready: {', '.join(data['ready'][:20])}")
    if data["workers"]:
        lines.append("Workers:")
        for w in data["workers"]:
            lines.append(
                f"  w{w['slot']}  {w['task']}  {w['title'][:50]}  {w['elapsed_secs']} s  "
                f"cpu {w['cpu_percent']}%  mem {w['rss_mb']} MB  pid {w['pid']}"
            )
    if data["merging"]:
        lines.append("Merging:")
        lines.extend(f"  {_describe_pending(item)}" for item in data["merging"])
    person = [item for item in data["pending_merges"] if item.get("person")]
    waiting = [item for item in data["pending_merges"] if not item.get("person")]
    if person:
        lines.append("Waiting for you:")
        for item in person:
            lines.append(f"  {_describe_pending(item)}")
            steps = item.get("steps") or []
            lines.extend(f"    {n}. {step}" for n, step in enumerate(steps, start=1))
    if waiting:
        moves = "while a dispatcher runs" if owner else "when a dispatcher runs"
        lines.append(f"Waiting to merge (goes on by itself {moves}):")
        lines.extend(f"  {_describe_pending(item)}" for item in waiting)
    if data["failed"]:
        lines.append("Failed:")
        lines.extend(f"  {f['task']}  {f['title'][:50]}: {f['reason']}" for f in data["failed"])
    return "\n".join(lines)


def _describe_pending(item: Any) -> str:
    if isinstance(item, dict):
        parts = [str(item.get(k)) for k in ("task", "task_id", "branch", "reason") if item.get(k)]
        return "  ".join(parts)
    return str(item)


def format_plan(plan: WavePlan, basis: str) -> str:
    """The --plan text. With estimates from an imported plan, each task says where its own
    estimate came from: the plan, or history (the default before there is any)."""
    from_plan = basis.from_plan if isinstance(basis, EstimateBasis) else {}
    fallback = basis.fallback if isinstance(basis, EstimateBasis) else "from history"

    def source(task_id: str, secs: float) -> str:
        if not from_plan:
            return ""
        where = "from the plan" if task_id in from_plan else fallback
        return f"  [{_duration(secs)}, {where}]"

    lines = [f"Plan for {plan.slots} worker(s); estimate: {basis}."]
    if plan.running:
        lines.append("Running now: " + ", ".join(run.task_id for run in plan.running))
    for number, wave in enumerate(plan.waves, start=1):
        when = "now" if wave[0].start == 0 else f"at +{wave[0].start / 60:.1f} min"
        lines.append(f"Wave {number} ({when}):")
        lines.extend(
            f"  {run.task_id}  {run.title}{source(run.task_id, run.end - run.start)}"
            for run in wave
        )
    if plan.blocked:
        lines.append(
            "Blocked (a dependency failed, was cancelled or is missing): " + ", ".join(plan.blocked)
        )
    lines.append(
        f"Estimated time: {plan.parallel_secs / 60:.1f} min in parallel, "
        f"{plan.sequential_secs / 60:.1f} min one by one (speed-up {plan.speedup:.2f}x)."
    )
    return "\n".join(lines)


def _duration(secs: float) -> str:
    return f"{secs / 60:.1f} min" if secs < 90 * 60 else f"{secs / 3600:.1f} h"
