"""A stand-in for Aider: sleep, append to the task's files, commit. Prints what it does.

usage: commit_worker.py TASK_FILE TASK_ID [FILES...]
Directives: @sleep seconds, @write extra file, @suggest a follow-up line, @requires a file
that must already exist (written by a dependency that was merged first).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import commit_files, directives, stamp


def main() -> int:
    task_file, task_id, *files = sys.argv[1:]
    say = directives(task_file)
    requires = [p for p in say.get("requires", "").split(",") if p.strip()]
    missing = [p for p in requires if not Path(p.strip()).exists()]
    stamp(task_id, event="start", missing=missing)
    print(f"worker for {task_id} ünïcode ok", flush=True)
    time.sleep(float(say.get("sleep", "0")))
    names = files or [say.get("write") or f"{task_id}.txt"]
    if say.get("suggest"):
        with Path("suggested_tasks.txt").open("a", encoding="utf-8") as handle:
            handle.write(say["suggest"] + "\n")
    commit_files(task_id, names, f"{task_id} was here\n")
    stamp(task_id, event="end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
