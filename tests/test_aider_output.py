"""Reading how Aider gave up, from logs that real Aider wrote.

Every log in ``tests/aider_logs/`` is the output of Aider 0.86 (from ``.venv-aider``, run as
a localdispatch worker runs it: ``--no-pretty``, output to a file) against the stub model
server, in one of the situations of :data:`SCENARIOS`; only the worktree and venv paths were
replaced by neutral ones. To write them again (after an Aider upgrade, say):

    PYTHONPATH=src python tests/test_aider_output.py [SCENARIO ...]

The scenarios with a dead or failing server take about a minute and a half (Aider's own
retries); they run side by side. ``test_the_stored_logs_are_what_aider_prints_now`` runs the
quick ones again and checks that they still read the same.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import find_aider, make_repo, run_aider
from localdispatch.dispatch.aider_output import (
    TAIL_BYTES,
    GiveUp,
    give_up_in_log,
    read_give_up,
    read_log_tail,
)
from localdispatch.testing import ModelServer, ScriptedReply, closed_port
from localdispatch.testing.model_server import asks_for_commit_message

LOGS = Path(__file__).resolve().parent / "aider_logs"
WORKTREE = "/home/me/project/.dispatch/worktrees/slot-1"  # stands for the run's real paths
AIDER_VENV = "/home/me/aider-venv"

# ---- the situations, and what each log must read as -----------------------------------------
HELLO = 'def greet():\n    return "hello"\n'
TASK = '# Task t-1: Make greet say hi\n\nChange hello.py so greet returns "hi".\n'
BAD_PY = 'hello.py\n```python\ndef greet(:\n    return "hi"\n```\n'
GOOD_WHOLE = 'hello.py\n```python\ndef greet():\n    return "hi"\n```\n'


def search_replace(name: str, search: str, replace: str) -> str:
    return f"{name}\n```python\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n"


GOOD_BLOCK = search_replace("hello.py", '    return "hello"\n', '    return "hi"\n')
# The case: SEARCH/REPLACE markers written into a whole-format file.
MARKERS = search_replace("hello.py", HELLO, HELLO.replace("hello", "hi"))
Answer = str | ScriptedReply


@dataclass(frozen=True)
class Scenario:
    """One run of Aider: its model, edit format and the model's replies in turn (the last one
    repeats); no replies means no server at all."""

    model: str
    edit_format: str
    replies: tuple[Answer, ...] = ()
    files: dict[str, str] = field(default_factory=lambda: {"hello.py": HELLO})
    commit_message: Answer = "Make greet say hi"
    kill_after_secs: float = 200
    extra_args: tuple[str, ...] = ()
    quick: bool = True  # done in seconds (no minute of Aider's retries)


SCENARIOS: dict[str, Scenario] = {
    "lint_reflections": Scenario("ollama_chat/stub", "whole", (MARKERS,)),
    "lint_left_no_edit": Scenario(
        "openai/stub", "whole", (BAD_PY, "I fixed the syntax error, the file is correct now.")
    ),
    "lint_then_fixed": Scenario("openai/stub", "whole", (BAD_PY, GOOD_WHOLE)),
    "diff_nomatch": Scenario(
        "openai/stub", "diff", (search_replace("hello.py", "no such line\n", "anything\n"),)
    ),
    "diff_malformed": Scenario(
        "openai/stub", "diff", ("hello.py\n```python\n<<<<<<< SEARCH\ndef greet():\n```\n",)
    ),
    "udiff_nomatch": Scenario(
        "openai/stub",
        "udiff",
        ("```diff\n--- hello.py\n+++ hello.py\n@@ ... @@\n-def nothing():\n+def x():\n```\n",),
    ),
    "whole_no_filename": Scenario(
        "openai/stub",
        "whole",
        ('```python\ndef greet():\n    return "hi"\n```\n',),
        files={"hello.py": HELLO, "other.py": "X = 1\n"},
    ),
    "partial_match": Scenario(
        "openai/stub",
        "diff",
        (GOOD_BLOCK + search_replace("hello.py", "nothing here\n", "x\n"), "Done, that is all."),
    ),
    "malformed_then_good": Scenario(
        "openai/stub", "diff", ("hello.py\n```python\n<<<<<<< SEARCH\n```\n", GOOD_BLOCK)
    ),
    "good": Scenario("openai/stub", "diff", (GOOD_BLOCK,)),
    # The model's reply quotes Aider's own lines, then makes a good edit.
    "chatty_echo": Scenario(
        "openai/stub",
        "whole",
        (
            "The LLM did not conform to the edit format.\n"
            "Only 3 reflections allowed, stopping.\n"
            "# Fix any errors below, if possible.\n"
            "litellm.APIConnectionError: Connection refused\n\n" + GOOD_WHOLE,
        ),
    ),
    # The edit applies; only the commit message's request fails (and the commit is made).
    "commit_message_failed": Scenario(
        "openai/stub",
        "whole",
        (GOOD_WHOLE,),
        commit_message=ScriptedReply(status=401, error="Incorrect API key provided"),
    ),
    "write_error": Scenario(
        "openai/stub",
        "whole",
        (GOOD_WHOLE + "\npkg\n```\nX = 1\n```\n",),
        files={"hello.py": HELLO, "pkg/__init__.py": ""},
    ),
    "bad_extra_arg": Scenario("openai/stub", "whole", (GOOD_WHOLE,), extra_args=("--no-such",)),
    "model_not_found_openai": Scenario("openai/missing", "whole", ("x",)),
    "auth": Scenario(
        "openai/stub", "whole", (ScriptedReply(status=401, error="Incorrect API key provided"),)
    ),
    "token_limit": Scenario(
        "ollama_chat/stub",
        "whole",
        (ScriptedReply(text="hello.py\n```python\ndef greet():\n", done_reason="length"),),
    ),
    "context_exceeded": Scenario(
        "openai/stub",
        "whole",
        (ScriptedReply(status=400, error="This model's maximum context length is 4096 tokens."),),
    ),
    "empty": Scenario("openai/stub", "whole", ("",)),
    # Killed (as at a worker timeout) while Aider retries a server that is not there.
    "dead_killed": Scenario("ollama_chat/stub", "whole", kill_after_secs=12),
    "dead_ollama": Scenario("ollama_chat/stub", "whole", quick=False),
    "dead_openai": Scenario("openai/stub", "whole", quick=False),
    "model_not_found_ollama": Scenario("ollama_chat/missing", "whole", ("x",), quick=False),
    "server_error_openai": Scenario(
        "openai/stub", "whole", (ScriptedReply(status=500, error="boom"),), quick=False
    ),
}

REFLECTIONS = 'Aider gave up: "Only 3 reflections allowed, stopping."'
NOT_REACHED = "the model server could not be reached"
# name: (kind, server unreachable, words the cause must hold), or None for "did not give up".
EXPECTED: dict[str, tuple[str, bool, tuple[str, ...]] | None] = {
    "lint_reflections": (
        "reflections",
        False,
        (REFLECTIONS, "after lint errors it could not fix", "hello.py:1:2: E999 SyntaxError"),
    ),
    "lint_left_no_edit": (
        "lint_errors",
        False,
        ("Aider left lint errors it did not fix", "hello.py:1:12: E999 SyntaxError"),
    ),
    "diff_nomatch": (
        "reflections",
        False,
        (REFLECTIONS, "edits that did not apply", "SearchReplaceNoExactMatch", "in hello.py"),
    ),
    "diff_malformed": ("reflections", False, (REFLECTIONS, "Expected `=======`")),
    "udiff_nomatch": (
        "reflections",
        False,
        (REFLECTIONS, "UnifiedDiffNoMatch: a diff hunk matched nothing in hello.py"),
    ),
    "whole_no_filename": (
        "reflections",
        False,
        (REFLECTIONS, "No filename provided before ``` in file listing"),
    ),
    "partial_match": (
        "edits_not_applied",
        False,
        ('"The LLM did not conform to the edit format."', "SearchReplaceNoExactMatch"),
    ),
    "lint_then_fixed": None,
    "malformed_then_good": None,
    "good": None,
    "chatty_echo": None,
    "commit_message_failed": None,
    "write_error": ("aider_error", False, ("Unable to write file", "Is a directory")),
    "bad_extra_arg": ("aider_error", False, ("aider: error: unrecognized arguments: --no-such",)),
    "model_not_found_openai": (
        "model_error",
        False,
        ("litellm.NotFoundError", 'model "missing" not found, try pulling it first'),
    ),
    "model_not_found_ollama": (
        "model_error",
        False,
        ("after 9 tries", "litellm.APIConnectionError", "model 'missing' not found"),
    ),
    "auth": (
        "model_error",
        False,
        ("litellm.AuthenticationError", "Check your API key."),
    ),
    "token_limit": ("token_limit", False, ('"Model ollama_chat/stub has hit a token limit!"',)),
    "context_exceeded": ("token_limit", False, ('"Model openai/stub has hit a token limit!"',)),
    "empty": ("empty_reply", False, ("Empty response received from LLM.",)),
    "dead_killed": (
        "model_error",
        True,
        ("still retrying", "[Errno 111] Connection refused", NOT_REACHED),
    ),
    "dead_ollama": (
        "model_error",
        True,
        ("after 9 tries", "Ollama_chatException - [Errno 111] Connection refused", NOT_REACHED),
    ),
    "dead_openai": (
        "model_error",
        True,
        ("after 9 tries", "OpenAIException - Connection error.", NOT_REACHED),
    ),
    "server_error_openai": (
        "model_error",
        False,
        ("after 9 tries", "OpenAIException - boom", "servers are down or overloaded"),
    ),
}


def stored(name: str) -> str:
    return (LOGS / f"{name}.log").read_text(encoding="utf-8")


def check(give_up: GiveUp | None, name: str) -> None:
    expected = EXPECTED[name]
    if expected is None:
        assert give_up is None, give_up
        return
    assert give_up is not None, name
    kind, unreachable, words = expected
    assert (give_up.kind, give_up.server_unreachable) == (kind, unreachable), give_up
    for word in words:
        assert word in give_up.cause, (word, give_up.cause)
    assert "\n" not in give_up.cause and len(give_up.cause) <= 320
    assert give_up.evidence


# ---- the stored logs ------------------------------------------------------------------------
def test_every_scenario_has_a_log_and_an_expectation() -> None:
    assert set(EXPECTED) == set(SCENARIOS)
    assert {p.stem for p in LOGS.glob("*.log")} == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_real_log_reads_true(name: str) -> None:
    check(read_give_up(stored(name)), name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_windows_line_endings_read_the_same(name: str) -> None:
    text = stored(name)
    assert read_give_up(text.replace("\n", "\r\n")) == read_give_up(text)


def test_some_commits_do_not_hide_a_give_up() -> None:
    """The issue's case: the broken file was committed, and Aider still gave up on it."""
    text = stored("lint_reflections")
    assert "Commit " in text and "Applied edit to hello.py" in text
    give_up = read_give_up(text)
    assert give_up is not None
    assert give_up.cause == (
        'Aider gave up: "Only 3 reflections allowed, stopping." after lint errors it could not '
        "fix (hello.py:1:2: E999 SyntaxError: invalid syntax)"
    )
    assert give_up.evidence == "Only 3 reflections allowed, stopping."


