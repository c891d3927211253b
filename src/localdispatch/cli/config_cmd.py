"""`localdispatch config check|schema`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import config_schema, load_config, reference_markdown, schema_text
from ..layout import layout_for, protected_patterns
from . import common


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="validate a config file and show what it resolves to")
    check.add_argument(
        "file", nargs="?", type=Path, help="the file (default: --config or the nearest)"
    )
    common.add_common(check)
    check.set_defaults(handler=_check)

    schema = actions.add_parser("schema", help="print the JSON Schema of dispatch_config.json")
    common.add_common(schema, json_flag=False)
    schema.set_defaults(handler=_schema)

    docs = actions.add_parser("docs", help="print the Markdown table of every key (for README)")
    common.add_common(docs, json_flag=False)
    docs.set_defaults(handler=_docs)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.file or args.config)
    layout = layout_for(config)
    resolved = {
        "config_file": str(config.source) if config.source else None,
        "repo": str(layout.repo),
        "task_queue": str(layout.task_queue),
        "worktrees": str(layout.worktrees),
        "protected_paths": protected_patterns(config, layout),
        "settings": config.model_dump(mode="json", by_alias=True, exclude={"schema_ref"}),
    }
    if args.json:
        common.emit_json({"valid": True, **resolved})
        return 0
    where = config.source or "no dispatch_config.json found; built-in defaults"
    common.write(f"OK: {where}")
    common.write(f"  repository:  {layout.repo}")
    common.write(
        f"  base branch: {config.branch}   workers: {config.num_workers}   "
        f"backend: {config.worker_backend}"
    )
    common.write(f"  task store:  {layout.task_queue}")
    common.write(f"  worktrees:   {layout.worktrees}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    del args
    common.write(schema_text().rstrip("\n"))
    return 0


def _docs(args: argparse.Namespace) -> int:
    del args
    common.write(reference_markdown().rstrip("\n"))
    return 0


__all__ = ["config_schema", "register"]
