"""`localdispatch init`: a starting dispatch_config.json for the repository you stand in."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from localdispatch.cli import common
from localdispatch.onboarding import Detected, InitReport, init_repository

# What to do about each thing init did not find.
FIXES = {
    "base branch": 'make a first commit, or `localdispatch config set branch NAME`',
    "test command": "`localdispatch config set test_command '[\"your\", \"test\", \"command\"]'` "
    "so nothing that breaks your tests lands",
    "Aider": "install it beside localdispatch (README: Installing Aider beside localdispatch), "
    "then `localdispatch config set aider_cmd /full/path/to/aider --user` if it is not on PATH",
    "model server": "start Ollama (`ollama serve`) and `ollama pull qwen2.5-coder:7b`, then run "
    "`localdispatch init --force`; until then `split-task ... --no-llm` splits without a model",
}


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing dispatch_config.json (a backup is kept beside it)",
    )
    common.add_common(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    report = init_repository(Path.cwd(), force=args.force)
    if args.json:
        common.emit_json(_as_json(report))
    else:
        common.write(render(report))
    return 0


def _as_json(report: InitReport) -> dict[str, Any]:
    return {
        "repo": str(report.repo),
        "config_file": str(report.config_file),
        "backup": str(report.backup) if report.backup else None,
        "user_file": str(report.user_file) if report.user_file else None,
        "repo_settings": report.repo_settings,
        "user_settings": report.user_settings,
        "found": [_item(d) for d in report.found],
        "missing": [{**_item(d), "fix": FIXES.get(d.what, "")} for d in report.missing],
        "notes": report.notes,
        "next": report.next_commands(),
    }


def _item(detected: Detected) -> dict[str, Any]:
    return {"what": detected.what, "value": detected.value, "how": detected.how}


def render(report: InitReport) -> str:
    lines = [f"Set up localdispatch in {report.repo}"]
    if report.backup:
        lines.append(f"  kept the old config as {report.backup.name}")
    lines.append(f"  wrote {report.config_file.name}: {_settings(report.repo_settings)}")
    if report.user_file:
        lines.append(f"  wrote {report.user_file} (this machine only): "
                     f"{_settings(report.user_settings)}")
    lines.append("  added the state files to .git/info/exclude (nothing to commit but the config)")
    if report.found:
        lines.append("Found:")
        lines.extend(f"  {d.what}: {_shown(d.value)} ({d.how})" for d in report.found)
    if report.missing:
        lines.append("Not found:")
        for item in report.missing:
            lines.append(f"  {item.what}: {item.how}")
            lines.append(f"    -> {FIXES.get(item.what, '')}")
    lines.extend(f"Note: {note}" for note in report.notes)
    lines.append(f"Commit {report.config_file.name} (it is your team's), then:")
    lines.extend(f"  {n}. {command}" for n, command in enumerate(report.next_commands(), 1))
    return "\n".join(lines)


def _settings(values: dict[str, object]) -> str:
    return ", ".join(f"{key} {_shown(value)}" for key, value in values.items())


def _shown(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(part) for part in value)
    return str(value)