def test_the_dispatchers_fetch_of_prices_is_not_a_server_failure() -> None:
    """Every offline run starts with Aider failing to fetch litellm's price list; that says
    nothing about the model server."""
    text = stored("good")
    assert "Failed to resolve 'raw.githubusercontent.com'" in text
    assert read_give_up(text) is None


def test_windows_connection_refused_is_unreachable() -> None:
    """The same log as Windows words it (httpx's WinError 10061)."""
    text = stored("dead_ollama").replace(
        "[Errno 111] Connection \nrefused",
        "[WinError 10061] No connection could be made \nbecause the target machine actively "
        "refused it",
    )
    give_up = read_give_up(text)
    assert give_up is not None and give_up.server_unreachable
    assert "actively refused it" in give_up.cause


def test_aider_words_inside_other_lines_or_a_reply_do_not_count() -> None:
    good = stored("good")
    mentions = good.replace(
        "Added hello.py to the chat.",
        "Added hello.py to the chat.\n"
        "the task: if you see Only 3 reflections allowed, stopping. then stop\n"
        "> The LLM did not conform to the edit format.",
    )
    assert read_give_up(mentions) is None
    # A first reply that only quotes the lint header and edits nothing: no lint ran.
    quoted = (
        "Added hello.py to the chat.\n\n# Fix any errors below, if possible.\n\n"
        "hello.py:1:1: E999 SyntaxError: not really\n\nTokens: 672 sent, 20 received.\n"
    )
    assert read_give_up(quoted) is None


