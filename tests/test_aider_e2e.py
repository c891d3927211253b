"""End to end with real Aider: split_task.py and dispatch_workers.py run for real, Aider runs in
its own virtual environment against the stub model server on 127.0.0.1, and git says what
happened.

Both protocols Aider speaks to a local server are covered: Ollama's (``ollama_chat/stub``,
found through ``ollama.host``) and OpenAI's (``openai/stub``, through ``OPENAI_API_BASE``).
The stub answers each request by looking at it: the splitter's request (it carries a JSON
schema) gets a plan, Aider's commit-message request a one-line message, and Aider's edit
request the edit scripted for the task it names, written in whichever edit format Aider's
system prompt asks for (``FileEdit``: the scenarios hold whatever ``--edit-format``
localdispatch picks). Aider starts in a few seconds, so every scenario is one dispatcher run
with the workers in parallel.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    add_task,
    commit_config,
    event_log,
    git,
    make_repo,
    run_aider,
    run_script,
    task_board,
)
from localdispatch.dispatch.aider_output import give_up_in_log
from localdispatch.processes.supervisor import repo_marker
from localdispatch.processes.trees import marked_processes
from localdispatch.testing import ModelServer, ScriptedReply, plan_reply
from localdispatch.testing.model_server import (
    AiderReply,
    FileEdit,
    asks_for_commit_message,
    edit_format_of,
    edit_reply,
)

pytestmark = [pytest.mark.aider, pytest.mark.slow]

HELLO = 'def greet():\n    return "hello"\n'
HELLO_HI = 'def greet():\n    return "hi"\n'
LOUD = 'def loud():\n    return "HELLO"\n'

# An editor answers the nth edit request of a task: edits (written in the format Aider asked
# for), or a raw reply for what no format allows.
Editor = Callable[[str, int], "Sequence[FileEdit] | str"]


class Script:
    """The stub's answers, chosen by what each request asks; counts edit requests per task."""

    def __init__(self, edit: Editor, plan: str = "") -> None:
        self.edit, self.plan = edit, plan
        self.asked: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        if body.get("format") or body.get("response_format"):
            return self.plan  # the splitter: JSON-schema output
        if asks_for_commit_message(body):
            return "Make the greetings work"
        messages = body.get("messages") or []
        text = "\n".join(str(m.get("content")) for m in messages if m.get("role") == "user")
        found = re.findall(r"# Task (t-\d+):", text)
        task_id = found[-1] if found else "?"
        with self._lock:
            self.asked[task_id] += 1
            nth = self.asked[task_id]
        answer = self.edit(task_id, nth)
        return answer if isinstance(answer, str) else edit_reply(body, answer)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A home folder of its own: no ~/.aider.conf.yml or ~/.env of the machine's user can
    change Aider here, and Aider's ~/.aider files land in the test's folder."""
    folder = tmp_path / "home"
    folder.mkdir()
    return {"HOME": str(folder), "USERPROFILE": str(folder)}


def configure(repo: Path, aider: Path, model: str, **settings: Any) -> None:
    config = {
        "branch": "main",
        "num_workers": 2,
        "worker_backend": "aider",
        "aider_cmd": str(aider),
        "model": model,
        "poll_interval_secs": 0.05,
        "worker_timeout_secs": 90,
        "worker_kill_grace_secs": 1,
        "max_worker_retries": 1,
        **settings,
    }
    commit_config(repo, config)


add, tasks, events = add_task, task_board, event_log  # short names for the scenarios below


def dispatch(
    repo: Path, env: dict[str, str], exit_code: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run the dispatcher until idle: exit 0 when every task is done, 3 when one failed or
    waits for a person."""
    result = run_script("dispatch_workers.py", "--until-idle", cwd=repo, env=env, timeout=110)
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_main_is_clean(repo: Path) -> None:
    """Nothing of Aider's own reached the base branch or the user's checkout and config."""
    tracked = git(repo, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert not [name for name in tracked if name.startswith(".aider")], tracked
    assert ".gitignore" not in tracked
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    # Without an identity Aider would have written "Your Name" into this config.
    local = subprocess.run(
        ["git", "config", "--local", "--get-regexp", "^user\\."],
        cwd=repo,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    assert local.stdout == ""
    assert marked_processes(repo_marker(repo)) == []


def test_ollama_split_dispatch_aider_merge(
    tmp_path: Path, aider_exe: Path, home: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ollama protocol: split_task.py plans two tasks, two Aider workers edit in whole-file
    format (chosen for the local model); a chatty first answer that makes a sentence-named file
    is caught, retried and never merged."""
    monkeypatch.delenv("OLLAMA_API_BASE", raising=False)  # ollama.host must be enough
    repo = make_repo(tmp_path / "my repo", {"hello.py": HELLO})

    def edit(task_id: str, nth: int) -> Sequence[FileEdit] | str:
        if task_id == "t-2":
            return [FileEdit("hello.py", '    return "hello"\n', '    return "hi"\n')]
        if nth == 1:  # t-3, first attempt: the name line is a sentence (whole format)
            return "Here is the updated file:\n```python\n" + LOUD + "```\n"
        return [FileEdit("greet/loud.py", "", LOUD)]

    plan = plan_reply(
        {"title": "Make greet say hi", "files": ["hello.py"]},
        {"title": "Add a loud greeting", "files": ["greet/loud.py"]},
    )
    script = Script(edit, plan)
    with ModelServer(default_reply=script, models=["stub"]) as server:
        configure(
            repo,
            aider_exe,
            "ollama_chat/stub",
            ollama={"host": server.url, "model": "stub", "timeout_secs": 30},
            split={"min_subtasks": 1},
        )
        split = run_script("split_task.py", "Greet people properly", cwd=repo)
        assert split.returncode == 0, split.stderr
        assert {t["title"] for t in tasks(repo).values()} >= {"Make greet say hi"}
        dispatch(repo, home)
        requests = server.requests

    board = tasks(repo)
    assert board["t-2"]["status"] == "done" and board["t-2"]["merged_commit"]
    assert board["t-3"]["status"] == "done" and board["t-3"]["attempts"] == 2
    assert board["t-1"]["kind"] == "epic" and board["t-1"]["status"] == "done"
    assert git(repo, "show", "main:hello.py") + "\n" == HELLO_HI
    assert git(repo, "show", "main:greet/loud.py") + "\n" == LOUD  # Aider made the folder
    tracked = git(repo, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "Here is the updated file" not in tracked
    caught = events(repo, "accidental_files")
    assert [(e["task"], e["files"]) for e in caught] == [("t-3", ["Here is the updated file"])]
    retry = events(repo, "retry")
    assert retry and "Here is the updated file" in retry[0]["reason"]
    # Aider spoke Ollama's protocol, to the server that ollama.host names.
    chats = [r for r in requests if r.path == "/api/chat" and not r.body.get("format")]
    assert chats and all(r.body["model"] == "stub" for r in chats)
    assert script.asked == Counter({"t-2": 1, "t-3": 2})
    # Aider's history went to .dispatch, never into a worktree. The task text names the
    # protected config, and Aider adds every tracked file a message names to the chat unless
    # the .aiderignore it was given hides it. The one file it may add is the suggestions
    # file, which the task text asks it to write.
    history = (repo / ".dispatch" / "history" / "t-2" / "chat.history.md").read_text("utf-8")
    assert "`dispatch_config.json`" in history
    lines = history.splitlines()
    offered = [lines[n - 1] for n, line in enumerate(lines) if "Add file to the chat?" in line]
    assert all("suggested_tasks.txt" in line for line in offered), offered
    # One commit per edit (no empty commit first for the new file).
    finished = [(e["task"], e["commits"]) for e in events(repo, "finish")]
    assert sorted(finished) == [("t-2", 1), ("t-3", 1), ("t-3", 1)]
    assert_main_is_clean(repo)


def test_openai_edits_that_apply_merge_and_ones_that_do_not_fail(
    repo: Path, aider_exe: Path, home: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI protocol (streamed as server-sent events), diff edit format: a SEARCH/REPLACE
    block that applies is committed and merged; one that matches nothing leaves no commit
    although Aider exits 0, so the task is retried and then failed with the cause Aider gave
    in its log, and the log named.
    Aider finds the server through the splitter's llm.base_url, with no key set anywhere."""
    for name in ("OPENAI_API_BASE", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    (repo / "hello.py").write_text(HELLO, encoding="utf-8")
    git(repo, "add", "hello.py")
    git(repo, "commit", "-q", "-m", "hello")
    good, bad = "t-1", "t-2"

    def edit(task_id: str, nth: int) -> Sequence[FileEdit]:
        if task_id == good:
            # The edit, and a follow-up idea in suggested_tasks.txt as the task text asks
            # (ignored by git, yet Aider may edit it; it waits on the failing task).
            return [
                FileEdit("hello.py", '    return "hello"\n', '    return "hi"\n'),
                FileEdit("suggested_tasks.txt", "", f"Add a farewell [after: {bad}]\n"),
            ]
        return [FileEdit("README.md", "no such line\n", "anything\n")]

    script = Script(edit)
    with ModelServer(default_reply=script, models=["stub"]) as server:
        llm = {"provider": "openai", "base_url": server.openai_url, "model": "stub"}
        configure(repo, aider_exe, "openai/stub", aider_edit_format="diff", llm=llm)
        assert add(repo, "Make greet say hi", "--files", "hello.py") == good
        assert add(repo, "Reword the readme", "--files", "README.md") == bad
        dispatch(repo, home, exit_code=3)  # a task failed
        requests = server.requests

    board = tasks(repo)
    assert board[good]["status"] == "done" and board[good]["merged_commit"]
    assert git(repo, "show", "main:hello.py") + "\n" == HELLO_HI
    failed = board[bad]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert (
        'Aider gave up: "Only 3 reflections allowed, stopping." after edits that did not apply '
        "(SearchReplaceNoExactMatch: a SEARCH block matched nothing in README.md)"
    ) in failed["closed_reason"]
    log = re.search(r"\(log: (.+?\.log)\)", failed["closed_reason"])
    assert log, failed["closed_reason"]
    assert "SearchReplaceNoExactMatch" in Path(log.group(1)).read_text(encoding="utf-8")
    idea = [t for t in board.values() if t["title"] == "Add a farewell"]
    assert idea and idea[0]["discovered_from"] == good and idea[0]["depends_on"] == [bad]
    assert "suggested_tasks.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")
    assert git(repo, "show", "main:README.md") == "# demo"
    edits = [r for r in requests if r.path == "/v1/chat/completions" and r.body.get("stream")]
    assert edits and all(r.body["model"] == "stub" for r in edits)  # SSE, Aider's default
    keys = {v for r in edits for k, v in r.headers.items() if k.lower() == "authorization"}
    assert keys == {"Bearer localdispatch"}  # the stand-in: Aider will not call without a key
    # Aider asked again after each failed match (its reflections), and again on the retry.
    assert script.asked[good] == 1 and script.asked[bad] > 2
    assert_main_is_clean(repo)


def test_a_model_server_that_goes_away_mid_attempt_costs_no_attempt(
    repo: Path, aider_exe: Path, home: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers when the run starts, then goes away during Aider's first request:
    Aider retries a refused connection (for over a minute, were it let), the worker timeout
    ends it with its whole process tree, its log says the server could not be reached, and
    the attempt is not held against the task, which waits for the server."""
    monkeypatch.delenv("OLLAMA_API_BASE", raising=False)
    server = ModelServer(models=["stub"]).start()

    def go_away(body: dict[str, Any]) -> ScriptedReply:
        threading.Thread(target=server.stop, daemon=True).start()
        return ScriptedReply(status=503, error="shutting down")

    server.default_reply = go_away
    address = server.url
    try:
        configure(
            repo,
            aider_exe,
            "ollama_chat/stub",
            ollama={"host": address},
            worker_timeout_secs=8,
            max_worker_retries=0,
        )
        task_id = add(repo, "Make greet say hi", "--files", "hello.py")
        result = dispatch(repo, home, exit_code=3)
    finally:
        server.stop()
    assert address in result.stderr, result.stderr
    task = tasks(repo)[task_id]
    assert task["status"] == "open", task
    [kill] = events(repo, "kill")
    assert kill["task"] == task_id
    give_up = give_up_in_log(repo / ".dispatch" / "logs" / f"{task_id}-attempt1.log")
    assert give_up is not None and give_up.server_unreachable, give_up
    assert "Connection refused" in give_up.cause or "refused" in give_up.cause
    assert git(repo, "rev-list", "--count", "main") == "2"  # the initial commit and the config
    assert_main_is_clean(repo)


# whole and diff are the formats of the scenarios above; these are the others Aider offers.
EDIT_FORMATS = ("diff-fenced", "udiff", "patch")


def test_the_stub_answers_in_every_edit_format_aider_asks_for(
    tmp_path: Path, aider_exe: Path
) -> None:
    """One scripted reply (a change, a new file, an addition at the end of a file) that real
    Aider applies and commits in each of its other edit formats."""
    edits = [
        FileEdit("hello.py", '    return "hello"\n', '    return "hi"\n'),
        FileEdit("loud.py", "", LOUD),
        FileEdit("README.md", "", "More.\n"),
    ]

    def attempt(edit_format: str) -> tuple[str, str | None]:
        repo = make_repo(tmp_path / edit_format, {"hello.py": HELLO, "README.md": "# demo\n"})
        log = tmp_path / f"{edit_format}.log"
        reply = AiderReply(edits, intro="Ok, I will:\n\n1. Make greet say hi.")
        with ModelServer(default_reply=reply, models=["stub"]) as server:
            run_aider(
                aider_exe,
                repo,
                model="openai/stub",
                server_url=server.url,
                message="# Task t-1: Greet loudly\n",
                files=["hello.py", "loud.py", "README.md"],
                log=log,
                edit_format=edit_format,
            )
            asked = [edit_format_of(r.body) for r in server.chat_requests]
        first = git(repo, "rev-list", "--max-parents=0", "main")
        changed = git(repo, "diff", "--name-only", first, "main").splitlines()
        files = {name: git(repo, "show", f"main:{name}") + "\n" for name in changed}
        expected = {"hello.py": HELLO_HI, "loud.py": LOUD, "README.md": "# demo\nMore.\n"}
        assert files == expected, log.read_text(encoding="utf-8")
        return log.read_text(encoding="utf-8"), next(filter(None, asked), None)

    with ThreadPoolExecutor(len(EDIT_FORMATS)) as pool:
        results = dict(zip(EDIT_FORMATS, pool.map(attempt, EDIT_FORMATS), strict=True))
    for edit_format, (log_text, asked) in results.items():
        assert asked == edit_format
        assert "did not conform" not in log_text, log_text
