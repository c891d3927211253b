"""`localdispatch doctor`: check the machine and repository, each finding with its fix."""

from __future__ import annotations

import argparse
from typing import Any

from localdispatch.cli import common
from localdispatch.doctor import passed, run_checks

MARK = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}


def register(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    common.add_common(parser)
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config)
    ok = passed(checks)
    if args.json:
        common.emit_json({"ok": ok, "checks": [c.as_dict() for c in checks]})
        return 0 if ok else 1
    for check in checks:
        common.write(f"{MARK[check.status]} {check.name}: {check.detail}")
        if check.status != "ok" and check.fix:
            common.write(f"       fix: {check.fix}")
    failed = [c.name for c in checks if c.status == "fail" and c.required]
    if failed:
        common.write(f"\n{len(failed)} required check(s) failed: {', '.join(failed)}.")
    else:
        common.write("\nAll required checks passed.")
    return 0 if ok else 1
