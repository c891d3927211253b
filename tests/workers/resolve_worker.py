"""Resolves a merge conflict: keeps both sides' lines, drops the markers, commits.

For ordinary tasks it behaves like commit_worker (so one config serves a whole run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _common import git, stamp

MARKERS = ("<<<<<<<", "=======", ">>>>>>>")


def main() -> int:
    task_file, task_id, *files = sys.argv[1:]
    stamp(task_id, event="start")
    merging = (
        subprocess.run(
            ["git", "rev-parse", "-q", "--verify", "MERGE_HEAD"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not merging:
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("commit_worker.py")),
                task_file,
                task_id,
                *files,
            ],
            check=True,
        )
        return 0
    for name in git("diff", "--name-only", "--diff-filter=U").split():
        path = Path(name)
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(x for x in lines if not x.startswith(MARKERS)), encoding="utf-8")
        git("add", "--", name)
    git("commit", "-q", "--no-edit")
    stamp(task_id, event="end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
