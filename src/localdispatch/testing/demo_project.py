"""The sample project of ``localdispatch demo`` and the split the stub model answers for it.

``statkit`` is a small Python package with a command line and unittest tests. The goal adds a
statistics report; the scripted split has five tasks: mean and median first (in parallel),
then the report module, then the command and its documentation (again in parallel).

The planned conflict: the mean and the median tasks name different files, so the dispatcher
runs them at once, but each also adds a line at the end of ``CHANGELOG.md`` and an import at
the end of ``statkit/__init__.py`` (the model mentioned them in the description and forgot
them in ``files``, as small models do). Whichever branch is merged second conflicts there.

Every edit is spelled out in its task's description (see :mod:`.demo_worker`), so the scripted
worker makes real, deterministic changes and the demo can check that each one reached main.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localdispatch.testing.demo_worker import Edit, render_edits

GOAL = "Add a statistics report: mean, median and a report command"
MODEL = "demo-stub:latest"  # clearly not a real model: the demo's stub server holds only this
REPORT_ARGS = ["report", "3", "1", "4", "1", "5"]
EXPECTED_REPORT = "count:  5\ntotal:  14\nmean:   2.8\nmedian: 3"
SHARED_FILES = ("CHANGELOG.md", "statkit/__init__.py")

PROJECT_FILES: dict[str, str] = {
    "README.md": """\
# statkit

Small statistics helpers for lists of numbers, with a command line:

    python -m statkit total 3 1 4 1 5

Run the tests with `python -m unittest`.

This repository was made by `localdispatch demo`. Every commit after the first was made by a
scripted worker and merged by the dispatcher: see `git log --graph --oneline`.
""",
    "CHANGELOG.md": """\
# Changelog

## Unreleased

- Add `total()` and the `statkit total` command.
""",
    ".gitignore": "__pycache__/\n*.pyc\n",
    "statkit/__init__.py": '''\
"""statkit: small statistics helpers for lists of numbers."""

from .numbers import parse_numbers, total
''',
    "statkit/__main__.py": """\
import sys

from .cli import main

sys.exit(main())
""",
    "statkit/numbers.py": '''\
"""Reading numbers, and the simplest statistic of all."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def parse_numbers(words: Iterable[str]) -> list[float]:
    """The numbers in ``words``; a word that is not a number is an error naming it."""
    values = []
    for word in words:
        try:
            values.append(float(word))
        except ValueError:
            raise ValueError(f"not a number: {word!r}") from None
    return values


def total(values: Sequence[float]) -> float:
    return float(sum(values))
''',
    "statkit/cli.py": '''\
"""The command line: python -m statkit COMMAND NUMBER..."""

from __future__ import annotations

import argparse

from .numbers import parse_numbers, total

COMMANDS = ["total"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="statkit", description="Statistics of numbers.")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("numbers", nargs="+", metavar="NUMBER")
    args = parser.parse_args(argv)
    values = parse_numbers(args.numbers)
    print(f"{total(values):g}")
    return 0
''',
    "tests/__init__.py": "",
    "tests/test_numbers.py": """\
import unittest

from statkit.numbers import parse_numbers, total


class NumbersTest(unittest.TestCase):
    def test_parse_and_total(self) -> None:
        self.assertEqual(total(parse_numbers(["1", "2.5"])), 3.5)

    def test_not_a_number(self) -> None:
        with self.assertRaises(ValueError):
            parse_numbers(["x"])
""",
}


@dataclass(frozen=True)
class DemoSubtask:
    title: str
    summary: str
    files: list[str]
    edits: list[Edit]
    depends_on: list[int] = field(default_factory=list)  # 1-based, as the model writes them
    criteria: list[str] = field(default_factory=list)

    def reply(self) -> dict[str, Any]:
        """The subtask as the model's JSON reply holds it."""
        return {
            "title": self.title,
            "description": f"{self.summary}\n\n{render_edits(self.edits)}",
            "files": self.files,
            "depends_on": self.depends_on,
            "acceptance_criteria": self.criteria,
        }


def _changelog(line: str) -> Edit:
    return Edit("append", "CHANGELOG.md", f"- {line}\n")


MEAN = '''\
"""The arithmetic mean."""

from __future__ import annotations

from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    """The average of ``values``; no numbers at all is an error."""
    if not values:
        raise ValueError("mean of no numbers")
    return sum(values) / len(values)
'''

MEDIAN = '''\
"""The median: the middle value, or the mean of the two middle values."""

from __future__ import annotations

from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """The middle of ``values`` once sorted; no numbers at all is an error."""
    if not values:
        raise ValueError("median of no numbers")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2
'''

REPORT = '''\
"""A plain-text report of a list of numbers."""

from __future__ import annotations

from collections.abc import Sequence

from .mean import mean
from .median import median
from .numbers import total


def report(values: Sequence[float]) -> str:
    """Count, total, mean and median, one per line."""
    rows = [
        ("count", float(len(values))),
        ("total", total(values)),
        ("mean", mean(values)),
        ("median", median(values)),
    ]
    return "\\n".join(f"{name + ':':<8}{value:g}" for name, value in rows)
