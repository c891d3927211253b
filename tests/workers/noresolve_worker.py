"""Like commit_worker, but gives up on every conflict task: it reads the task, commits
nothing and exits 0, as a model that could not resolve the conflict does.

usage: noresolve_worker.py TASK_FILE TASK_ID [FILES...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import commit_files, directives, stamp


def main() -> int:
    task_file, task_id, *files = sys.argv[1:]
    stamp(task_id, event="start")
    if "Resolve the merge conflict" in Path(task_file).read_text(encoding="utf-8"):
        print(f"{task_id}: I cannot resolve this conflict", flush=True)
        return 0
    time.sleep(float(directives(task_file).get("sleep", "0")))
    commit_files(task_id, files or [f"{task_id}.txt"], f"{task_id} was here\n")
    stamp(task_id, event="end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
