"""`ingest_suggested_tasks.py` and `localdispatch ingest`: turn suggested_tasks.txt into tasks.

Exit code 0 when the waiting lines were handled (invalid lines are reported and kept, not an
error), 1 when the file could not be taken (held open by another program) or a failure the
message explains, 2 for bad usage or a bad config.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from localdispatch.cli import common
from localdispatch.layout import Layout
from localdispatch.store import open_store
from localdispatch.suggestions import IngestReport, LineIssue, ingest


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be added; change nothing"
    )
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="take the lines from this file instead of suggested_tasks_file "
        "(relative to the current folder)",
    )
    common.add_common(parser)
    parser.set_defaults(handler=run)


def register(sub: Any, name: str, help_text: str) -> None:
    configure(sub.add_parser(name, help=help_text, description=help_text))


def run(args: argparse.Namespace) -> int:
    config, layout = common.load(args)
    store = open_store(config, layout)
    # absolute(), not resolve(): a symlink given as --file must be seen (and refused) as one.
    file = Path(args.file).absolute() if args.file else None
    report = ingest(config, layout, store, file=file, dry_run=args.dry_run)
    if args.json:
        common.emit_json(report.to_dict())
    else:
        common.write(summary(report, layout, file or layout.suggested_tasks))
    for warning in report.warnings:
        common.error(warning)
    return 1 if report.warnings else 0


def summary(report: IngestReport, layout: Layout, source: Path) -> str:
    """The human summary: what was added (with ids), duplicates, invalid lines and notes."""
    lines: list[str] = []
    if report.recovered:
        lines.append(f"Found {_count(report.recovered, 'task')} added by an interrupted run.")
    if report.added:
        verb = "Would add" if report.dry_run else "Added"
        lines.append(f"{verb} {_count(len(report.added), 'task')}:")
        width = max(len(task.id) if task else 1 for _, task in report.added)
        for suggestion, task in report.added:
            ident = (task.id if task else "-").ljust(width)
            lines.append(f"  {ident}  {suggestion.title}  ({suggestion.line.where})")
    if report.duplicates:
        lines.append(f"Skipped {_count(len(report.duplicates), 'duplicate')}:")
        lines.extend(_issues(report.duplicates))
    if report.invalid:
        kept = ""
        if report.rejected_file is not None:
            kept = f", kept in {_shown(report.rejected_file, layout)}"
        lines.append(
            f"Not added: {_count(len(report.invalid), 'invalid line')}{kept} "
            f"(to retry, fix a line and append it to {source.name} again):"
        )
        lines.extend(_issues(report.invalid))
    if report.notes:
        lines.append("Notes:")
        lines.extend(_issues(report.notes))
    if report.skipped:
        lines.append(f"Skipped {_count(report.skipped, 'blank or comment line')}.")
    if report.waiting:
        lines.append(
            f"{_count(report.waiting, 'last line')} without a newline at the end will be "
            "taken by the next run."
        )
    if not (report.added or report.duplicates or report.invalid or report.recovered):
        lines.append(f"No new lines in {_shown(source, layout)}.")
    elif report.dry_run:
        lines.append("Dry run: nothing was changed.")
    return "\n".join(lines)


def _issues(issues: list[LineIssue]) -> list[str]:
    return [f"  {issue.where}: {issue.reason}" for issue in issues]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _shown(path: Path, layout: Layout) -> str:
    try:
        return path.resolve().relative_to(layout.repo.resolve()).as_posix()
    except ValueError:
        return str(path)
