"""A worker that commits suggested_tasks.txt, as Aider does with every file it edits.

usage: state_commit_worker.py TASK_FILE TASK_ID [FILES...]
With no FILES it commits only the suggestion (no real work).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    task_file, task_id, *files = sys.argv[1:]
    if "Follow-up idea from t-" in Path(task_file).read_text(encoding="utf-8"):
        return 0  # ideas do not breed ideas: the run must end
    with Path("suggested_tasks.txt").open("a", encoding="utf-8") as handle:
        handle.write(f"Follow-up idea from {task_id}\n")
    for name in files:
        Path(name).write_text(f"{task_id} was here\n", encoding="utf-8")
    # -f: the state file is ignored through .git/info/exclude, and a worker adds it anyway.
    subprocess.run(["git", "add", "-f", "suggested_tasks.txt", *files], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"{task_id} with a suggestion"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
