"""Shared bits of the test workers: read directives from the task file, record timestamps.

A task's description may hold lines ``@name: value`` (``@sleep: 1.5``, ``@write: a.txt``,
``@suggest: Add docs``) that tell these stand-in workers what to do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

DIRECTIVE = re.compile(r"^@(\w+):\s*(.*)$", re.MULTILINE)


def directives(task_file: str) -> dict[str, str]:
    text = Path(task_file).read_text(encoding="utf-8")
    return {name: value.strip() for name, value in DIRECTIVE.findall(text)}


def stamp(task_id: str, **fields: object) -> None:
    """Append one JSON line to $LD_TEST_STAMPS/<task>.jsonl (outside the worktree)."""
    folder = os.environ.get("LD_TEST_STAMPS")
    if not folder:
        return
    path = Path(folder) / f"{task_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"t": time.time(), "pid": os.getpid(), "cwd": os.getcwd(), **fields}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], capture_output=True, text=True, encoding="utf-8", check=True
    )
    return result.stdout.strip()


def commit_files(task_id: str, names: list[str], text: str) -> None:
    for name in names:
        target = Path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            handle.write(text)
    git("add", "--", *names)
    git("commit", "-q", "-m", f"{task_id}: edit {', '.join(names)}")
