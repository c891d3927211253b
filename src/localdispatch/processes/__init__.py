"""Nothing left running: every process the dispatcher starts, and everything those start.

The one place the platform's way of holding a process tree is chosen:

- Linux (``_linux``): the dispatcher is a child subreaper, so a daemon a worker leaves behind
  is re-parented to the dispatcher and the janitor (``sweep``) kills it, marker or not.
- Windows (``_windows``): each tree runs in a Job Object that kills its members when closed.
- macOS and others (``_fallback``): the tree walk and the environment marker. A descendant
  that detaches AND drops its marker can outlive the attempt there.

Use:

- ``spawn(argv, **popen_kwargs)`` / ``run(argv, ...)`` for every process the dispatcher
  starts (``run`` is ``subprocess.run``; on a timeout the child's whole tree is killed), so
  the janitor can tell our children from adopted orphans;
- ``spawn(argv, marker=..., ...)`` for a worker or test gate tree, then ``release(popen)``
  once its root has exited (or been killed): what is left of the tree goes;
- ``sweep()`` each tick of the dispatcher loop: cheap, kills orphans of ended attempts and
  reaps zombies.
"""

from __future__ import annotations

import sys

from localdispatch.processes.registry import Backend, Registry

if sys.platform == "win32":
    from localdispatch.processes._windows import WindowsBackend as _Platform
elif sys.platform.startswith("linux"):
    from localdispatch.processes._linux import LinuxBackend as _Platform
else:
    from localdispatch.processes._fallback import FallbackBackend as _Platform

# One per process: the subreaper flag, the children and the lock are the process's own.
backend: Backend = _Platform()
process_registry = Registry(backend)
spawn = process_registry.spawn
run = process_registry.run
release = process_registry.release
sweep = process_registry.sweep
