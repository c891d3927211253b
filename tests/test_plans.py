"""The plan parsers (pure) and the writer, on plans written the way Conductor and the task
dispatcher write them (../shared/background/000_..., 003_...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdispatch.plans import ImportedPlan, PlanError, import_plan, load_plan
from localdispatch.plans.conductor import parse_plan as parse_conductor
from localdispatch.plans.task_dispatcher import parse_plan as parse_yaml
from localdispatch.store import JsonStore

SOURCE = "conductor/tracks/auth_20241226/plan.md"

# A track as /conductor-newtrack writes it: a parallel phase with file ownership and a
# dependency, Conductor's manual verification step, then a sequential phase (no annotation)
# whose first task is already done and carries its commit.
TRACK_PLAN = """\
# Implementation Plan: Authentication

## Phase 1: Core Setup
<!-- execution: parallel -->

- [ ] Task 1: Create auth module
  <!-- files: src/auth/index.ts, src/auth/index.test.ts -->
  - [ ] Write failing tests for login and logout
  - [ ] Implement the module to pass them

- [ ] Task 2: Create config module
  <!-- files: src/config/index.ts -->

- [ ] Task 3: Create utilities
  <!-- files: src/utils/index.ts -->
  <!-- depends: task1 -->

- [ ] Task: Conductor - User Manual Verification 'Core Setup' (Protocol in workflow.md)

## Phase 2: Sessions [checkpoint: 1a2b3c4]

- [x] Task 1: Add the session store *(dad644b)*
  <!-- files: src/session/store.ts -->
- [ ] Task 2: Login route
  <!-- files: src/routes/login.ts -->
- [ ] Task 3: Logout route
  <!-- files: src/routes/logout.ts -->

- [ ] Task: Conductor - User Manual Verification 'Sessions' (Protocol in workflow.md)
"""

METADATA = {
    "track_id": "auth_20241226",
    "type": "feature",
    "status": "new",
    "priority": "high",
    "description": "Add user authentication with sessions",
}

# The task dispatcher's own example (003_...), three more tasks of its groups A and B.
DISPATCHER_YAML = """\
# .conductor/task-dispatcher.yaml
title: "Phase 5.3: Error Recovery & Advanced Features"
tasks:
  - taskId: "T1"
    title: "PostgreSQL Schema Design"
    priority: "CRITICAL"
    effortHours: 4
    agent:
      type: "database-engineer"
    inputs:
      - path: "docs/04-planning/K1NPlan_PHASE5_3_ATOMIC_TASK_BREAKDOWN_v1.0_20251110.md"
        section: "T1: PostgreSQL Schema Design"
    outputs:
      - path: "database/migrations/001_error_recovery_and_scheduling.sql"
    validation:
      - type: "file_exists"
      - type: "sql_syntax"
      - type: "schema_validation"
    dependencies: []

  - taskId: "T2"
    title: "Error Recovery Service Interface"
    priority: "HIGH"
    effortHours: 3
    agent:
      type: "backend-engineer"
    outputs:
      - path: "conductor-api/src/types/error-recovery.types.ts"
    validation:
      - type: "typescript_compile"
    dependencies: []

  - taskId: "T4"
    title: "Retry Engine Implementation"
    effortHours: 4
    outputs:
      - path: "conductor-api/src/services/retry-engine.ts"
      - path: "conductor-api/tests/retry-engine.test.ts"
    validation:
      - type: "unit_tests"
        command: "npm test -- retry-engine"
    dependencies: ["T1", "T2"]

  - taskId: "T8"
    title: "API Versioning Middleware"
    effortHours: 2.5
    outputs:
      - path: "conductor-api/src/middleware/versioning.ts"
    dependencies:
      - "T2"
