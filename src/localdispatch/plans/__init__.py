"""Plans made elsewhere, imported as tasks: Conductor tracks and task-dispatcher YAML files.

``conductor.py`` (with ``track.py``, the rules of phases and ``depends``) and
``task_dispatcher.py`` parse a file's text into an ``ImportedPlan`` (pure); ``reading.py`` finds
and reads the file; ``writer.py`` stores what is new, once.
"""

from __future__ import annotations

from localdispatch.plans.model import ImportedPlan, LeftOut, PlanError, PlanItem
from localdispatch.plans.reading import load_plan
from localdispatch.plans.writer import IMPORTED_FROM, ImportResult, NewTask, import_plan

__all__ = [
    "IMPORTED_FROM",
    "ImportResult",
    "ImportedPlan",
    "LeftOut",
    "NewTask",
    "PlanError",
    "PlanItem",
    "import_plan",
    "load_plan",
]
