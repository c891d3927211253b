"""A worker that tries every git door into the user's repository, then does honest work.

It moves main in its own repository, tries to reach the user's repository by walking up and
through a remote, plants hooks and an fsmonitor program in its repository's config, then
commits its task's file. What each try returned goes to $LD_TEST_STAMPS, so the test can see
it was really tried.

usage: hostile_worker.py TASK_FILE TASK_ID [FILES...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _common import commit_files, stamp


def git(*args: str) -> int:
    return subprocess.run(["git", *args], capture_output=True, check=False).returncode


def main() -> int:
    _task_file, task_id, *files = sys.argv[1:]
    # The proof is written only when something other than this worker's own tree runs the
    # hook (the dispatcher's git): a worker's git running its own hooks is its own business.
    proof = Path(sys.argv[1]).parent / f"{task_id}.hook-ran"
    hook = f"#!/bin/sh\n[ -n \"$LOCALDISPATCH_WORKER\" ] || echo ran > '{proof.as_posix()}'\n"
    hooks = Path(".git/hooks")
    hooks.mkdir(exist_ok=True)
    for name in ("post-checkout", "reference-transaction", "pre-commit", "post-merge"):
        (hooks / name).write_text(hook, encoding="utf-8")
        (hooks / name).chmod(0o755)
    tried = {
        "move own main": git("update-ref", "refs/heads/main", "HEAD"),
        "walk up to .dispatch": git("-C", "../..", "update-ref", "refs/heads/evil", "HEAD"),
        "push to origin": git("push", "origin", "HEAD:main"),
        "hooks path": git("config", "core.hooksPath", str(hooks.resolve())),
        "fsmonitor": git("config", "core.fsmonitor", str(hooks.resolve() / "post-checkout")),
    }
    stamp(task_id, event="tried", results=tried)
    commit_files(task_id, files or [f"{task_id}.txt"], f"{task_id} was here\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