"""


def conductor(text: str = TRACK_PLAN, **kwargs: object) -> ImportedPlan:
    return parse_conductor(text, source=SOURCE, **kwargs)  # type: ignore[arg-type]


def by_item(plan: ImportedPlan) -> dict[str, object]:
    return {item.item: item for item in plan.items}


def deps(plan: ImportedPlan) -> dict[str, list[str]]:
    return {item.item: item.depends_on for item in plan.items}


# ---- Conductor -------------------------------------------------------------------------------


def test_phases_become_epics_and_tasks_keep_files_and_order() -> None:
    plan = conductor(metadata=METADATA, track_id="auth_20241226")
    assert [(i.item, i.kind, i.parent) for i in plan.items] == [
        ("track", "epic", None),
        ("phase1", "epic", "track"),
        ("phase1/task1", "task", "phase1"),
        ("phase1/task2", "task", "phase1"),
        ("phase1/task3", "task", "phase1"),
        ("phase2", "epic", "track"),
        ("phase2/task2", "task", "phase2"),
        ("phase2/task3", "task", "phase2"),
    ]
    items = {i.item: i for i in plan.items}
    assert items["track"].title == "Add user authentication with sessions"
    assert "Conductor track auth_20241226 (feature)" in items["track"].description
    assert items["phase1"].title == "Phase 1: Core Setup"
    assert items["phase2"].title == "Phase 2: Sessions"  # the checkpoint is not a name
    assert items["phase1/task1"].title == "Create auth module"
    assert items["phase1/task1"].files == ["src/auth/index.ts", "src/auth/index.test.ts"]
    assert "- [ ] Write failing tests for login and logout" in items["phase1/task1"].description
    assert all(i.priority == 1 for i in plan.items)  # metadata priority "high"
    # Parallel phase: only the annotation links tasks. Sequential phase: one after another,
    # its first task after the end of the phase before it (task 1 is done: nothing to wait for).
    assert deps(plan) == {
        "track": [],
        "phase1": [],
        "phase1/task1": [],
        "phase1/task2": [],
        "phase1/task3": ["phase1/task1"],
        "phase2": [],
        "phase2/task2": ["phase1/task2", "phase1/task3"],
        "phase2/task3": ["phase2/task2"],
    }
    assert [(gone.line, gone.reason.split(" ")[0]) for gone in plan.left_out] == [
        (18, "a"),
        (22, "done"),
        (29, "a"),
    ]
    assert "manual verification" in plan.left_out[0].reason
    assert plan.left_out[1].title == "Add the session store"  # its commit is not its title


def test_crlf_and_a_byte_order_mark_read_the_same() -> None:
    windows = "\ufeff" + TRACK_PLAN.replace("\n", "\r\n")
    assert deps(conductor(windows)) == deps(conductor())
    assert [i.line for i in conductor(windows).items] == [i.line for i in conductor().items]
    assert [i.description for i in conductor(windows).items] == [
        i.description for i in conductor().items
    ]


def test_phase_depends_annotation_overrides_the_order() -> None:
    text = """\
# Plan: Subtitles

## Phase 1: Parsers
<!-- execution: parallel -->
<!-- depends: -->
- [ ] Task 1: WebVTT parser
  <!-- files: lib/vtt.ts -->
- [ ] Task 2: SRT parser
  <!-- files: lib/srt.ts -->

## Phase 2: Interception
<!-- execution: sequential -->
- [ ] Task 1: XHR interceptor
- [ ] Task 2: Fetch interceptor

## Phase 3: Overlay
<!-- execution: parallel -->
<!-- depends: -->
- [ ] Task 1: Overlay renderer

## Phase 4: Integration
<!-- depends: phase2, phase3 -->
- [ ] Task 1: Coordinator
  <!-- depends: phase1/task2 -->
"""
    plan = conductor(text)
    assert plan.epic.title == "Subtitles"
    assert deps(plan)["phase2/task1"] == ["phase1/task1", "phase1/task2"]
    assert deps(plan)["phase3/task1"] == []
    assert deps(plan)["phase4/task1"] == ["phase1/task2", "phase2/task2", "phase3/task1"]


def test_annotations_and_code_fences_in_the_prose_are_not_misread() -> None:
    text = """\
