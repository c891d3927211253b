"""Finding and reading a plan file: the only part of ``plans/`` that touches the disk.

``localdispatch import PATH`` takes a Conductor track folder (``conductor/tracks/<id>``), its
``plan.md``, a bare track id, or a task-dispatcher YAML file (or the folder holding one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from localdispatch.plans import conductor, task_dispatcher
from localdispatch.plans.model import ImportedPlan, PlanError

MAX_BYTES = 5 * 2**20  # a plan is text a person wrote; anything bigger is the wrong file
PLAN_NAMES = ("plan.md",)
YAML_NAMES = ("task-dispatcher.yaml", "task-dispatcher.yml")
YAML_SUFFIXES = (".yaml", ".yml")
MARKDOWN_SUFFIXES = (".md", ".markdown")
WHAT_TO_GIVE = (
    "Give a Conductor track folder (conductor/tracks/<id>), its plan.md, or a "
    "task-dispatcher YAML file (such as .conductor/task-dispatcher.yaml)."
)


def load_plan(path: Path, repo: Path) -> ImportedPlan:
    """Parse the plan at ``path`` (relative paths from the current folder); ``repo`` is the
    repository's top level, against which the plan's file paths and its name are taken."""
    target = locate(path, repo)
    source = source_name(target, repo)
    text = _read_text(target, source)
    if _is_yaml(target, text):
        return task_dispatcher.parse_plan(text, source=source)
    folder = target.parent
    metadata: dict[str, Any] = {}
    spec: str | None = None
    if target.name.lower() in PLAN_NAMES:
        metadata = _metadata(folder / "metadata.json", repo)
        spec_file = folder / "spec.md"
        if spec_file.is_file():
            spec = source_name(spec_file, repo)
    named = metadata.get("track_id")
    track_id = named if isinstance(named, str) and named.strip() else None
    if track_id is None and folder.parent.name == "tracks":
        track_id = folder.name
    return conductor.parse_plan(
        text, source=source, track_id=track_id, metadata=metadata, spec=spec
    )


def locate(path: Path, repo: Path) -> Path:
    """The plan file ``path`` means: itself, the plan in a folder, or a track id's plan."""
    candidate = path if path.exists() else _track_folder(path, repo)
    if candidate is None:
        raise PlanError(str(path), None, "does not exist.", hint=WHAT_TO_GIVE)
    if candidate.is_dir():
        for name in (*PLAN_NAMES, *YAML_NAMES):
            if (candidate / name).is_file():
                return candidate / name
        tracks = sorted(plan.parent.name for plan in candidate.glob("*/plan.md"))
        if tracks:
            shown = ", ".join(tracks[:5]) + (", ..." if len(tracks) > 5 else "")
            raise PlanError(
                str(path),
                None,
                f"holds tracks ({shown}), not one track's plan.",
                hint="Import one track at a time, e.g. `localdispatch import "
                f"{(path / tracks[0]).as_posix()}`.",
            )
        raise PlanError(
            str(path),
            None,
            "is a folder without a plan.md or task-dispatcher.yaml.",
            hint=WHAT_TO_GIVE,
        )
    if not candidate.is_file():
        raise PlanError(str(path), None, "is not a regular file.", hint=WHAT_TO_GIVE)
    return candidate


def _track_folder(path: Path, repo: Path) -> Path | None:
    """``auth_20241226`` alone names ``conductor/tracks/auth_20241226`` (as Conductor's own
    commands take a track id)."""
    if len(path.parts) != 1:
        return None
    folder = repo / "conductor" / "tracks" / path.name
    return folder if folder.is_dir() else None


def source_name(path: Path, repo: Path) -> str:
    """How messages and ``imported_from`` name a file: repo-relative with forward slashes,
    or the absolute path of a file outside the repository."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(repo.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _read_text(path: Path, source: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise PlanError(
                source,
                None,
                f"is {size / 2**20:.1f} MB; a plan is at most {MAX_BYTES // 2**20} MB.",
                hint=WHAT_TO_GIVE,
            )
        data = path.read_bytes()
    except OSError as exc:
        raise PlanError(
            source,
            None,
            f"cannot be read: {exc.strerror or exc}.",
            hint="Check that the file exists and that you may read it.",
        ) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PlanError(
            source,
            line,
            "is not UTF-8 text.",
            hint="Save the file as UTF-8 (most editors offer it under 'Save with encoding').",
        ) from None


def _is_yaml(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return True
    if suffix in MARKDOWN_SUFFIXES:
        return False
    return bool(re.search(r"^\s*-?\s*taskId\s*:", text, re.MULTILINE))


def _metadata(path: Path, repo: Path) -> dict[str, Any]:
    """The track's metadata.json, or {} when there is none."""
    if not path.is_file():
        return {}
    source = source_name(path, repo)
    text = _read_text(path, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(
            source,
            exc.lineno,
            f"is not valid JSON (column {exc.colno}: {exc.msg}).",
            hint="Fix that line, or remove metadata.json: the plan's own heading then names "
            "the track.",
        ) from None
    if not isinstance(data, dict):
        raise PlanError(
            source,
            None,
            "is not a JSON object.",
            hint='Write it as {"track_id": "...", "description": "..."}.',
        )
    return data
