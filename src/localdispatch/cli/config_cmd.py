"""`localdispatch config check|set|schema|docs`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from localdispatch.cli import common
from localdispatch.config import (
    CONFIG_FILENAME,
    SCHEMA_REF,
    Config,
    find_config,
    load_config,
    parse_value,
    reference_markdown,
    repository_top,
    schema_text,
    set_values,
    user_config_path,
)
from localdispatch.errors import ConfigError, DispatchError, GitError, UsageError
from localdispatch.git.branches import check_repository
from localdispatch.layout import Layout, ensure_state_ignored, layout_for, protected_patterns
from localdispatch.statefile import write_atomic


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

    setter = actions.add_parser(
        "set",
        help="set keys in the repository's dispatch_config.json (created if missing) or, "
        "with --user, in your user config; checked before anything is written",
        description="Set one key, or several at once (KEY VALUE KEY VALUE ...: keys that only "
        "make sense together, such as worker_backend and worker_command). VALUE is read as "
        'JSON when it parses (3, true, \'["pytest","-q"]\', null) and as text otherwise; '
        "quote it as JSON ('\"2024\"') to keep text that looks like a number. Sections take "
        "dotted keys (ollama.host).",
    )
    setter.add_argument("key", metavar="KEY", help="e.g. num_workers, ollama.host")
    setter.add_argument("value", metavar="VALUE", help="JSON, or text")
    setter.add_argument(
        "more", nargs="*", metavar="KEY VALUE", help="more keys and values, set together"
    )
    setter.add_argument(
        "--user",
        action="store_true",
        help=f"write the user config ({str(user_config_path()).replace('%', '%%')}), read "
        "under every repository's file: the place for this machine's paths (aider_cmd, "
        "ollama.host, llm.base_url)",
    )
    common.add_common(setter)
    setter.set_defaults(handler=_set)

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
    settings = config.model_dump(mode="json", by_alias=True, exclude={"schema_ref"})
    resolved = {
        "config_file": str(config.source) if config.source else None,
        "user_config_file": str(config.user_source or user_config_path()),
        "user_config_found": config.user_source is not None,
        "repo": str(layout.repo),
        "task_queue": str(layout.task_queue),
        "worktrees": str(layout.worktrees),
        "protected_paths": protected_patterns(config, layout),
        "settings": settings,
        "origins": {key: str(origin) for key, origin in config.origins.items()},
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
    user_file = config.user_source or f"none ({user_config_path()} does not exist)"
    common.write(f"  user config: {user_file}")
    common.write(f"  repository:  {layout.repo}")
    common.write(
        f"  base branch: {config.branch}   workers: {config.num_workers}   "
        f"backend: {config.worker_backend}"
    )
    common.write(f"  task store:  {layout.task_queue}")
    common.write(f"  slots:       {layout.worktrees}")
    for line in _origin_lines(config, settings):
        common.write(line)
    if problem is not None:
        raise problem
    common.write(f"  base tip:    {base_tip}")
    return 0


def _origin_lines(config: Config, settings: dict[str, Any]) -> list[str]:
    """Every value a file set, under the file it came from; the rest are defaults."""
    by_file: dict[Path, list[str]] = {}
    for key, origin in config.origins.items():
        by_file.setdefault(origin, []).append(key)
    if not by_file:
        return ["  settings:    every key has its default"]
    lines = []
    for origin, keys in by_file.items():
        what = " (user config)" if origin == config.user_source else ""
        lines.append(f"  set in {origin}{what}:")
        width = max(len(key) for key in keys)
        lines.extend(
            f"    {key.ljust(width)} = {json.dumps(_value_at(settings, key), ensure_ascii=False)}"
            for key in keys
        )
    lines.append("  every other key has its default")
    return lines


def _value_at(settings: dict[str, Any], key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _set(args: argparse.Namespace) -> int:
    """Write keys into the repository's file or the user config, all checked first."""
    if len(args.more) % 2:
        raise UsageError(
            f"config set takes KEY VALUE pairs; {args.more[-1]!r} has no value.",
            hint="Give each key its value: config set KEY VALUE [KEY VALUE ...].",
        )
    raw = {args.key: args.value, **dict(zip(args.more[::2], args.more[1::2], strict=True))}
    target = user_config_path() if args.user else _repository_file(args.config)
    created = not target.exists()
    values = {key: parse_value(text, key) for key, text in raw.items()}
    try:
        notes = set_values(target, values, user=args.user)
    except ConfigError as exc:
        for key, value in values.items():
            if not isinstance(value, str) and "string" in exc.message and key in exc.message:
                # `config set branch 2024` reads a number; say how to keep it as text.
                quoted = json.dumps(raw[key])
                advice = f"({raw[key]} was read as JSON; to set it as text, quote it: '{quoted}'.)"
                exc.hint = f"{exc.hint} {advice}" if exc.hint else advice
        raise
    if created and not args.user:
        _add_schema(target)
    if args.json:
        common.emit_json({"file": str(target), "created": created, "set": values, "notes": notes})
    else:
        for key, value in values.items():
            shown = json.dumps(value, ensure_ascii=False)
            common.write(f"Set {key} = {shown} in {target}{' (created)' if created else ''}")
    for note in notes:
        common.info(f"note: {note}")
    return 0


def _repository_file(explicit: Path | None) -> Path:
    """--config, else the dispatch_config.json commands would read from here, else a new one
    at the repository's top level (this folder outside any repository)."""
    if explicit is not None:
        return explicit
    here = Path.cwd().resolve()
    top = repository_top(here)
    return find_config(here, stop=top) or (top or here) / CONFIG_FILENAME


def _add_schema(config_file: Path) -> None:
    """The schema a new file's "$schema" points at, in the state folder git ignores."""
    schema = config_file.resolve().parent / SCHEMA_REF
    if not schema.exists():
        write_atomic(schema, schema_text().encode("utf-8"))
    ensure_state_ignored(layout_for(load_config(config_file)))


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