def test_a_traceback_that_ends_the_log_is_a_crash() -> None:
    """Aider's own exception (not a lint report's traceback) as the last thing it printed."""
    text = stored("good") + (
        "Traceback (most recent call last):\n"
        '  File "/home/me/aider-venv/lib/python3.11/site-packages/aider/main.py", line 1, in x\n'
        "    raise KeyError('fence')\n"
        "KeyError: 'fence'\n"
    )
    give_up = read_give_up(text)
    assert give_up is not None and give_up.kind == "aider_error"
    assert give_up.cause == "Aider crashed: KeyError: 'fence'"
    assert read_give_up(stored("lint_then_fixed")) is None  # lint tracebacks are not crashes


def test_several_blocks_that_matched_nothing_are_counted() -> None:
    """diff_nomatch's last report, as Aider words it for two blocks in two files."""
    one = "## SearchReplaceNoExactMatch: This SEARCH block failed to exactly match lines in\n"
    text = stored("diff_nomatch")
    cut = text.rindex(one)
    two = text[:cut] + one + "hello.py\n" + one.replace("in\n", "in app/x.py\n") + text[cut:]
    give_up = read_give_up(two)
    assert give_up is not None
    assert "3 SEARCH blocks matched nothing in hello.py, app/x.py)" in give_up.cause


