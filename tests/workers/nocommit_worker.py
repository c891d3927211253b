"""Aider's worst habit: edit nothing (or edit without committing) and exit 0 anyway."""

from __future__ import annotations

import sys
from pathlib import Path

from _common import stamp


def main() -> int:
    _task_file, task_id, *_files = sys.argv[1:]
    stamp(task_id, event="start")
    Path("uncommitted.txt").write_text("never committed\n", encoding="utf-8")
    print("I am done! (I am not.)", flush=True)
    stamp(task_id, event="end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
