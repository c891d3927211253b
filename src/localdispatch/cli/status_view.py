"""The live status picture: each slot with its task, elapsed time, CPU and memory; the task
counts; what waits to merge and why; the last events.

One renderer serves both ``--status`` (printed once) and the live view while the dispatcher
runs (``rich.live.Live``, refreshed from a background thread). When the output is not a
terminal (CI, a file), the caller uses plain progress lines instead: rich is only used where
it can redraw in place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from localdispatch.config import Config
from localdispatch.dispatch.views import status_snapshot
from localdispatch.events import EventLog
from localdispatch.layout import Layout
from localdispatch.store import TaskStore

EVENT_LINES = 6


def live_capable(stream: TextIO) -> bool:
    """A live view needs a real terminal that can redraw; CI logs and files get plain lines."""
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def counts_line(data: dict[str, Any]) -> Text:
    """open · running · waiting to merge · done · failed, from one status snapshot."""
    counts = data["counts"]
    running = len(data["workers"])
    waiting = len(data["merging"]) + len(data["pending_merges"])
    parts = [
        ("open", counts.get("open", 0), "cyan"),
        ("running", running, "yellow"),
        ("waiting to merge", waiting, "magenta"),
        ("done", counts.get("done", 0), "green"),
        ("failed", counts.get("failed", 0), "red"),
    ]
    text = Text()
    for number, (label, value, style) in enumerate(parts):
        if number:
            text.append("  ·  ", style="dim")
        text.append(f"{value} ", style=f"bold {style}" if value else "dim")
        text.append(label, style=style if value else "dim")
    return text


def slots_table(data: dict[str, Any], slots: int | None = None) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column, justify in (
        ("slot", "left"),
        ("task", "left"),
        ("title", "left"),
        ("elapsed", "right"),
        ("cpu", "right"),
        ("mem", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=column != "title")  # type: ignore[arg-type]
    busy = {w["slot"]: w for w in data["workers"]}
    for item in data["merging"]:
        busy.setdefault(item["slot"], {**item, "merging": True})
    for slot in range(1, max([slots or 0, *busy.keys(), 0]) + 1):
        worker = busy.get(slot)
        if worker is None:
            table.add_row(f"w{slot}", "-", Text("idle", style="dim"), "", "", "")
            continue
        elapsed = worker.get("elapsed_secs")
        title = Text(str(worker.get("title", ""))[:60])
        if worker.get("merging"):
            title.append("  (merging)", style="magenta")
        table.add_row(
            f"w{slot}",
            str(worker["task"]),
            title,
            _duration(elapsed),
            f"{worker.get('cpu_percent', 0):.0f}%" if "cpu_percent" in worker else "",
            f"{worker.get('rss_mb', 0):.0f} MB" if "rss_mb" in worker else "",
        )
    return table


def render(data: dict[str, Any], events: list[str], *, slots: int | None = None) -> RenderableType:
    owner = data.get("dispatcher")
    header = Text("localdispatch ", style="bold")
    header.append(str(data["repo"]), style="dim")
    if owner:
        header.append(f"   dispatcher pid {owner.get('pid')}", style="dim")
    parts: list[RenderableType] = [header, counts_line(data), slots_table(data, slots)]
    person = [item for item in data["pending_merges"] if item.get("person")]
    waiting = [item for item in data["pending_merges"] if not item.get("person")]
    if person:
        parts.append(Text("waiting for you:", style="bold red"))
        for item in person[:5]:
            parts.append(Text("  " + _pending(item), style="red"))
            parts.extend(
                Text(f"    {n}. {step}", style="red")
                for n, step in enumerate(item.get("steps") or [], start=1)
            )
    if waiting:
        parts.append(Text("waiting to merge:", style="bold magenta"))
        for item in waiting[:5]:
            parts.append(Text("  " + _pending(item), style="magenta"))
    if data["failed"]:
        parts.append(Text(f"failed: {', '.join(f['task'] for f in data['failed'][:10])}", "red"))
    if events:
        parts.append(Text("recent:", style="bold"))
        parts.extend(Text("  " + line, style="dim") for line in events[-EVENT_LINES:])
    return Group(*parts)


def recent_event_lines(
    layout: Layout, describe: Callable[[dict[str, Any]], str | None], last: int = 60
) -> list[str]:
    lines = []
    for event in EventLog(layout.events).read(last=last):
        line = describe(event)
        if line:
            lines.append(f"{str(event.get('ts', ''))[11:19]} {line}")
    return lines[-EVENT_LINES:]


def print_once(
    console: Console, data: dict[str, Any], events: list[str], slots: int | None = None
) -> None:
    console.print(render(data, events, slots=slots))


class LiveStatus:
    """Redraws the picture about once a second while the dispatcher runs."""

    def __init__(
        self,
        config: Config,
        layout: Layout,
        store: TaskStore,
        describe: Callable[[dict[str, Any]], str | None],
        *,
        slots: int,
        console: Console | None = None,
        interval: float = 1.0,
    ) -> None:
        self._config, self._layout, self._store = config, layout, store
        self._describe = describe
        self._slots = slots
        self._interval = interval
        self._stop = threading.Event()
        self._live = Live(console=console or Console(stderr=True), auto_refresh=False)
        self._thread = threading.Thread(target=self._run, name="live-status", daemon=True)

    def __enter__(self) -> LiveStatus:
        self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._redraw()  # the final picture stays on screen
        self._live.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._redraw()
            self._stop.wait(self._interval)

    def _redraw(self) -> None:
        try:
            data = status_snapshot(self._config, self._layout, self._store, sample_secs=0.1)
            events = recent_event_lines(self._layout, self._describe)
            renderable = render(data, events, slots=self._slots)
        except Exception as exc:  # noqa: BLE001 - a broken redraw must never stop the work
            renderable = Text(f"(status unavailable: {exc})", style="dim")
        self._live.update(renderable, refresh=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes else f"{secs} s"


def _pending(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    task = item.get("task") or item.get("task_id") or ""
    reason = item.get("reason") or item.get("status") or ""
    return f"{task} {item.get('branch', '')}: {reason}".strip()