def test_a_token_limit_names_the_limit_only_when_aider_knows_it() -> None:
    """With a model Aider knows no limits for it says "~495 of 0 -- possibly exhausted":
    no help. With known limits the line that was passed is the cause."""
    unknown = read_give_up(stored("context_exceeded"))
    assert unknown is not None
    assert unknown.cause == 'Aider stopped: "Model openai/stub has hit a token limit!"'
    known = stored("context_exceeded").replace(
        "Input tokens: ~495 of 0 -- possibly exhausted context window!",
        "Input tokens: ~40,210 of 32,768 -- possibly exhausted context window!",
    )
    given = read_give_up(known)
    assert given is not None and given.cause.endswith(
        "(Input tokens: ~40,210 of 32,768 -- possibly exhausted context window!)"
    )


def test_an_empty_or_foreign_log_says_nothing() -> None:
    assert read_give_up("") is None
    assert read_give_up("hello from a worker script\nall done\n") is None


# ---- reading the end of a log ---------------------------------------------------------------
def test_only_the_tail_of_a_large_binary_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "t-1-attempt1.log"
    junk = (bytes(range(256)) + b"\xe2\x82 half a character\n") * 8000  # about 2 MB
    log.write_bytes(junk + stored("lint_reflections").encode("utf-8"))
    tail = read_log_tail(log)
    assert len(tail.encode("utf-8")) <= TAIL_BYTES * 3  # replacement characters widen it
    assert tail.endswith("Only 3 reflections allowed, stopping.\n")
    check(give_up_in_log(log), "lint_reflections")


