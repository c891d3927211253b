"""The map of the house, checked: each package imports only the layers below it, and only
``processes/`` starts processes. Read from the source with ast, so a new import that breaks
a rule fails here, not in a reader's head."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "localdispatch"

# Shared nouns at the top; they import only each other.
CORE = {"config", "errors", "layout", "tasks", "events", "paths", "statefile", "git", "processes"}
# What each layer may import besides itself and the core.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "store": set(),
    "suggestions": {"store"},
    "split": {"store"},
    "merge": {"store"},
    "plans": {"store"},
    "dispatch": {"store", "suggestions", "merge"},
    "doctor": {"split", "dispatch"},
    "onboarding": set(),
    "testing": set(),
    "demo": {"store", "split", "dispatch", "testing"},
    "cli": {
        "store",
        "suggestions",
        "split",
        "merge",
        "dispatch",
        "doctor",
        "onboarding",
        "plans",
        "testing",
        "demo",
    },
    "entry": {"cli"},  # __main__.py and launcher.py
}


def layer(module: str) -> str:
    """The layer of a dotted module name inside the package."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in CORE or parts[0] == "__init__":
        return "core"
    if parts[0] in ("__main__", "launcher"):
        return "entry"
    return parts[0]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[dotted.removesuffix(".__init__")] = path
    return found


def imported(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (absolute imports; the codebase uses no
    relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("localdispatch"):
            assert node.level == 0, f"{path}: relative import; write it absolute"
            module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("localdispatch"))
    known = modules()
    return {name for name in names if name in known}


def test_every_package_imports_only_what_it_may() -> None:
    broken = []
    for module, path in sorted(modules().items()):
        source = layer(module)
        allowed = {source, "core", *ALLOWED[source]}
        for target in sorted(imported(path)):
            if layer(target) not in allowed:
                broken.append(f"{module} ({source}) imports {target} ({layer(target)})")
    assert broken == [], "\n".join(broken)


def test_only_processes_starts_processes() -> None:
    """Every child goes through processes.spawn/run (git through git/commands), so the
    janitor knows it is ours; the test helpers' own scripts are exempt."""
    starters = {"Popen", "run", "call", "check_call", "check_output"}
    found = []
    for module, path in modules().items():
        if module.startswith(("localdispatch.processes", "localdispatch.testing")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            call = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(call, ast.Attribute)
                and call.attr in starters
                and isinstance(call.value, ast.Name)
                and call.value.id == "subprocess"
            ):
                found.append(f"{module} line {node.lineno}: subprocess.{call.attr}")
    assert found == [], "\n".join(found)


def test_the_map_knows_every_package() -> None:
    layers = {layer(module) for module in modules()}
    assert layers <= set(ALLOWED), f"add {layers - set(ALLOWED)} to ALLOWED and the team notes"
