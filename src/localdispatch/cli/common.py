"""Pieces every command shares: common flags, loading the config, printing data and errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from localdispatch.config import Config, load_config
from localdispatch.layout import Layout, layout_for


def version() -> str:
    from localdispatch import __version__

    return __version__


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """--config, --debug, -v and (for commands that print data) --json."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="dispatch_config.json to use (default: the nearest one from the current folder "
        "up to the repository's top level; without one, that top level is the repository)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")


def load(args: argparse.Namespace) -> tuple[Config, Layout]:
    """The config and layout a command works on: from any folder inside a repository, its
    top level (see :func:`load_config`), so state files never appear in a subfolder."""
    config = load_config(getattr(args, "config", None))
    return config, layout_for(config)


def setup_logging(*, verbose: int = 0, debug: bool = False) -> None:
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def emit_json(data: Any) -> None:
    """JSON on stdout, UTF-8 whatever the console's code page."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    write(text)


def write(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
    except UnicodeEncodeError:
        # A Windows console in a legacy code page cannot show every character; say it anyway.
        sys.stdout.buffer.write((text + "\n").encode(sys.stdout.encoding or "utf-8", "replace"))
    sys.stdout.flush()


def error(message: str) -> None:
    try:
        sys.stderr.write(f"error: {message}\n")
    except UnicodeEncodeError:
        sys.stderr.write(f"error: {message}\n".encode("ascii", "replace").decode("ascii"))
    sys.stderr.flush()


def info(message: str) -> None:
    """A human note on stderr, so stdout stays clean data for --json and pipes."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def csv_list(values: list[str] | None) -> list[str]:
    """Flags that take lists accept both `--files a.py --files b.py` and `--files a.py,b.py`."""
    result: list[str] = []
    for value in values or []:
        result.extend(part.strip() for part in value.split(",") if part.strip())
    return result
