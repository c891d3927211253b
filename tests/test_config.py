"""dispatch_config.json: defaults, friendly errors, the committed schema, `config check`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT, localdispatch, run_script
from localdispatch.config import (
    Config,
    load_config,
    normalize_host,
    parse_config,
    schema_text,
    split_command_string,
)
from localdispatch.errors import ConfigError
from localdispatch.layout import ensure_state_ignored, layout_for

DESIGN_KEYS = {
    "repo_root": ".",
    "branch": "main",
    "num_workers": 2,
    "worker_backend": "aider",
    "model": "ollama_chat/qwen2.5-coder:7b",
    "aider_cmd": "aider",
    "worker_command": None,
    "worker_timeout_secs": 1800,
    "max_worker_retries": 2,
    "auto_merge_worktrees": True,
    "merge_slot": True,
    "create_task_on_merge_conflict": True,
    "auto_retry_merge_on_conflict_close": True,
    "on_conflict": "assign_back",
    "test_command": None,
    "protected_paths": None,
    "poll_interval_secs": 0.5,
    "worktree_dir": ".dispatch/worktrees",
    "store": "json",
    "task_queue_file": "task_queue.json",
    "suggested_tasks_file": "suggested_tasks.txt",
}


def test_empty_object_is_valid_with_every_design_default() -> None:
    config = parse_config("{}")
    dumped = config.model_dump()
    for key, default in DESIGN_KEYS.items():
        assert dumped[key] == default, key
    assert config.ollama.host == "http://127.0.0.1:11434"
    assert config.ollama.model == "qwen2.5-coder:7b"
    assert config.ollama.timeout_secs == 120
    assert (config.split.max_subtasks, config.split.min_subtasks) == (10, 3)


def test_path_b_file_is_accepted() -> None:
    text = json.dumps(
        {
            "num_workers": 14,
            "worktree_prefix": "ozon-w",
            "worktree_placement": "inside",
            "branch": "main",
            "model": "ollama/qwen3-coder:30b",
            "aider_cmd": "aider",
            "repo_root": ".",
        }
    )
    config = parse_config(text)
    assert config.num_workers == 14 and config.worktree_prefix == "ozon-w"


def test_sibling_placement_puts_worktrees_beside_the_repo(tmp_path: Path) -> None:
    path = tmp_path / "proj" / "dispatch_config.json"
    path.parent.mkdir()
    path.write_text('{"worktree_placement": "sibling", "worktree_prefix": "w"}', encoding="utf-8")
    layout = layout_for(load_config(path))
    assert layout.slot_worktree(1) == (tmp_path / "proj-w1").resolve()


def test_example_config_in_the_repository_is_valid() -> None:
    config = load_config(ROOT / "dispatch_config.json")
    assert config.schema_ref == "./dispatch_config.schema.json"


def test_committed_schema_is_in_sync() -> None:
    committed = (ROOT / "dispatch_config.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "dispatch_config.schema.json is stale: run "
        "`localdispatch config schema > dispatch_config.schema.json`"
    )


def test_schema_forbids_unknown_keys_and_lists_every_key() -> None:
    schema = json.loads(schema_text())
    assert schema["additionalProperties"] is False
    assert set(DESIGN_KEYS) <= set(schema["properties"])
    assert "$schema" in schema["properties"]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('{"num_worker": 3}', ["unknown key 'num_worker'", "did you mean 'num_workers'"]),
        ('{"ollama": {"modle": "x"}}', ["'ollama.modle'", "did you mean 'ollama.model'"]),
        ('{"zzz": 1}', ["unknown key 'zzz'", "valid keys are"]),
        ('{"num_workers": "two"}', ["'num_workers'", '"two"', "an integer"]),
        ('{"num_workers": true}', ["'num_workers'", "true", "an integer"]),
        ('{"merge_slot": "yes"}', ["'merge_slot'", "true or false"]),
        ('{"on_conflict": "rebase"}', ["'on_conflict'", "'assign_back'", "'auto_rebase'"]),
        ('{"num_workers": 0}', ["'num_workers'", "an integer from 1 to 64"]),
        ('{"worker_backend": "command"}', ["worker_command"]),
        ('{"split": {"min_subtasks": 9, "max_subtasks": 4}}', ["min_subtasks (9)"]),
        ('{"num_workers": 2,}', ["line 1, column 19", "trailing comma"]),
        ('{\n  "branch": "main"\n  "x": 1\n}', ["invalid JSON at line 3, column 3"]),
        ("[1, 2]", ["top level must be a JSON object"]),
    ],
)
def test_errors_name_the_problem(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="dispatch_config.json")
    message = str(caught.value)
    assert message.startswith("dispatch_config.json")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            '{"worker_kill_grace_secs": Infinity}',
            ["'worker_kill_grace_secs'", "Infinity", "a finite number from 0 to 3600 seconds"],
        ),
        ('{"worker_timeout_secs": NaN}', ["'worker_timeout_secs'", "NaN", "from 0 to 604800"]),
        ('{"worker_timeout_secs": 1e300}', ["'worker_timeout_secs'", "1e+300", "(a week)"]),
        ('{"test_timeout_secs": -Infinity}', ["'test_timeout_secs'", "above 0 and at most"]),
        (
            '{"max_worker_retries": 1000000000000000000000}',
            ["'max_worker_retries'", "an integer from 0 to 100"],
        ),
        ('{"max_merge_attempts": 101}', ["'max_merge_attempts'", "from 1 to 100"]),
        ('{"poll_interval_secs": Infinity}', ["'poll_interval_secs'", "at most 60 seconds"]),
        ('{"ollama": {"timeout_secs": 1e9}}', ["'ollama.timeout_secs'", "at most 604800"]),
        (
            '{"worker_command": ["my-agent", "{task_file}"]}',
            ['worker_backend is "aider"', 'did you mean "worker_backend": "command"?'],
        ),
        (
            '{"worker_backend": "command", "worker_command": ["my-agent", "--in={taskfile}"]}',
            [
                'worker_command[1] "--in={taskfile}"',
                "did you mean {task_file}?",
                "{task_file}, {model}, {worktree}, {task_id}, {files}, {branch}, {base}",
            ],
        ),
        (
            '{"worker_backend": "command", "worker_command": ["x", "{bogus}"]}',
            ["{bogus}", "not a placeholder; the valid ones are {task_file}"],
        ),
        ('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", ["nested too deeply"]),
        ('{"num_workers": 1' + "0" * 5000 + "}", ["a number too long to read"]),
    ],
)
def test_absurd_values_are_refused_naming_key_value_and_range(
    text: str, fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="dispatch_config.json")
    message = str(caught.value)
    assert message.startswith("dispatch_config.json: ")
    for fragment in fragments:
        assert fragment in message, message


def test_braces_that_are_not_a_placeholder_stay_allowed() -> None:
    argv = ["agent", '{"mode": "auto", "files": []}', "{}", "{files}", "--id={task_id}"]
    config = parse_config(json.dumps({"worker_backend": "command", "worker_command": argv}))
    assert config.worker_command == argv


def test_workers_fill_in_the_placeholders_the_config_accepts() -> None:
    from localdispatch import config
    from localdispatch.dispatch import worker

    assert worker.PLACEHOLDERS is config.PLACEHOLDERS
    for name in config.PLACEHOLDERS:
        assert "{" + name + "}" in (Config.model_fields["worker_command"].description or "")


def test_sanity_gate_is_on_by_default_and_in_the_schema() -> None:
    assert parse_config("{}").sanity_gate is True
    assert parse_config('{"sanity_gate": false}').sanity_gate is False
    schema = json.loads(schema_text())
    assert schema["properties"]["sanity_gate"]["default"] is True
    with pytest.raises(ConfigError, match="true or false"):
        parse_config('{"sanity_gate": "no"}')


def test_repo_root_that_names_no_folder_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "dispatch_config.json"
    config.write_text('{"repo_root": "x"}', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert f"repo_root 'x' resolves to {(tmp_path / 'x').resolve()}, which does not exist" in (
        message
    )
    assert caught.value.key == "repo_root" and '"repo_root"' in (caught.value.hint or "")
    (tmp_path / "x").write_text("a file", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_config(config)


def test_unknown_key_error_gives_its_line() -> None:
    with pytest.raises(ConfigError, match=r"line 3"):
        parse_config('{\n  "branch": "main",\n  "num_worker": 1\n}')


def test_missing_explicit_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")


def test_config_is_found_upwards_and_repo_root_is_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "dispatch_config.json").write_text('{"repo_root": "code"}', encoding="utf-8")
    deep = tmp_path / "code" / "src"
    deep.mkdir(parents=True)
    config = load_config(cwd=deep)
    assert config.source == (tmp_path / "dispatch_config.json").resolve()
    assert config.repo_path == (tmp_path / "code").resolve()


def test_no_config_means_defaults_in_the_current_folder(tmp_path: Path) -> None:
    config = load_config(cwd=tmp_path)
    assert config.source is None and config.repo_path == tmp_path.resolve()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ("http://example:1234/", "http://example:1234"),
        ("https://gpu-box", "https://gpu-box:11434"),
    ],
)
def test_ollama_host_is_normalized(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


def test_ollama_host_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:5555")
    assert Config().ollama.host == "http://127.0.0.1:5555"


def test_test_command_string_becomes_argv_without_a_shell() -> None:
    config = parse_config('{"test_command": "python -m pytest -q \\"tests dir\\""}')
    argv = config.test_argv()
    assert argv is not None and argv[:3] == ["python", "-m", "pytest"]
    assert argv[-1] == "tests dir"
    assert split_command_string("a; rm -rf x") == ["a;", "rm", "-rf", "x"]


def test_state_files_are_excluded_from_git(repo: Path) -> None:
    config = load_config(cwd=repo)
    exclude = ensure_state_ignored(layout_for(config))
    assert exclude is not None
    ensure_state_ignored(layout_for(config))  # idempotent
    text = exclude.read_text(encoding="utf-8")
    assert text.count("/.dispatch/") == 1
    for name in (
        "task_queue.json",
        "suggested_tasks.txt",
        ".dispatch/x.lock",
        "task_queue.json.1.tmp",
    ):
        target = repo / name
        target.parent.mkdir(exist_ok=True)
        target.write_text("x", encoding="utf-8")
    from conftest import git

    assert git(repo, "status", "--porcelain") == ""


# ---- the real command -------------------------------------------------------------------


def test_config_check_ok_and_json(repo: Path) -> None:
    (repo / "dispatch_config.json").write_text('{"num_workers": 3}', encoding="utf-8")
    result = localdispatch("config", "check", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["settings"]["num_workers"] == 3
    assert "dispatch_config.json" in data["protected_paths"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"num_worker": 3}', "did you mean 'num_workers'"),
        ('{"num_workers": 2,,}', "line 1, column"),
        ('{"num_workers": "many"}', "expected an integer"),
    ],
)
def test_bad_config_exits_2_without_traceback(repo: Path, text: str, needle: str) -> None:
    (repo / "dispatch_config.json").write_text(text, encoding="utf-8")
    for args in (["config", "check"], ["tasks", "list"], ["tasks", "add", "x"]):
        result = localdispatch(*args, cwd=repo)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr
        assert "Traceback" not in result.stderr
        assert str(repo / "dispatch_config.json") in result.stderr
    assert not (repo / "task_queue.json").exists()


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        (
            '{\n  "worker_kill_grace_secs": Infinity\n}',
            ["'worker_kill_grace_secs' (line 2)", "Infinity", "from 0 to 3600 seconds"],
        ),
        ('{"repo_root": "missing"}', ["repo_root 'missing' resolves to", "does not exist"]),
        ('{"worker_command": ["agent"]}', ['did you mean "worker_backend": "command"?']),
        (
            '{"worker_backend": "command", "worker_command": ["agent", "{taskfile}"]}',
            ["{taskfile}", "did you mean {task_file}?", "{branch}, {base}"],
        ),
    ],
)
def test_config_check_refuses_what_would_break_dispatch(
    repo: Path, config: str, needles: list[str]
) -> None:
    path = repo / "dispatch_config.json"
    path.write_text(config, encoding="utf-8")
    before = path.read_bytes()
    for args in (["config", "check"], ["config", "check", "--json"], ["tasks", "list"]):
        result = localdispatch(*args, cwd=repo)
        assert result.returncode == 2, (args, result.stderr)
        assert str(path) in result.stderr and "Traceback" not in result.stderr
        for needle in needles:
            assert needle in result.stderr, result.stderr
    assert path.read_bytes() == before
    assert not (repo / "task_queue.json").exists()


def test_config_schema_command_matches_committed_file(tmp_path: Path) -> None:
    result = localdispatch("config", "schema", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == (ROOT / "dispatch_config.schema.json").read_text(encoding="utf-8")


def test_launcher_explains_missing_dependencies(tmp_path: Path) -> None:
    """Without site-packages (-S) the launcher says how to install instead of a traceback."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-S", str(ROOT / "dispatch_workers.py"), "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "pip install" in result.stderr and "Traceback" not in result.stderr