# Plan: Tooling

## Phase 1: Scripts
<!-- execution: parallel -->

- [ ] Task 1: Install script
  <!-- files: scripts/install.sh,
       scripts/common.sh -->
  ```bash
  # Create the folder
  - [ ] not a task
  ## Phase 9: not a phase
  ```
- [ ] **Task: Forgot Password Page** 6ef5f86
- [ ] Task 3: Read `<!-- files: ... -->` annotations, and `<!--` alone
  Document `<!-- depends: task1 -->` in the README.
"""
    plan = conductor(text)
    tasks = plan.tasks
    assert [t.title for t in tasks] == [
        "Install script",
        "Forgot Password Page",
        "Read `<!-- files: ... -->` annotations, and `<!--` alone",
    ]
    assert tasks[0].files == ["scripts/install.sh", "scripts/common.sh"]
    assert tasks[2].files == [] and tasks[2].depends_on == []
    assert "Document `<!-- depends: task1 -->` in the README." in tasks[2].description
    assert "# Create the folder" in tasks[0].description
    assert [i.item for i in plan.items if i.kind == "epic"] == ["track", "phase1"]


def test_paths_outside_the_repository_are_dropped_with_a_warning() -> None:
    text = """\
## Phase 1: Setup
- [ ] Task 1: Write config
  <!-- files: config/app.toml, /etc/passwd, ../outside.txt, .git/hooks/pre-commit -->
"""
    plan = conductor(text)
    assert plan.tasks[0].files == ["config/app.toml"]
    assert len(plan.warnings) == 3 and all(w.startswith("line 3:") for w in plan.warnings)
    assert "is absolute" in plan.warnings[0]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "## Phase 1: A\n<!-- execution: parallel -->\n- [ ] Task 1: x\n"
            "  <!-- depends: task7 -->\n",
            4,
            "'task7', which is not a task of Phase 1 (it has task1)",
        ),
        (
            "## Phase 1: A\n<!-- execution: parallel -->\n- [ ] Task 1: x\n"
            "  <!-- depends: task2 -->\n- [ ] Task 2: y\n  <!-- depends: task1 -->\n",
            3,
            "wait for each other in a circle",
        ),
        (
            "## Phase 1: A\n- [ ] Task 1: x\n\n## Phase 2: B\n<!-- depends: phase5 -->\n"
            "- [ ] Task 1: y\n",
            5,
            "'phase5', which is not a phase of this plan",
        ),
        ("## Phase 1: A\n<!-- execution: fast -->\n- [ ] Task 1: x\n", 2, "execution mode"),
        ("## Phase 1: A\n- [ ] Task 1:\n", 2, "a task without a title"),
        ("## Phase 1: A\n- [ ] Task 1: x\n- [ ] Task 1: y\n", 3, "two tasks numbered 1"),
        ("## Phase 1: A\n- [ ] Task 1: x\n  <!-- files: a.py\n", 3, "never closed"),
        (
            "# Plan\n\nJust prose, no phases.\n- [ ] a checkbox outside any phase\n",
            4,
            "not under a `## Phase N: Name` heading",
        ),
        ("# Plan\n\n## Phase 1: Later\nTo be planned.\n", 3, "Phase 1 has no `- [ ] Task"),
        ("# Plan\n\nNothing planned yet.\n", None, "holds no tasks"),
    ],
)
def test_a_bad_plan_names_the_line_and_the_fix(text: str, line: int | None, words: str) -> None:
    with pytest.raises(PlanError) as caught:
        conductor(text)
    error = caught.value
    assert error.line == line and error.exit_code == 2
    assert words in str(error)
    assert str(error).startswith(f"{SOURCE}, line {line}:" if line else f"{SOURCE}:")
    assert error.hint


# ---- task-dispatcher YAML ---------------------------------------------------------------------


def test_yaml_tasks_with_outputs_dependencies_validation_and_effort() -> None:
    plan = parse_yaml(DISPATCHER_YAML, source=".conductor/task-dispatcher.yaml")
    items = {i.item: i for i in plan.items}
    assert list(items) == ["plan", "task/T1", "task/T2", "task/T4", "task/T8"]
    assert plan.epic.title == "Phase 5.3: Error Recovery & Advanced Features"
    t1, t4 = items["task/T1"], items["task/T4"]
    assert t1.title == "PostgreSQL Schema Design" and t1.line == 4
    assert t1.files == ["database/migrations/001_error_recovery_and_scheduling.sql"]
    assert t1.priority == 0 and items["task/T2"].priority == 1 and t4.priority == 2
    assert t1.estimate_secs == 4 * 3600 and items["task/T8"].estimate_secs == 2.5 * 3600
    assert "Agent: database-engineer" in t1.description
    assert "Read first:\n- docs/04-planning/K1NPlan_PHASE5_3" in t1.description
    assert "(section: T1: PostgreSQL Schema Design)" in t1.description
    assert "- file_exists\n- sql_syntax\n- schema_validation" in t1.description
    assert "- unit_tests (command: npm test -- retry-engine)" in t4.description
    assert t4.depends_on == ["task/T1", "task/T2"] and items["task/T8"].depends_on == ["task/T2"]
    assert all(i.parent == "plan" for i in plan.tasks)


def test_yaml_groups_done_tasks_and_a_top_level_list() -> None:
    text = """\
