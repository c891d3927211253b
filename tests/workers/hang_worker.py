"""A worker that forks a grandchild and then hangs: both must die at the timeout.

The grandchild's pid and creation time go to the stamps file so the test can check them.
With @detach: yes the child is started through an intermediate process that exits at once,
so the grandchild is re-parented away from the worker's tree (only the marker finds it).
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
from _common import directives, stamp

SLEEPER = "import time\nwhile True: time.sleep(0.1)\n"
SPAWNER = (
    "import subprocess, sys\n"
    "quiet = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL}\n"
    "p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], **quiet)\n"
    "print(p.pid, flush=True)\n"
)


def main() -> int:
    task_file, task_id, *_files = sys.argv[1:]
    say = directives(task_file)
    if say.get("detach") == "yes":
        out = subprocess.run(
            [sys.executable, "-c", SPAWNER, SLEEPER],
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=True,
        )
        child_pid = int(out.stdout.split()[0])
    else:
        child = subprocess.Popen([sys.executable, "-c", SLEEPER])
        child_pid = child.pid
    proc = psutil.Process(child_pid)
    stamp(task_id, event="start", child=child_pid, child_created=proc.create_time())
    while True:
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