def test_launchers_run_from_the_checkout(tmp_path: Path) -> None:
    for script in ("split_task.py", "dispatch_workers.py", "ingest_suggested_tasks.py"):
        result = run_script(script, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "--config" in result.stdout


def test_readme_config_table_is_generated_from_the_model() -> None:
    from localdispatch.config import reference_markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- config-table:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- config-table:end -->")
    assert readme[start:end] == reference_markdown(), (
        "README's config table is stale: paste the output of `localdispatch config docs`"
    )


def test_user_protected_paths_add_to_the_defaults(tmp_path: Path) -> None:
    from localdispatch.layout import protected_patterns

    path = tmp_path / "dispatch_config.json"
    path.write_text('{"protected_paths": ["secrets/**"]}', encoding="utf-8")
    config = load_config(path)
    patterns = protected_patterns(config, layout_for(config))
    assert "secrets/**" in patterns
    for always in (
        "dispatch_config.json",
        "dispatch_workers.py",
        "task_queue.json",
        ".dispatch/**",
    ):
        assert always in patterns


# ---- config check looks at the repository as dispatch will ----------------------------------

COMMAND_WORKER = {"worker_backend": "command", "worker_command": [sys.executable, "-c", "pass"]}


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("setup", "needles"),
    [
        ("plain folder", ["is not a git repository", "git init"]),
        ("no commit", ["has no commit yet", "Make a first commit"]),
        ("no base branch", ["base branch 'trunk' does not exist", 'set "branch"']),
    ],
)
def test_config_check_names_what_dispatch_would_refuse(
    tmp_path: Path, setup: str, needles: list[str]
) -> None:
    from conftest import git, make_repo

    folder = tmp_path / "project"
    settings: dict[str, object] = dict(COMMAND_WORKER)
    if setup == "plain folder":
        folder.mkdir()
    elif setup == "no commit":
        folder.mkdir()
        git(folder, "init", "-q", "-b", "main")
    else:
        make_repo(folder)
        settings["branch"] = "trunk"
    (folder / "dispatch_config.json").write_text(json.dumps(settings), encoding="utf-8")
    checked = localdispatch("config", "check", cwd=folder)
    assert checked.returncode == 1, checked.stderr
    assert "Traceback" not in checked.stderr
    line = _error_line(checked.stderr)
    for needle in needles:
        assert needle in line
    assert "repository is not ready" in checked.stdout
    as_json = localdispatch("config", "check", "--json", cwd=folder)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["valid"] is True and report["repository"]["ready"] is False
    assert report["repository"]["problem"] == line.removeprefix("error: ")
    # The same words as dispatch itself.
    dispatched = run_script("dispatch_workers.py", "--until-idle", cwd=folder)
    assert dispatched.returncode == 1
    assert line in dispatched.stderr.splitlines()


def test_config_check_passes_a_ready_repository_and_names_the_base_tip(repo: Path) -> None:
    from conftest import git

    result = localdispatch("config", "check", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")
    assert git(repo, "rev-parse", "main") in result.stdout
    report = json.loads(localdispatch("config", "check", "--json", cwd=repo).stdout)
    assert report["repository"] == {
        "ready": True,
        "base_tip": git(repo, "rev-parse", "main"),
        "problem": None,
    }


def test_config_check_refuses_a_repo_root_below_the_top_level(repo: Path) -> None:
    sub = repo / "app"
    sub.mkdir()
    (sub / "dispatch_config.json").write_text("{}", encoding="utf-8")
    result = localdispatch("config", "check", cwd=sub)
    assert result.returncode == 2, result.stderr
    line = _error_line(result.stderr)
    assert f"resolves to {sub.resolve()}, which is a folder inside the git repository" in line
    assert "set \"repo_root\" to '..'" in line
