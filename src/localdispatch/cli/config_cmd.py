"""`localdispatch config check|schema`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from localdispatch.cli import common
from localdispatch.config import (
    CONFIG_FILENAME,
    Config,
    load_config,
    reference_markdown,
    repository_top,
    schema_text,
)
from localdispatch.errors import ConfigError, DispatchError, GitError
from localdispatch.git.branches import check_repository
from localdispatch.layout import Layout, layout_for, protected_patterns


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser(
        "check",
        help="validate a config file, show what it resolves to, and check that the repository "
        "has what dispatch needs (a commit and the base branch)",
    )
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
    """Exit 0 when the config is valid and the repository is ready for dispatch, 2 for a bad
    config (raised by loading it), 1 when the repository is not ready (the words dispatch
    would use, so the fix is the same)."""
    config = load_config(args.file or args.config)
    layout = layout_for(config)
    base_tip, problem = _repository_state(config, layout)
    resolved = {
        "config_file": str(config.source) if config.source else None,
        "repo": str(layout.repo),
        "task_queue": str(layout.task_queue),
        "worktrees": str(layout.worktrees),
        "protected_paths": protected_patterns(config, layout),
        "settings": config.model_dump(mode="json", by_alias=True, exclude={"schema_ref"}),
        "repository": {
            "ready": problem is None,
            "base_tip": base_tip,
            "problem": str(problem) if problem else None,
        },
    }
    if args.json:
        common.emit_json({"valid": True, **resolved})
        if problem is not None:
            common.error(str(problem))
            return problem.exit_code
        return 0
    where = config.source or "no dispatch_config.json found; built-in defaults"
    verdict = "OK" if problem is None else "valid config, but the repository is not ready"
    common.write(f"{verdict}: {where}")
    common.write(f"  repository:  {layout.repo}")
    common.write(
        f"  base branch: {config.branch}   workers: {config.num_workers}   "
        f"backend: {config.worker_backend}"
    )
    common.write(f"  task store:  {layout.task_queue}")
    common.write(f"  worktrees:   {layout.worktrees}")
    if problem is not None:
        raise problem
    common.write(f"  base tip:    {base_tip}")
    return 0


def _repository_state(config: Config, layout: Layout) -> tuple[str | None, DispatchError | None]:
    """The base branch's tip, or what dispatch would refuse about the repository."""
    try:
        tip = check_repository(layout.repo, config.branch)
    except GitError as exc:
        return None, exc
    top = repository_top(layout.repo)
    if top is not None and top != layout.repo.resolve():
        where = config.source or CONFIG_FILENAME
        return None, ConfigError(
            f"{where}: repo_root {config.repo_root!r} resolves to {layout.repo}, which is a "
            f"folder inside the git repository {top}, not its top level;",
            hint=f'set "repo_root" to {_relative_root(config, top)!r} (localdispatch works on '
            "a whole repository).",
            path=where,
            key="repo_root",
        )
    return tip, None


def _relative_root(config: Config, top: Path) -> str:
    """``top`` as a repo_root value: relative to the config's folder when it can be."""
    base = config.source.parent if config.source else Path.cwd()
    try:
        return Path(os.path.relpath(top, base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(top)


def _schema(args: argparse.Namespace) -> int:
    del args
    common.write(schema_text().rstrip("\n"))
    return 0


def _docs(args: argparse.Namespace) -> int:
    del args
    common.write(reference_markdown().rstrip("\n"))
    return 0