'''


def _test(module: str, name: str, body: str) -> str:
    return (
        f"import unittest\n\nfrom statkit.{module} import {name}\n\n\n"
        f"class {name.title()}Test(unittest.TestCase):\n{body}"
    )


SUBTASKS: list[DemoSubtask] = [
    DemoSubtask(
        title="Add mean() to statkit",
        summary="Create statkit/mean.py with mean(values), the arithmetic mean, which refuses "
        "an empty list, and a test for it. Export it from the package and add a line to the "
        "changelog.",
        files=["statkit/mean.py", "tests/test_mean.py"],
        edits=[
            Edit("create", "statkit/mean.py", MEAN),
            Edit(
                "create",
                "tests/test_mean.py",
                _test(
                    "mean",
                    "mean",
                    "    def test_mean(self) -> None:\n"
                    "        self.assertEqual(mean([3, 1, 4, 1, 5]), 2.8)\n\n"
                    "    def test_empty(self) -> None:\n"
                    "        with self.assertRaises(ValueError):\n"
                    "            mean([])\n",
                ),
            ),
            Edit("append", "statkit/__init__.py", "from .mean import mean\n"),
            _changelog("Add `mean()`, the arithmetic mean."),
        ],
        criteria=["mean([3, 1, 4, 1, 5]) == 2.8", "mean([]) raises ValueError"],
    ),
    DemoSubtask(
        title="Add median() to statkit",
        summary="Create statkit/median.py with median(values) for odd and even counts, and a "
        "test for it. Export it from the package and add a line to the changelog.",
        files=["statkit/median.py", "tests/test_median.py"],
        edits=[
            Edit("create", "statkit/median.py", MEDIAN),
            Edit(
                "create",
                "tests/test_median.py",
                _test(
                    "median",
                    "median",
                    "    def test_odd_and_even(self) -> None:\n"
                    "        self.assertEqual(median([3, 1, 4, 1, 5]), 3)\n"
                    "        self.assertEqual(median([4, 1, 3, 2]), 2.5)\n",
                ),
            ),
            Edit("append", "statkit/__init__.py", "from .median import median\n"),
            _changelog("Add `median()`, the middle value."),
        ],
        criteria=["median([3, 1, 4, 1, 5]) == 3", "median([4, 1, 3, 2]) == 2.5"],
    ),
    DemoSubtask(
        title="Build the statistics report",
        summary="Create statkit/report.py with report(values): count, total, mean and median, "
        "one per line, using the new mean() and median(). Test it.",
        files=["statkit/report.py", "tests/test_report.py"],
        depends_on=[1, 2],
        edits=[
            Edit("create", "statkit/report.py", REPORT),
            Edit(
                "create",
                "tests/test_report.py",
                _test(
                    "report",
                    "report",
                    "    def test_report(self) -> None:\n"
                    "        text = report([3, 1, 4, 1, 5])\n"
                    '        self.assertIn("mean:   2.8", text)\n'
                    '        self.assertIn("median: 3", text)\n',
                ),
            ),
        ],
        criteria=["report([3, 1, 4, 1, 5]) shows mean 2.8 and median 3"],
    ),
    DemoSubtask(
        title="Add the report command to the command line",
        summary="Add a `report` command to statkit/cli.py that prints report(values), with a "
        "test, and note it in the changelog.",
        files=["statkit/cli.py", "tests/test_cli.py"],
        depends_on=[3],
        edits=[
            Edit(
                "replace",
                "statkit/cli.py",
                "from .numbers import parse_numbers, total\nfrom .report import report\n",
                old="from .numbers import parse_numbers, total\n",
            ),
            Edit(
                "replace",
                "statkit/cli.py",
                'COMMANDS = ["total", "report"]\n',
                old='COMMANDS = ["total"]\n',
            ),
            Edit(
                "replace",
                "statkit/cli.py",
                '    if args.command == "report":\n'
                "        print(report(values))\n"
                "    else:\n"
                '        print(f"{total(values):g}")\n',
                old='    print(f"{total(values):g}")\n',
            ),
            Edit(
                "create",
                "tests/test_cli.py",
                "import contextlib\nimport io\nimport unittest\n\n"
                "from statkit.cli import main\n\n\n"
                "class CliTest(unittest.TestCase):\n"
                "    def test_report_command(self) -> None:\n"
                "        out = io.StringIO()\n"
                "        with contextlib.redirect_stdout(out):\n"
                f"            self.assertEqual(main({REPORT_ARGS!r}), 0)\n"
                '        self.assertIn("median: 3", out.getvalue())\n',
            ),
            _changelog("Add the `statkit report` command."),
        ],
        criteria=["`python -m statkit report 3 1 4 1 5` prints the report"],
    ),
    DemoSubtask(
        title="Document the report command in the README",
        summary="Add a section on `statkit report` with an example to README.md.",
        files=["README.md"],
        depends_on=[3],
        edits=[
            Edit(
                "append",
                "README.md",
                "\n## Report\n\n`python -m statkit report 3 1 4 1 5` prints the count, total, "
                "mean and median:\n\n"
                + "".join(f"    {line}\n" for line in EXPECTED_REPORT.split("\n")),
            )
        ],
        criteria=["README.md shows `statkit report` with its output"],
    ),
]


def conflicting() -> list[int]:
    """The subtasks (0-based) that start at once and collide in SHARED_FILES."""
    return [
        index
        for index, sub in enumerate(SUBTASKS)
        if not sub.depends_on and any(edit.path in SHARED_FILES for edit in sub.edits)
    ]


def plan_subtasks() -> list[dict[str, Any]]:
    """The subtasks of the stub model's reply."""
    return [sub.reply() for sub in SUBTASKS]