def test_a_line_cut_by_the_tail_is_dropped(tmp_path: Path) -> None:
    log = tmp_path / "cut.log"
    head = b"The model wrote: "
    line = b"Only 3 reflections allowed, stopping.\n"
    log.write_bytes(head + line + b"Tokens: 1 sent, 1 received.\n")
    cut = len(line) + len(b"Tokens: 1 sent, 1 received.\n")
    assert read_log_tail(log, max_bytes=cut) == "Tokens: 1 sent, 1 received.\n"
    assert read_log_tail(log, max_bytes=10_000).startswith("The model wrote: Only 3")


def test_a_missing_log_reads_as_nothing(tmp_path: Path) -> None:
    assert read_log_tail(tmp_path / "nope.log") == ""
    assert give_up_in_log(tmp_path / "nope.log") is None
    assert read_log_tail(tmp_path) == ""  # a folder is not a log either


# ---- the stored logs against the Aider installed now ----------------------------------------
@pytest.mark.aider
@pytest.mark.slow
def test_the_stored_logs_are_what_aider_prints_now(aider_exe: Path, tmp_path: Path) -> None:
    """Two quick scenarios run again with real Aider read exactly as their stored logs do."""
    names = ["lint_reflections", "diff_nomatch"]
    with ThreadPoolExecutor(len(names)) as pool:
        logs = pool.map(lambda name: capture(aider_exe, tmp_path, name), names)
        fresh = dict(zip(names, logs, strict=True))
    for name in names:
        assert read_give_up(fresh[name]) == read_give_up(stored(name)), fresh[name]
        check(read_give_up(fresh[name]), name)


# ---- writing the logs -----------------------------------------------------------------------
class Replies:
    """The scenario's replies in turn, the last one repeating; commit messages apart."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario, self.turn = scenario, 0

    def __call__(self, body: dict[str, Any]) -> Answer:
        if asks_for_commit_message(body):
            return self.scenario.commit_message
        replies = self.scenario.replies
        self.turn += 1
        return replies[min(self.turn, len(replies)) - 1]


def capture(aider: Path, folder: Path, name: str) -> str:
    """Run scenario ``name`` with real Aider; its log, with neutral paths."""
    scenario = SCENARIOS[name]
    repo = make_repo(folder / name / "repo", scenario.files)
    log = folder / name / "aider.log"

    def go(url: str) -> None:
        run_aider(
            aider,
            repo,
            model=scenario.model,
            server_url=url,
            message=TASK,
            files=list(scenario.files),
            log=log,
            edit_format=scenario.edit_format,
            extra_args=scenario.extra_args,
            timeout=scenario.kill_after_secs,
        )

    if scenario.replies:
        with ModelServer(default_reply=Replies(scenario), models=["stub"]) as server:
            go(server.url)
    else:
        go(f"http://127.0.0.1:{closed_port()}")
    text = log.read_text(encoding="utf-8", errors="replace")
    for path in {str(repo), str(repo.resolve())}:
        text = text.replace(path, WORKTREE)
    return text.replace(str(aider.resolve().parent.parent), AIDER_VENV)


def write_logs(names: Sequence[str], aider: Path, folder: Path) -> None:
    def one(name: str) -> None:
        (LOGS / f"{name}.log").write_text(capture(aider, folder, name), encoding="utf-8")
        print(f"{name}: {read_give_up(stored(name))}")

    LOGS.mkdir(exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, names))


if __name__ == "__main__":
    import tempfile

    aider = find_aider()
    if aider is None:
        sys.exit("Aider is not installed: see README.md, Development")
    wanted = sys.argv[1:] or sorted(SCENARIOS)
    with tempfile.TemporaryDirectory() as scratch:
        write_logs(wanted, aider, Path(scratch))
