"""A stand-in for Aider: sleep, append to the task's files, commit. Prints what it does.

usage: commit_worker.py TASK_FILE TASK_ID [FILES...]
Directives: @sleep seconds, @write extra file, @suggest a follow-up line, @requires a file
that must already exist (written by a dependency that was merged first), @daemon yes: leave
a daemon behind that detached (its own session, its parent gone) and dropped the worker's
environment marker, as a badly behaved tool does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from _common import commit_files, directives, stamp

DAEMON = "import time\nwhile True: time.sleep(0.1)\n"
DETACH = (
    "import os, subprocess, sys\n"
    "env = {k: v for k, v in os.environ.items() if k != 'LOCALDISPATCH_WORKER'}\n"
    "p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], env=env,\n"
    "    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(p.pid, flush=True)\n"
)


def leave_daemon() -> int:
    """Start a daemon through a middle process that exits at once; return the daemon's pid."""
    out = subprocess.run(
        [sys.executable, "-c", DETACH, DAEMON], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def main() -> int:
    task_file, task_id, *files = sys.argv[1:]
    say = directives(task_file)
    requires = [p for p in say.get("requires", "").split(",") if p.strip()]
    missing = [p for p in requires if not Path(p.strip()).exists()]
    daemon = leave_daemon() if say.get("daemon") == "yes" else None
    stamp(task_id, event="start", missing=missing, daemon=daemon)
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