- taskId: T1
  title: Schema
  group: GROUP_A
  status: completed
- taskId: T2
  title: Types
  group: GROUP_A
- taskId: T4
  title: Retry engine
  group: GROUP_B
  dependencies: [GROUP_A]
"""
    plan = parse_yaml(text, source="dispatch.yaml")
    assert [(i.item, i.parent) for i in plan.items] == [
        ("plan", None),
        ("group/GROUP_A", "plan"),
        ("group/GROUP_B", "plan"),
        ("task/T2", "group/GROUP_A"),
        ("task/T4", "group/GROUP_B"),
    ]
    assert deps(plan)["task/T4"] == ["task/T2"]  # T1 is done: nothing to wait for
    assert plan.left_out[0].title == "Schema" and "done" in plan.left_out[0].reason


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("tasks:\n  - taskId: T1\n    title: Fix: the parser\n", 3, "does not parse, column 15"),
        ("tasks:\n\t- taskId: T1\n", 2, "does not parse"),
        (
            "tasks:\n  - taskId: T1\n    title: A\n    dependencies:\n      - T2\n      - T9\n"
            "  - taskId: T2\n    title: B\n",
            6,
            "T1 depends on 'T9', which is not a taskId in this file",
        ),
        (
            "tasks:\n  - taskId: T1\n    title: A\n    dependencies: [T2]\n"
            "  - taskId: T2\n    title: B\n    dependencies: [T1]\n",
            2,
            "T1 (A) -> T2 (B) -> T1 (A)",
        ),
        ("tasks:\n  - taskId: T1\n    effortHours: 2\n", 2, "T1 has no title"),
        ("tasks:\n  - title: A\n", 2, "task #1 has no taskId"),
        ("tasks:\n  - {taskId: T1, title: A}\n  - {taskId: T1, title: B}\n", 3, "used twice"),
        ("tasks:\n  - taskId: T1\n    title: A\n    effortHours: soon\n", 4, "not a number"),
        ("tasks: []\n", 1, "holds no tasks"),
        ("just: a mapping\n", None, "holds no `tasks:` list"),
    ],
)
def test_a_bad_yaml_file_names_the_line_and_the_fix(
    text: str, line: int | None, words: str
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_yaml(text, source="plan.yaml")
    assert caught.value.line == line and words in str(caught.value)
    assert caught.value.hint


# ---- reading and writing ----------------------------------------------------------------------


def write_track(repo: Path, plan: str = TRACK_PLAN) -> Path:
    folder = repo / "conductor" / "tracks" / "auth_20241226"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.md").write_text(plan, encoding="utf-8")
    (folder / "metadata.json").write_text(
        '{"track_id": "auth_20241226", "description": "Add user authentication"}',
        encoding="utf-8",
    )
    (folder / "spec.md").write_text("# Spec\n", encoding="utf-8")
    return folder


def test_load_plan_finds_the_track_its_metadata_and_spec(tmp_path: Path) -> None:
    folder = write_track(tmp_path)
    for given in (folder, folder / "plan.md"):
        plan = load_plan(given, tmp_path)
        assert plan.source == SOURCE and plan.epic.title == "Add user authentication"
        assert "Spec: conductor/tracks/auth_20241226/spec.md" in plan.epic.description
    (folder / "metadata.json").write_text('{"track_id": "x",\n "type": }', encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(folder, tmp_path)
    assert str(caught.value).startswith(
        "conductor/tracks/auth_20241226/metadata.json, line 2: is not valid JSON"
    )


def test_the_writer_stores_once_and_links_new_items_to_stored_ones(tmp_path: Path) -> None:
    store = JsonStore(tmp_path / "task_queue.json")
    folder = write_track(tmp_path)
    dry = import_plan(store, load_plan(folder, tmp_path), dry_run=True)
    assert [e.ref for e in dry.added][:3] == ["#1", "#2", "#3"] and store.all() == []
    assert dry.added[4].depends_on == ["#3"]  # Phase 1, Task 3 waits for Task 1

    first = import_plan(store, load_plan(folder, tmp_path))
    stored = {t.id: t for t in store.all()}
    assert len(stored) == 8 and [e.task.id for e in first.added if e.task] == list(stored)
    by_item = {e.item.item: e.task for e in first.added if e.task}
    assert by_item["phase1/task3"].depends_on == [by_item["phase1/task1"].id]
    assert by_item["phase1/task1"].parent == by_item["phase1"].id
    assert (by_item["phase2/task2"].model_extra or {})["imported_from"] == {
        "file": SOURCE,
        "item": "phase2/task2",
    }

    again = import_plan(store, load_plan(folder, tmp_path))
    assert again.added == [] and len(again.already) == 8 and len(store.all()) == 8

    grown = TRACK_PLAN + "- [ ] Task 4: Password reset\n  <!-- depends: task2 -->\n"
    write_track(tmp_path, grown)
    third = import_plan(store, load_plan(folder, tmp_path))
    assert [e.item.item for e in third.added] == ["phase2/task4"]
    new = third.added[0].task
    assert new is not None and new.parent == by_item["phase2"].id
    assert new.depends_on == [by_item["phase2/task3"].id, by_item["phase2/task2"].id]


def test_a_plan_under_a_parent_task_makes_it_an_epic(tmp_path: Path) -> None:
    from localdispatch.store import TaskDraft

    store = JsonStore(tmp_path / "task_queue.json")
    first = store.add(TaskDraft(title="Earlier work"))
    parent = store.add(TaskDraft(title="Ship auth", depends_on=[first.id]))
    path = tmp_path / "dispatch.yaml"
    path.write_text(DISPATCHER_YAML, encoding="utf-8")
    result = import_plan(store, load_plan(path, tmp_path), parent_id=parent.id)
    assert store.get(parent.id).kind == "epic"
    epic, t1 = result.added[0].task, result.added[1].task
    assert epic is not None and t1 is not None
    assert epic.parent == parent.id and t1.estimate_secs == 4 * 3600
    assert t1.depends_on == [first.id]  # what the parent waited for, its plan's first tasks do
