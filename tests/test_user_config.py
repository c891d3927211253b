"""The user config under the repository's file: layering, origins, `config set`, doctor.

Every test reads the user config that tests/conftest.py's autouse fixture points
LOCALDISPATCH_USER_CONFIG at (a file in the test's own tmp_path), never the real one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import git, localdispatch
from localdispatch.config import (
    SCHEMA_REF,
    USER_CONFIG_ENV,
    load_config,
    parse_value,
    set_values,
    user_config_path,
)
from localdispatch.errors import ConfigError

REPO_FILE = "dispatch_config.json"


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# ---- where the user config is ---------------------------------------------------------------


def test_the_tests_never_read_the_real_user_config(user_config: Path, tmp_path: Path) -> None:
    assert user_config_path() == user_config
    assert user_config.is_relative_to(tmp_path)


def test_without_the_variable_the_path_is_platformdirs_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platformdirs

    monkeypatch.delenv(USER_CONFIG_ENV)
    expected = Path(platformdirs.user_config_dir("localdispatch")) / "config.json"
    assert user_config_path() == expected


# ---- layering -------------------------------------------------------------------------------


def test_repository_wins_key_by_key_and_sections_merge(repo: Path, user_config: Path) -> None:
    write_json(
        user_config,
        {
            "aider_cmd": "/opt/aider-venv/bin/aider",
            "num_workers": 6,
            "ollama": {"host": "gpu-box:11434", "model": "from-user:1b", "timeout_secs": 30},
        },
    )
    repo_file = write_json(
        repo / REPO_FILE, {"num_workers": 3, "ollama": {"model": "from-repo:7b"}}
    )
    config = load_config(cwd=repo)
    assert config.num_workers == 3  # the repository wins
    assert config.aider_cmd == "/opt/aider-venv/bin/aider"  # only the user file sets it
    # One section, keys from both files.
    assert config.ollama.host == "http://gpu-box:11434"
    assert config.ollama.model == "from-repo:7b"
    assert config.ollama.timeout_secs == 30
    assert config.split.max_subtasks == 10  # nobody set it

    assert config.source == repo_file.resolve()
    assert config.user_source == user_config.resolve()
    assert config.origin_of("num_workers") == repo_file.resolve()
    assert config.origin_of("aider_cmd") == user_config.resolve()
    assert config.origin_of("ollama.host") == user_config.resolve()
    assert config.origin_of("ollama.model") == repo_file.resolve()
    assert config.origin_of("ollama.timeout_secs") == user_config.resolve()
    assert config.origin_of("branch") is None
    assert config.origin_of("split.max_subtasks") is None
    assert "$schema" not in config.origins


def test_user_config_applies_without_a_repository_file(repo: Path, user_config: Path) -> None:
    write_json(user_config, {"model": "ollama_chat/mine:14b"})
    config = load_config(cwd=repo)
    assert config.source is None and config.repo_path == repo.resolve()
    assert config.model == "ollama_chat/mine:14b"
    assert config.origin_of("model") == user_config.resolve()


def test_no_user_config_changes_nothing(repo: Path) -> None:
    write_json(repo / REPO_FILE, {"num_workers": 3})
    config = load_config(cwd=repo)
    assert config.user_source is None
    assert config.origins == {"num_workers": (repo / REPO_FILE).resolve()}


def test_an_openai_server_in_the_user_config_serves_the_repositories_that_choose_it(
    repo: Path, user_config: Path
) -> None:
    # llm.base_url alone would be a stray key with the Ollama provider; from the user config
    # it is this machine's server, waiting for a repository that picks "openai".
    write_json(user_config, {"llm": {"base_url": "http://127.0.0.1:8080/v1"}})
    assert load_config(cwd=repo).splitter_target()[1] == "http://127.0.0.1:11434"
    write_json(repo / REPO_FILE, {"llm": {"provider": "openai", "model": "smollm2"}})
    config = load_config(cwd=repo)
    assert config.splitter_target() == ("smollm2", "http://127.0.0.1:8080/v1")
    # The repository's own stray key is still a mistake.
    write_json(repo / REPO_FILE, {"llm": {"base_url": "http://127.0.0.1:8080/v1"}})
    with pytest.raises(ConfigError, match=r'used only with llm\.provider "openai"'):
        load_config(cwd=repo)


# ---- errors name the right file -------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_text", "needles"),
    [
        ('{"num_worker": 2}', ["unknown key 'num_worker'", "did you mean 'num_workers'?"]),
        ('{"ollama": {"hots": "x"}}', ["unknown key 'ollama.hots'", "'ollama.host'"]),
        ('{\n  "num_workers": "many"\n}', ["'num_workers' (line 2)", "expected an integer"]),
        ('{"num_workers": 2,}', ["invalid JSON at line 1", "trailing comma"]),
        ('{"repo_root": "."}', ["repo_root cannot be set in the user config"]),
    ],
)
def test_a_bad_user_config_is_named(
    repo: Path, user_config: Path, user_text: str, needles: list[str]
) -> None:
    write_json(repo / REPO_FILE, {"num_workers": 3})
    user_config.parent.mkdir(parents=True)
    user_config.write_text(user_text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=repo)
    message = str(caught.value)
    assert message.startswith(f"{user_config} (user config): "), message
    assert str(repo / REPO_FILE) not in message
    assert caught.value.path == user_config
    for needle in needles:
        assert needle in message

    result = localdispatch("config", "check", cwd=repo)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = error_line(result.stderr)
    assert str(user_config) in line and needles[0] in line


def test_a_bad_repository_file_is_named_not_the_user_config(repo: Path, user_config: Path) -> None:
    write_json(user_config, {"aider_cmd": "/opt/aider"})
    write_json(repo / REPO_FILE, {"num_worker": 3})
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=repo)
    assert str(caught.value).startswith(f"{repo / REPO_FILE}: unknown key 'num_worker'")
    assert str(user_config) not in str(caught.value)


def test_a_rule_about_keys_in_both_files_names_both(repo: Path, user_config: Path) -> None:
    write_json(user_config, {"worker_command": ["my-agent", "{task_file}"]})
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=repo)  # worker_command without the command backend: the user's
    assert str(caught.value).startswith(f"{user_config} (user config): worker_command is set")

    write_json(repo / REPO_FILE, {"worker_backend": "aider"})
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=repo)
    assert str(caught.value).startswith(
        f"{repo / REPO_FILE} with {user_config} (user config): worker_command is set"
    )

    write_json(repo / REPO_FILE, {"worker_backend": "command"})
    assert load_config(cwd=repo).worker_command == ["my-agent", "{task_file}"]


def test_a_user_config_path_that_is_a_folder_is_refused(repo: Path, user_config: Path) -> None:
    user_config.mkdir(parents=True)
    with pytest.raises(
        ConfigError, match=re.escape(f"The user config {user_config} is not a file")
    ):
        load_config(cwd=repo)


# ---- config check shows where each value came from ------------------------------------------


def test_config_check_shows_the_file_of_every_value_that_is_not_a_default(
    repo: Path, user_config: Path
) -> None:
    write_json(user_config, {"aider_cmd": "/opt/aider", "ollama": {"host": "gpu-box"}})
    write_json(repo / REPO_FILE, {"num_workers": 3, "ollama": {"model": "m:7b"}})
    result = localdispatch("config", "check", cwd=repo)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"user config: {user_config}" in out
    user_part = out.split(f"set in {user_config} (user config):")[1].split("set in")[0]
    repo_part = out.split(f"set in {(repo / REPO_FILE).resolve()}:")[1]
    assert 'aider_cmd   = "/opt/aider"' in user_part
    assert 'ollama.host = "http://gpu-box:11434"' in user_part
    assert "num_workers  = 3" in repo_part and 'ollama.model = "m:7b"' in repo_part
    assert "num_workers" not in user_part and "ollama.model" not in user_part
    assert "every other key has its default" in out

    report = json.loads(localdispatch("config", "check", "--json", cwd=repo).stdout)
    assert report["user_config_file"] == str(user_config)
    assert report["user_config_found"] is True
    assert report["origins"] == {
        "aider_cmd": str(user_config),
        "ollama.host": str(user_config),
        "num_workers": str((repo / REPO_FILE).resolve()),
        "ollama.model": str((repo / REPO_FILE).resolve()),
    }
    assert report["settings"]["ollama"]["host"] == "http://gpu-box:11434"


def test_config_check_without_any_file_says_so(repo: Path, user_config: Path) -> None:
    result = localdispatch("config", "check", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert f"user config: none ({user_config} does not exist)" in result.stdout
    assert "every key has its default" in result.stdout
    report = json.loads(localdispatch("config", "check", "--json", cwd=repo).stdout)
    assert report["origins"] == {} and report["user_config_found"] is False


# ---- config set ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("true", True),
        ("null", None),
        ('["pytest","-q"]', ["pytest", "-q"]),
        ('"2024"', "2024"),
        ("C:/Users/me/aider-venv/Scripts/aider.exe", "C:/Users/me/aider-venv/Scripts/aider.exe"),
        ("C:\\Users\\me\\aider.exe", "C:\\Users\\me\\aider.exe"),
        ("http://gpu-box:11434", "http://gpu-box:11434"),
        ("python -m pytest -q", "python -m pytest -q"),
    ],
)
def test_values_are_json_when_they_parse_else_text(text: str, value: object) -> None:
    assert parse_value(text) == value


@pytest.mark.parametrize("text", ['["pytest",', '{"a": 1', '"unclosed'])
def test_broken_json_is_not_taken_as_text(text: str) -> None:
    with pytest.raises(ConfigError, match="opens like JSON but is not JSON"):
        parse_value(text, "test_command")


def test_config_set_creates_the_repository_file_at_the_top_level(repo: Path) -> None:
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    result = localdispatch("config", "set", "num_workers", "3", cwd=sub)
    assert result.returncode == 0, result.stderr
    created = repo / REPO_FILE
    assert f"Set num_workers = 3 in {created} (created)" in result.stdout
    assert json.loads(created.read_text(encoding="utf-8")) == {
        "$schema": SCHEMA_REF,
        "num_workers": 3,
    }
    assert not (sub / REPO_FILE).exists()
    # "$schema" points at a schema that is there, in the state folder git ignores.
    schema = json.loads((repo / SCHEMA_REF).read_text(encoding="utf-8"))
    assert "num_workers" in schema["properties"]
    assert git(repo, "status", "--porcelain") == f"?? {REPO_FILE}"

    result = localdispatch("config", "set", "test_command", '["pytest","-q"]', cwd=sub)
    assert result.returncode == 0, result.stderr
    assert load_config(cwd=sub).test_command == ["pytest", "-q"]


def test_config_set_keeps_order_other_keys_and_style(repo: Path) -> None:
    path = repo / REPO_FILE
    original = (
        '{\r\n    "$schema": "./dispatch_config.schema.json",\r\n    "branch": "main",\r\n'
        '    "ollama": {\r\n        "model": "qwen2.5-coder:7b"\r\n    },\r\n'
        '    "num_workers": 2\r\n}\r\n'
    )
    path.write_bytes(b"\xef\xbb\xbf" + original.encode("utf-8"))
    assert localdispatch("config", "set", "num_workers", "4", cwd=repo).returncode == 0
    assert localdispatch("config", "set", "ollama.timeout_secs", "60", cwd=repo).returncode == 0
    assert localdispatch("config", "set", "sanity_gate", "false", cwd=repo).returncode == 0
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw[3:].decode("utf-8")
    assert text == (
        '{\r\n    "$schema": "./dispatch_config.schema.json",\r\n    "branch": "main",\r\n'
        '    "ollama": {\r\n        "model": "qwen2.5-coder:7b",\r\n'
        '        "timeout_secs": 60\r\n    },\r\n'
        '    "num_workers": 4,\r\n    "sanity_gate": false\r\n}\r\n'
    )


def test_a_one_line_file_stays_one_line(repo: Path) -> None:
    path = repo / REPO_FILE
    path.write_text('{"num_workers": 2}', encoding="utf-8")
    assert localdispatch("config", "set", "branch", "main", cwd=repo).returncode == 0
    assert path.read_text(encoding="utf-8") == '{"num_workers": 2, "branch": "main"}'


def test_config_set_user_writes_the_user_file_with_dotted_keys(
    repo: Path, user_config: Path
) -> None:
    write_json(repo / REPO_FILE, {"ollama": {"model": "m:7b"}})
    before = (repo / REPO_FILE).read_bytes()
    result = localdispatch("config", "set", "ollama.host", "gpu-box:11434", "--user", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert f'Set ollama.host = "gpu-box:11434" in {user_config} (created)' in result.stdout
    assert result.stderr == ""  # the right file: no advice
    aider = "C:/Users/me/aider-venv/Scripts/aider.exe"
    assert localdispatch("config", "set", "aider_cmd", aider, "--user", cwd=repo).returncode == 0
    assert json.loads(user_config.read_text(encoding="utf-8")) == {
        "ollama": {"host": "gpu-box:11434"},
        "aider_cmd": aider,
    }
    assert (repo / REPO_FILE).read_bytes() == before
    config = load_config(cwd=repo)
    assert (config.ollama.host, config.ollama.model) == ("http://gpu-box:11434", "m:7b")
    assert config.aider_cmd == aider


def test_config_set_json_output(repo: Path, user_config: Path) -> None:
    result = localdispatch(
        "config", "set", "model", "ollama_chat/x:1b", "--user", "--json", cwd=repo
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "file": str(user_config),
        "created": True,
        "set": {"model": "ollama_chat/x:1b"},
        "notes": [],
    }


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["num_workers", "0"],
            ["Refused num_workers = 0", "expected an integer from 1 to 64"],
        ),
        (["num_worker", "3"], ["Unknown key 'num_worker'", "did you mean 'num_workers'?"]),
        (["ollama.hots", "x"], ["Unknown key 'ollama.hots'", "did you mean 'ollama.host'?"]),
        (["num_workers.max", "3"], ["'num_workers' holds a value, not a section"]),
        (["branch", "2024"], ["Refused branch = 2024", "expected a string", "'\"2024\"'"]),
        (["worker_backend", "command"], ['worker_backend "command" needs worker_command']),
        (["llm.base_url", "ftp://x"], ["Refused llm.base_url", "not an http://"]),
        (["repo_root", "no-such-folder"], ["repo_root 'no-such-folder' resolves to"]),
        (["test_command", '["pytest",'], ["test_command value", "opens like JSON but is not"]),
    ],
)
def test_a_refused_value_writes_nothing(repo: Path, args: list[str], needles: list[str]) -> None:
    path = repo / REPO_FILE
    path.write_text('{\n  "branch": "main",\n  "num_workers": 2\n}\n', encoding="utf-8")
    before = path.read_bytes()
    result = localdispatch("config", "set", *args, cwd=repo)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    line = error_line(result.stderr)
    for needle in needles:
        assert needle in line
    assert path.read_bytes() == before
    assert list(repo.glob(f"{REPO_FILE}.*")) == []  # no temporary file left


def test_a_refused_user_value_writes_nothing(repo: Path, user_config: Path) -> None:
    for args, needle in (
        (["repo_root", "."], "repo_root cannot be set in the user config"),
        (["num_workers", "100"], "Refused num_workers = 100"),
    ):
        result = localdispatch("config", "set", *args, "--user", cwd=repo)
        assert result.returncode == 2
        assert needle in error_line(result.stderr) and str(user_config) in result.stderr
        assert not user_config.exists()
    write_json(user_config, {"aider_cmd": "/opt/aider"})
    before = user_config.read_bytes()
    result = localdispatch("config", "set", "split.min_subtasks", "20", "--user", cwd=repo)
    assert result.returncode == 2
    assert "split.min_subtasks (20) is larger than split.max_subtasks (10)" in result.stderr
    assert user_config.read_bytes() == before


def test_the_whole_result_must_validate_with_the_other_file(repo: Path, user_config: Path) -> None:
    # The user file's worker_command needs the repository's "command" backend, and the
    # repository may not drop it while the user file relies on it.
    write_json(repo / REPO_FILE, {"worker_backend": "command", "worker_command": ["a"]})
    result = localdispatch(
        "config", "set", "worker_command", '["my-agent","{task_file}"]', "--user", cwd=repo
    )
    assert result.returncode == 0, result.stderr
    before = (repo / REPO_FILE).read_bytes()
    result = localdispatch("config", "set", "worker_backend", "aider", cwd=repo)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert 'Refused worker_backend = "aider"' in line and str(user_config) in line
    assert (repo / REPO_FILE).read_bytes() == before


def test_machine_paths_in_the_repository_file_get_a_note(repo: Path, user_config: Path) -> None:
    aider = "C:/Users/me/aider-venv/Scripts/aider.exe"
    result = localdispatch("config", "set", "aider_cmd", aider, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert json.loads((repo / REPO_FILE).read_text(encoding="utf-8"))["aider_cmd"] == aider
    assert "note: aider_cmd is a path on this machine" in result.stderr
    assert str(user_config) in result.stderr
    assert f"`localdispatch config set aider_cmd {aider} --user`" in result.stderr
    notes = set_values(repo / REPO_FILE, {"ollama.host": "http://gpu-box:11434"}, user=False)
    assert len(notes) == 1
    assert notes[0].startswith("ollama.host is the address of this machine's Ollama server")
    openai = {"llm.provider": "openai", "llm.model": "m", "llm.base_url": "http://h:1/v1"}
    notes = set_values(repo / REPO_FILE, openai, user=False)
    assert len(notes) == 1
    assert notes[0].startswith("llm.base_url is the address of this machine's model server")
    # A bare name on PATH is the same on every machine.
    assert localdispatch("config", "set", "aider_cmd", "aider", cwd=repo).stderr == ""


def test_repository_keys_in_the_user_file_get_a_note(repo: Path) -> None:
    result = localdispatch("config", "set", "branch", "trunk", "--user", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "note: branch describes one repository" in result.stderr
    assert "`localdispatch config set branch trunk` inside the repository" in result.stderr


def test_a_user_value_the_repository_overrides_gets_a_note(repo: Path) -> None:
    write_json(repo / REPO_FILE, {"model": "ollama_chat/team:7b"})
    result = localdispatch("config", "set", "model", "ollama_chat/mine:14b", "--user", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert f"{repo / REPO_FILE} also sets model, and the repository's file wins" in (result.stderr)
    assert load_config(cwd=repo).model == "ollama_chat/team:7b"


def test_set_values_api_for_init(repo: Path, user_config: Path) -> None:
    """What `localdispatch init` uses: several settings at once, into either file."""
    notes = set_values(
        repo / REPO_FILE, {"branch": "main", "test_command": ["pytest", "-q"]}, user=False
    )
    assert notes == []
    notes = set_values(
        user_config,
        {"aider_cmd": "/home/me/aider-venv/bin/aider", "ollama.host": "http://gpu:11434"},
        user=True,
        cwd=repo,
    )
    assert notes == []
    config = load_config(cwd=repo)
    assert config.origin_of("branch") == (repo / REPO_FILE).resolve()
    assert config.origin_of("ollama.host") == user_config.resolve()


# ---- doctor ----------------------------------------------------------------------------------


def doctor_checks(repo: Path) -> tuple[int, dict[str, dict[str, object]]]:
    result = localdispatch("doctor", "--json", cwd=repo)
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    return result.returncode, {c["name"]: c for c in data["checks"]}


def test_doctor_says_an_absent_user_config_is_fine(repo: Path, user_config: Path) -> None:
    _code, checks = doctor_checks(repo)
    check = checks["user config"]
    assert check["status"] == "ok"
    assert f"none at {user_config}" in str(check["detail"]) and "--user" in str(check["detail"])


def test_doctor_names_a_bad_user_config_its_key_and_fix(repo: Path, user_config: Path) -> None:
    write_json(user_config, {"num_workers": "many"})
    code, checks = doctor_checks(repo)
    assert code == 1
    check = checks["user config"]
    assert check["status"] == "fail" and check["required"] is True
    assert str(user_config) in str(check["detail"])
    assert "'num_workers'" in str(check["detail"])
    assert "localdispatch config set num_workers VALUE --user" in str(check["fix"])
    assert checks["config"]["status"] == "fail"

    text = localdispatch("doctor", cwd=repo)
    assert text.returncode == 1
    assert f"[FAIL] user config: {user_config}" in text.stdout


def test_doctor_lists_what_the_user_config_sets(repo: Path, user_config: Path) -> None:
    write_json(user_config, {"aider_cmd": "/opt/aider", "ollama": {"host": "gpu-box"}})
    _code, checks = doctor_checks(repo)
    assert checks["user config"]["status"] == "ok"
    assert "sets aider_cmd, ollama.host" in str(checks["user config"]["detail"])
    assert str(user_config) in str(checks["config"]["detail"])


def test_doctor_says_a_machine_path_belongs_in_the_user_config(
    repo: Path, user_config: Path
) -> None:
    write_json(repo / REPO_FILE, {"aider_cmd": "/home/me/aider-venv/bin/aider"})
    git(repo, "add", REPO_FILE)
    git(repo, "commit", "-q", "-m", "config")
    _code, checks = doctor_checks(repo)
    check = checks["settings placement"]
    assert check["status"] == "warn" and check["required"] is False
    assert str(check["fix"]).startswith(
        f"aider_cmd is a path on this machine; move it to {user_config} with "
        "`localdispatch config set aider_cmd /home/me/aider-venv/bin/aider --user` and "
        "remove it from dispatch_config.json"
    )

    # Moved as advised: nothing left to say.
    assert (
        localdispatch(
            "config", "set", "aider_cmd", "/home/me/aider-venv/bin/aider", "--user", cwd=repo
        ).returncode
        == 0
    )
    write_json(repo / REPO_FILE, {})
    _code, checks = doctor_checks(repo)
    assert checks["settings placement"]["status"] == "ok"


def test_doctor_leaves_an_ignored_repository_file_alone(repo: Path) -> None:
    write_json(repo / REPO_FILE, {"ollama": {"host": "gpu-box"}})
    _code, checks = doctor_checks(repo)
    assert checks["settings placement"]["status"] == "warn"  # untracked: shared once committed
    (repo / ".git" / "info" / "exclude").write_text(f"/{REPO_FILE}\n", encoding="utf-8")
    _code, checks = doctor_checks(repo)
    assert checks["settings placement"]["status"] == "ok"


def test_doctor_says_a_repository_setting_belongs_in_the_repository(
    repo: Path, user_config: Path
) -> None:
    write_json(user_config, {"test_command": ["pytest", "-q"]})
    _code, checks = doctor_checks(repo)
    check = checks["settings placement"]
    assert check["status"] == "warn"
    assert "test_command describes one repository" in str(check["fix"])
    assert str(user_config) in str(check["fix"])
