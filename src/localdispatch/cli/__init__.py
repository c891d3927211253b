"""Command-line front: the only place that prints to the user and chooses exit codes.

``localdispatch`` has subcommands (``tasks``, ``config`` ...); the three scripts
``split_task.py``, ``dispatch_workers.py`` and ``ingest_suggested_tasks.py`` are separate entry
points. Every command accepts ``--config``, ``--debug`` and (where it prints data) ``--json``.
Errors are one or two sentences on stderr; a traceback appears only with ``--debug``.

Exit codes: 0 success, 1 a failure the message explains, 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from localdispatch.cli import common
from localdispatch.errors import DispatchError

# Subcommands of `localdispatch` and the module that defines each. Only the chosen one is
# imported, so `localdispatch tasks list` does not pay for importing the model client.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "init": ("init_cmd", "write a starting dispatch_config.json for this repository"),
    "tasks": ("tasks_cmd", "add, list, show, ready, close, reopen, cancel and link tasks"),
    "config": ("config_cmd", "check or set settings (repository or user file), print the schema"),
    "split": ("split_cmd", "split a goal into tasks (same as split-task)"),
    "dispatch": ("dispatch_cmd", "run workers (same as dispatch-workers)"),
    "ingest": ("ingest_cmd", "turn suggested ideas into tasks (same as ingest-suggested-tasks)"),
    "import": ("import_cmd", "import a Conductor track or a task-dispatcher YAML file as tasks"),
    "doctor": ("doctor_cmd", "check this machine and repository for what localdispatch needs"),
    "demo": ("demo_cmd", "run the whole cycle in a throwaway repository"),
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    """`localdispatch ...`"""
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in words if not word.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="localdispatch",
        description="Run a team of AI coding workers on one machine.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {common.version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == chosen:
            register: Callable[..., None] = _module(module).register
            register(sub, name, help_text)
        else:  # listed for --help; its module (and what it imports) is never loaded
            sub.add_parser(name, help=help_text, description=help_text)
    return run(parser, argv)


def _script(module: str, prog: str, description: str) -> Callable[[Sequence[str] | None], int]:
    def entry(argv: Sequence[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        configure: Callable[[argparse.ArgumentParser], None] = _module(module).configure
        configure(parser)
        return run(parser, argv)

    entry.__name__ = f"main_{module.removesuffix('_cmd')}"
    return entry


main_split = _script("split_cmd", "split_task.py", "Split a big goal into small file-scoped tasks.")
main_dispatch = _script("dispatch_cmd", "dispatch_workers.py", "Run coding workers in parallel.")
main_ingest = _script(
    "ingest_cmd", "ingest_suggested_tasks.py", "Turn suggested_tasks.txt lines into tasks."
)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the chosen handler, and turn errors into messages and exit codes."""
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    common.setup_logging(verbose=getattr(args, "verbose", 0), debug=debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args) or 0
    except DispatchError as exc:
        if debug:
            raise
        common.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        common.error("Interrupted.")
        return 130
    except Exception as exc:  # the last line of defence against tracebacks
        if debug:
            raise
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        common.error(
            f"Unexpected error: {type(exc).__name__}: {exc}. "
            "Run again with --debug for the traceback, and please report it."
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
