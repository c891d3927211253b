"""The splitter: reply parsing and checks (pure), the rules split, writing, and the model loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdispatch.errors import InvalidTransition, LLMError, UsageError
from localdispatch.split.context import render_context
from localdispatch.split.llm import InvalidReply, OllamaProvider, ReplyLog
from localdispatch.split.plan import Limits, SplitPlan, Subtask, break_cycles, rule_subtasks
from localdispatch.split.splitter import (
    build_messages,
    context_window,
    parse_plan_reply,
    plan_with_model,
    plan_with_rules,
    reply_schema,
    write_plan,
)
from localdispatch.store import JsonStore, TaskDraft
from localdispatch.tasks import find_cycle
from localdispatch.testing import ModelServer, plan_reply

LIMITS = Limits(min_subtasks=2, max_subtasks=5)
EXISTING = {"src/app.py", "src/db.py", "README.md"}
MODEL = "qwen2.5-coder:7b"


def exists(path: str) -> bool:
    return path in EXISTING


def parse(text: str, limits: Limits = LIMITS) -> tuple[list[Subtask], list[str]]:
    return parse_plan_reply(text, limits, exists)


def three() -> str:
    return plan_reply(
        {"title": "Add model", "files": ["src/db.py"], "acceptance_criteria": ["tests pass"]},
        {"title": "Add view", "files": ["src/view.py"], "depends_on": [1]},
        {"title": "Wire it", "files": ["src/app.py"], "depends_on": [1, 2]},
    )


# ---- the schema and the prompt -----------------------------------------------------------


def test_schema_requires_every_subtask_field() -> None:
    schema = reply_schema()
    subtask = schema["$defs"]["SubtaskReply"]
    assert set(subtask["required"]) == {
        "title",
        "description",
        "files",
        "depends_on",
        "acceptance_criteria",
    }
    assert schema["required"] == ["subtasks"]


def test_prompt_holds_limits_goal_context_and_parent() -> None:
    from localdispatch.tasks import Task

    context = render_context(["src/app.py"], "goal", readme=("README.md", "# Demo app"))
    parent = Task(id="t-7", title="Big thing", description="Details here", files=["src/app.py"])
    system, user = build_messages("Build the big thing", context, LIMITS, parent)
    assert "between 2 and 5 subtasks" in system["content"]
    assert "Goal: Build the big thing" in user["content"]
    assert "t-7: Big thing\nDetails here\nFiles named in it: src/app.py" in user["content"]
    assert "src/app.py" in user["content"] and "# Demo app" in user["content"]
    assert context_window([system, user]) == 8192


# ---- parsing and checking a reply (pure) -------------------------------------------------


def test_valid_reply_becomes_subtasks_with_new_files_marked() -> None:
    subtasks, warnings = parse(three())
    assert [s.title for s in subtasks] == ["Add model", "Add view", "Wire it"]
    assert subtasks[1].new_files == ["src/view.py"] and subtasks[0].new_files == []
    assert [s.depends_on for s in subtasks] == [[], [0], [0, 1]]
    assert subtasks[0].acceptance_criteria == ["tests pass"]
    assert warnings == []


def test_think_tags_fences_and_prose_are_tolerated() -> None:
    text = f"<think>Planning...</think>\nHere you go:\n```json\n{three()}\n```"
    assert len(parse(text)[0]) == 3


def test_bare_list_and_other_wrapper_names_are_accepted() -> None:
    items = json.loads(three())["subtasks"]
    assert len(parse(json.dumps(items))[0]) == 3
    assert len(parse(json.dumps({"tasks": items}))[0]) == 3


def test_lenient_about_single_values_where_lists_belong() -> None:
    text = json.dumps(
        {
            "subtasks": [
                {"title": "A", "files": "src/a.py, src/b.py", "acceptance_criteria": "works"},
                {"title": "B", "files": ["src/c.py"], "depends_on": 1},
            ]
        }
    )
    subtasks, _ = parse(text)
    assert subtasks[0].files == ["src/a.py", "src/b.py"]
    assert subtasks[1].depends_on == [0]


def test_wrong_schema_is_invalid_with_a_message_for_the_model() -> None:
    with pytest.raises(InvalidReply, match=r"subtasks\[2\]\.title: Field required"):
        parse(json.dumps({"subtasks": [{"title": "ok"}, {"name": "no title"}]}))
    with pytest.raises(InvalidReply, match="subtasks: Field required"):
        parse(json.dumps({"answer": "I cannot do that"}))


def test_too_many_and_too_few_subtasks_are_invalid() -> None:
    many = plan_reply(*({"title": f"T{i}", "files": [f"f{i}.py"]} for i in range(7)))
    with pytest.raises(InvalidReply, match="7 subtasks but at most 5"):
        parse(many)
    with pytest.raises(InvalidReply, match="only 1 subtasks but at least 2"):
        parse(plan_reply({"title": "Only one", "files": ["a.py"]}))


def test_dependencies_by_number_title_and_zero_based() -> None:
    by_title = plan_reply(
        {"title": "Schema", "files": ["a.py"]},
        {"title": "API", "files": ["b.py"], "depends_on": ["schema", "#1"]},
    )
    assert parse(by_title)[0][1].depends_on == [0]
    zero_based = plan_reply(
        {"title": "A", "files": ["a.py"]},
        {"title": "B", "files": ["b.py"], "depends_on": [0]},
        {"title": "C", "files": ["c.py"], "depends_on": [1]},
    )
    assert [s.depends_on for s in parse(zero_based)[0]] == [[], [0], [1]]


def test_unknown_and_self_dependencies_are_dropped() -> None:
    text = plan_reply(
        {"title": "A", "files": ["a.py"], "depends_on": [1]},
        {"title": "B", "files": ["b.py"], "depends_on": [9, "t-44", "Nothing"]},
    )
    subtasks, warnings = parse(text)
    assert [s.depends_on for s in subtasks] == [[], []]
    assert len(warnings) == 3
    assert "dependency 9 is not in this batch" in warnings[0]


def test_duplicate_titles_are_merged_and_dependencies_follow() -> None:
    text = plan_reply(
        {"title": "Add API", "files": ["api.py"], "description": "Part one."},
        {"title": "Add tests", "files": ["test_api.py"], "depends_on": [3]},
        {"title": "add  API.", "files": ["api_extra.py"], "description": "Part two."},
    )
    subtasks, warnings = parse(text)
    assert [s.title for s in subtasks] == ["Add API", "Add tests"]
    assert subtasks[0].files == ["api.py", "api_extra.py"]
    assert subtasks[0].description == "Part one.\n\nPart two."
    assert subtasks[1].depends_on == [0]
    assert any("merged the duplicate" in w for w in warnings)


def test_paths_outside_the_repository_are_dropped_with_warnings() -> None:
    text = plan_reply(
        {"title": "A", "files": ["../outside.py", "/etc/passwd", "src\\app.py", "./src/db.py"]},
        {
            "title": "B",
            "files": ["C:\\Windows\\system.ini", "\\\\server\\share\\x.py", ".git/config"],
        },
    )
    subtasks, warnings = parse(text)
    assert subtasks[0].files == ["src/app.py", "src/db.py"]
    assert subtasks[1].files == []
    dropped = [w for w in warnings if "dropped the path" in w]
    assert len(dropped) == 5
    assert any("climbs out" in w for w in dropped)
    assert any("drive letter" in w for w in dropped)
    assert any("name no file" in w and "'B'" in w for w in warnings)


def test_cycles_are_broken_not_stored() -> None:
    text = plan_reply(
        {"title": "A", "files": ["a.py"], "depends_on": [3]},
        {"title": "B", "files": ["b.py"], "depends_on": [1]},
        {"title": "C", "files": ["c.py"], "depends_on": [2]},
        {"title": "D", "files": ["d.py"], "depends_on": [5]},
        {"title": "E", "files": ["e.py"], "depends_on": [4]},
    )
    subtasks, warnings = parse(text)
    edges = {str(i): [str(d) for d in s.depends_on] for i, s in enumerate(subtasks)}
    assert find_cycle(edges) is None
    # The earlier task waiting for a later one is the edge that goes.
    assert [s.depends_on for s in subtasks] == [[], [0], [1], [], [3]]
    assert sum("broke a dependency cycle" in w for w in warnings) == 2


def test_break_cycles_handles_a_self_loop_and_two_cycles_sharing_a_node() -> None:
    subtasks = [
        Subtask("A", depends_on=[1]),
        Subtask("B", depends_on=[0, 2]),
        Subtask("C", depends_on=[1]),
    ]
    break_cycles(subtasks)
    edges = {str(i): [str(d) for d in s.depends_on] for i, s in enumerate(subtasks)}
    assert find_cycle(edges) is None


# ---- the --no-llm rules ------------------------------------------------------------------


def test_rules_split_sentences_bullets_and_then() -> None:
    goal = (
        "Add a login form in src/app.py.\n- Store sessions in db.py\nThen document it in README.md"
    )
    subtasks = rule_subtasks(goal, Limits(2, 10), ["src/app.py", "src/db.py", "README.md"])
    assert [s.title for s in subtasks] == [
        "Add a login form in src/app.py",
        "Store sessions in db.py",
        "Document it in README.md",
    ]
    assert [s.files for s in subtasks] == [["src/app.py"], ["src/db.py"], ["README.md"]]
    assert [s.depends_on for s in subtasks] == [[], [], [1]]


def test_rules_expand_a_list_when_too_few_sentences() -> None:
    goal = "Add a full analytics dashboard with cycle time, throughput and WIP"
    titles = [s.title for s in rule_subtasks(goal, Limits(3, 10))]
    assert titles == [
        "Add a full analytics dashboard with cycle time",
        "Add a full analytics dashboard with throughput",
        "Add a full analytics dashboard with WIP",
    ]
    assert [s.title for s in rule_subtasks("Fix login, logout and signup", Limits(3, 10))] == [
        "Fix login",
        "Fix logout",
        "Fix signup",
    ]


def test_rules_plan_refuses_too_many_and_warns_about_too_few() -> None:
    with pytest.raises(UsageError, match="4 parts but at most 3"):
        plan_with_rules("One. Two. Three. Four.", Limits(1, 3), exists)
    plan = plan_with_rules("Just one thing", Limits(3, 10), exists)
    assert len(plan.subtasks) == 1
    assert "fewer than split.min_subtasks" in plan.warnings[0]


# ---- writing -----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> JsonStore:
    return JsonStore(tmp_path / "task_queue.json")


def make_plan() -> SplitPlan:
    subtasks, _warnings = parse(three())
    return SplitPlan(
        goal="Build the thing\nwith details", subtasks=subtasks, source="model", model=MODEL
    )


def test_write_plan_stores_an_epic_and_linked_children(store: JsonStore) -> None:
    written = write_plan(store, make_plan())
    epic, kids = written.epic, written.children
    assert (epic.kind, epic.title) == ("epic", "Build the thing")
    assert "with details" in epic.description and MODEL in epic.description
    assert [k.parent for k in kids] == [epic.id] * 3
    assert kids[1].depends_on == [kids[0].id]
    assert kids[2].depends_on == [kids[0].id, kids[1].id]
    assert "New files (they do not exist yet): src/view.py" in kids[1].description
    assert "Acceptance criteria:\n- tests pass" in kids[0].description
    assert "Part of: Build the thing" in kids[0].description
    assert len(store.all()) == 4


def test_write_plan_under_a_parent_makes_it_the_epic(store: JsonStore) -> None:
    first = store.add(TaskDraft(title="Prerequisite"))
    parent = store.add(TaskDraft(title="Big task", priority=1, depends_on=[first.id]))
    written = write_plan(store, make_plan(), parent)
    assert written.epic.id == parent.id
    assert store.get(parent.id).kind == "epic"
    kids = written.children
    assert all(k.parent == parent.id and k.priority == 1 for k in kids)
    # The root child inherits what the epic waited for; the others wait through it.
    assert kids[0].depends_on == [first.id]
    assert kids[1].depends_on == [kids[0].id]


def test_a_closed_parent_is_refused(store: JsonStore) -> None:
    parent = store.add(TaskDraft(title="Done already"))
    store.close(parent.id)
    with pytest.raises(InvalidTransition, match="only an open task can be split"):
        write_plan(store, make_plan(), parent)
    assert len(store.all()) == 1


class FailingStore(JsonStore):
    def add_many(self, drafts: Any) -> Any:
        raise OSError("disk full")


def test_a_failed_write_leaves_the_parent_as_it_was(tmp_path: Path) -> None:
    JsonStore(tmp_path / "task_queue.json").add(TaskDraft(title="Big task"))
    failing = FailingStore(tmp_path / "task_queue.json")
    parent = failing.get("t-1")
    with pytest.raises(OSError, match="disk full"):
        write_plan(failing, make_plan(), parent)
    assert failing.get("t-1").kind == "task"


# ---- the model loop against a real server ------------------------------------------------


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer(models=[MODEL]) as running:
        yield running


def ask(server: ModelServer, tmp_path: Path, attempts: int = 3) -> SplitPlan:
    context = render_context(sorted(EXISTING), "goal")
    return plan_with_model(
        OllamaProvider(server.url, MODEL, 10),
        "Build the thing",
        context,
        LIMITS,
        max_attempts=attempts,
        exists=exists,
        reply_log=ReplyLog.new(tmp_path / "logs", "split"),
    )


def test_model_plan_with_repair_after_wrong_schema(server: ModelServer, tmp_path: Path) -> None:
    server.add_replies('{"steps": "do it all"}', three())
    plan = ask(server, tmp_path)
    assert (plan.source, plan.model, plan.attempts) == ("model", MODEL, 2)
    assert len(plan.subtasks) == 3
    assert len(plan.log_files) == 3  # the prompt and two replies
    request = server.chat_requests[0].body
    assert request["format"] == reply_schema()
    assert request["options"]["temperature"] == 0
    assert "subtasks: Field required" in server.chat_requests[1].messages[-1]["content"]
    assert plan.context["files_total"] == 3


def test_model_plan_repairs_too_many_subtasks(server: ModelServer, tmp_path: Path) -> None:
    many = plan_reply(*({"title": f"T{i}", "files": [f"f{i}.py"]} for i in range(9)))
    server.add_replies(many, three())
    assert len(ask(server, tmp_path).subtasks) == 3
    assert "at most 5" in server.chat_requests[1].messages[-1]["content"]


def test_model_plan_never_valid_names_the_logs(server: ModelServer, tmp_path: Path) -> None:
    truncated = three()[:80]
    server.default_reply = truncated
    with pytest.raises(LLMError) as caught:
        ask(server, tmp_path, attempts=2)
    message = str(caught.value)
    assert "no valid plan in 2 attempts" in message
    assert "cut off" in message
    assert str(tmp_path / "logs") in message
    assert "--no-llm" in message
    saved = sorted((tmp_path / "logs").glob("split-*.reply-*.txt"))
    assert [p.read_text(encoding="utf-8") for p in saved] == [truncated, truncated]


def test_plan_to_dict_counts_from_one(server: ModelServer, tmp_path: Path) -> None:
    server.add_replies(three())
    data: dict[str, Any] = ask(server, tmp_path).to_dict()
    assert [s["number"] for s in data["subtasks"]] == [1, 2, 3]
    assert data["subtasks"][2]["depends_on"] == [1, 2]
    assert data["subtasks"][1]["new_files"] == ["src/view.py"]
    assert json.loads(json.dumps(data)) == data
