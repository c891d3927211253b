"""The scripted worker of ``localdispatch demo``: a stand-in for Aider that needs no model.

    python -m localdispatch.testing.demo_worker TASK_FILE [--base BRANCH] [--pace SECS]

It runs in the worktree the dispatcher prepared (its current folder) and reads the task file
the dispatcher wrote. An ordinary task's text spells out its edits in blocks like

    Create `statkit/mean.py`:
    ```python
    ...the whole file...
    ```

    Append to `CHANGELOG.md`:
    ```markdown
    - Add `mean()`.
    ```

    Replace in `statkit/cli.py`:
    ```python
    COMMANDS = ["total"]
    ```
    with:
    ```python
    COMMANDS = ["total", "report"]
    ```

which it applies and commits: a real, deterministic edit. A conflict task (a merge of the base
branch in progress, or to be started) is resolved the way a careful person resolves two
additions at the same place: keep both sides' lines, the base branch's first (they landed
first), drop the markers, commit the merge.

Only the standard library and git: it starts fast, and it must run wherever the demo runs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

Action = Literal["create", "append", "replace"]
FENCE = "```"
_VERBS: dict[str, Action] = {"Create": "create", "Append to": "append", "Replace in": "replace"}
_DIRECTIVE = re.compile(r"^(Create|Append to|Replace in) `([^`\n]+)`:[ \t]*$")
_HEADER = re.compile(r"^# Task (\S+): (.*)$", re.MULTILINE)
_LANGUAGES = {".py": "python", ".md": "markdown", ".toml": "toml", ".json": "json"}
CONFLICT_HEADING = "## Resolve the merge conflict"


class EditError(Exception):
    """An edit that cannot be applied (the text to replace is missing, a path leaves the tree)."""


# ---- the edit format (pure; the demo writes it, this worker reads it) ----------------------


@dataclass(frozen=True)
class Edit:
    """One change to one file. ``text`` and ``old`` are whole lines, each ending in a newline."""

    action: Action
    path: str
    text: str
    old: str = ""


def render_edits(edits: Sequence[Edit]) -> str:
    """The edits as the text blocks :func:`parse_edits` reads (and a person can follow)."""
    verbs = {action: verb for verb, action in _VERBS.items()}
    parts = []
    for edit in edits:
        language = _LANGUAGES.get(PurePosixPath(edit.path).suffix, "text")
        blocks = [edit.old, edit.text] if edit.action == "replace" else [edit.text]
        for block in blocks:
            if not block.endswith("\n") or any(
                line.startswith(FENCE) for line in block.split("\n")
            ):
                raise ValueError(f"{edit.path}: a block must end in a newline and hold no fence")
        lines = [f"{verbs[edit.action]} `{edit.path}`:"]
        for number, block in enumerate(blocks):
            if number:
                lines.append("with:")
            lines += [FENCE + language, block.rstrip("\n"), FENCE]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def parse_edits(text: str) -> list[Edit]:
    """Every edit block in ``text``, in order; EditError if one is cut short."""
    lines = text.splitlines()
    edits: list[Edit] = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        index += 1
        if match is None:
            continue
        action, path = _VERBS[match.group(1)], match.group(2).strip()
        blocks: list[str] = []
        while len(blocks) < (2 if action == "replace" else 1):
            while index < len(lines) and lines[index].strip() in ("", "with:"):
                index += 1
            if index >= len(lines) or not lines[index].startswith(FENCE):
                raise EditError(f"{path}: the edit has no code block after its heading")
            end = index + 1
            while end < len(lines) and lines[end].rstrip() != FENCE:
                end += 1
            if end >= len(lines):
                raise EditError(f"{path}: a code block of the edit is not closed")
            blocks.append("".join(line + "\n" for line in lines[index + 1 : end]))
            index = end + 1
        if action == "replace":
            edits.append(Edit(action, path, blocks[1], old=blocks[0]))
        else:
            edits.append(Edit(action, path, blocks[0]))
    return edits


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` (a task never leaves its tree)."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or ":" in pure.parts[0]:
        raise EditError(f"{relative}: not a path inside the repository")
    return root.joinpath(*pure.parts)


def apply_edit(root: Path, edit: Edit) -> None:
    """Make one edit under ``root``. Text is written as UTF-8 with LF line ends."""
    target = inside(root, edit.path)
    if edit.action == "create":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(edit.text, encoding="utf-8", newline="\n")
        return
    if not target.is_file():
        raise EditError(f"{edit.path}: the file does not exist")
    current = target.read_text(encoding="utf-8")
    if edit.action == "append":
        joint = "" if not current or current.endswith("\n") else "\n"
        new = current + joint + edit.text
    else:
        if edit.old not in current:
            raise EditError(f"{edit.path}: the text to replace is not there")
        new = current.replace(edit.old, edit.text, 1)
    target.write_text(new, encoding="utf-8", newline="\n")


# ---- resolving a conflict (pure) -------------------------------------------------------------


def _is_marker(line: str, marker: str) -> bool:
    bare = line.rstrip("\r\n")
    return bare == marker or bare.startswith(marker + " ")


def resolve_text(text: str) -> tuple[str, int]:
    """Resolve every conflict hunk by keeping both sides; return the text and the hunk count.

    Git writes the checked-out side (``<<<<<<<``, here the task's branch) first and the side
    being merged in (``>>>>>>>``, here the base branch) second; a ``|||||||`` section (the
    common ancestor, with ``merge.conflictStyle diff3``) is dropped. The base branch's lines
    come first in the result, as they landed first; lines both sides added appear once.
    ValueError if a hunk is not closed.
    """
    out: list[str] = []
    ours: list[str] = []
    theirs: list[str] = []
    state = "outside"
    hunks = 0
    for line in text.splitlines(keepends=True):
        if state == "outside":
            if _is_marker(line, "<<<<<<<"):
                state, ours, theirs = "ours", [], []
            else:
                out.append(line)
        elif state in ("ours", "ancestor") and line.rstrip("\r\n") == "=======":
            state = "theirs"
        elif state == "ours" and _is_marker(line, "|||||||"):
            state = "ancestor"
        elif state == "ours":
            ours.append(line)
        elif state == "theirs" and _is_marker(line, ">>>>>>>"):
            kept = [_whole(x) for x in theirs]
            out += kept + [_whole(x) for x in ours if _whole(x) not in kept]
            state, hunks = "outside", hunks + 1
        elif state == "theirs":
            theirs.append(line)
    if state != "outside":
        raise ValueError("a conflict hunk is not closed")
    return "".join(out), hunks


def _whole(line: str) -> str:
    return line if line.endswith("\n") else line + "\n"


def has_markers(text: str) -> bool:
    return any(
        _is_marker(line, "<<<<<<<") or _is_marker(line, ">>>>>>>") for line in text.splitlines()
    )


# ---- the worker ------------------------------------------------------------------------------


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    if check and result.returncode != 0:
        raise EditError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def merging() -> bool:
    return git("rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0


def say(message: str) -> None:
    print(message, flush=True)


def resolve_merge(task_id: str, base: str, text: str) -> None:
    """Finish the merge of ``base`` the dispatcher started (or start it), keeping both sides."""
    if not merging():
        say(f"{task_id}: no merge in progress; merging {base} as the task asks")
        git("merge", "--no-ff", "--no-commit", base, check=False)
        if not merging():
            raise EditError(f"merging {base} did not start a merge (is the branch up to date?)")
    names = [n for n in git("diff", "--name-only", "--diff-filter=U", "-z").stdout.split("\0") if n]
    for name in names:
        path = inside(Path.cwd(), name)
        resolved, hunks = resolve_text(path.read_text(encoding="utf-8"))
        if has_markers(resolved):
            raise EditError(f"{name}: conflict markers are left after resolving")
        path.write_text(resolved, encoding="utf-8", newline="\n")
        git("add", "--", name)
        plural = "s" if hunks != 1 else ""
        say(f"resolved {name}: {hunks} conflict{plural}, kept both sides' lines")
    git("commit", "--no-edit", "--no-verify", "--quiet")
    say(f"{task_id}: committed the merge of {base} ({len(names)} file(s) resolved)")


def make_edits(task_id: str, title: str, text: str, pace: float) -> None:
    edits = parse_edits(text)
    if not edits:
        raise EditError("the task names no edit this scripted worker can make")
    for edit in edits:
        time.sleep(pace / (len(edits) + 1))
        apply_edit(Path.cwd(), edit)
        say(f"{task_id}: {edit.action} {edit.path}")
    paths = list(dict.fromkeys(edit.path for edit in edits))
    git("add", "--", *paths)
    if git("diff", "--cached", "--quiet", check=False).returncode == 0:
        raise EditError("the edits changed nothing")
    git("commit", "--quiet", "--no-verify", "-m", f"{task_id}: {title}")
    say(f"{task_id}: committed {len(paths)} file(s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo_worker", description="The scripted worker of `localdispatch demo`."
    )
    parser.add_argument("task_file", type=Path)
    parser.add_argument("--base", default="main", help="the base branch (for conflict tasks)")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds to spend 'thinking'")
    args = parser.parse_args(argv)
    text = args.task_file.read_text(encoding="utf-8")
    header = _HEADER.search(text)
    task_id, title = (header.group(1), header.group(2)) if header else ("task", "scripted edit")
    say(f"{task_id}: reading {args.task_file.name} in {Path.cwd()}")
    try:
        if merging() or CONFLICT_HEADING in text:
            time.sleep(args.pace / 2)
            resolve_merge(task_id, args.base, text)
            time.sleep(args.pace / 2)
        else:
            make_edits(task_id, title, text, args.pace)
    except (EditError, ValueError, OSError) as exc:
        say(f"{task_id}: gave up: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
