"""What a worker's Aider log says about how the attempt ended (pure, apart from reading a tail).

Aider exits 0 whatever happened, so the dispatcher judges an attempt by its commits. Commits
alone do not tell the truth when Aider gave up half-way: it commits each edit it applies
*before* it lints it, so a reply that left a SyntaxError is a commit, and the three reflections
that followed ("Only 3 reflections allowed, stopping.") are not. This module reads the log
(Aider runs with ``--no-pretty`` and its output goes to a file) and names the cause.

Only Aider's own messages count, each recognised as the whole line Aider 0.86 prints (the
strings are quoted from its source next to each pattern below), so a model reply or a task
text that merely mentions them does not trip the reader; and the *order* of what Aider did
decides: an edit applied after an error means Aider got past it.

Aider prints through rich, which wraps lines at the console width (80 columns in a log file)
and leaves the space it broke at, so a long error message goes on over the next lines; those
are joined back.

    give_up = read_give_up(read_log_tail(log_path))
    if give_up is not None:
        ...fail the attempt with give_up.cause; if give_up.server_unreachable, do not count it
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# A few hundred KB hold the last reflections of any run; the start of a long log says nothing
# about how it ended.
TAIL_BYTES = 256 * 1024
# Causes are read by people in a task list and a summary line.
MAX_CAUSE_CHARS = 320
MAX_DETAIL_CHARS = 160

GiveUpKind = Literal[
    "reflections",  # "Only N reflections allowed, stopping." (the reason is in ``cause``)
    "lint_errors",  # Aider's lint report was the last word: the committed code has errors
    "edits_not_applied",  # the model's edits did not apply or did not follow the format
    "model_error",  # the model API failed (after Aider's own retries, or while retrying)
    "token_limit",  # "Model X has hit a token limit!"
    "empty_reply",  # "Empty response received from LLM."
    "aider_error",  # Aider itself failed: an exception, a file it could not write or commit
]


@dataclass(frozen=True)
class GiveUp:
    """How Aider stopped without finishing, as its log tells it.

    ``cause`` is one line for a person, e.g. ``Aider gave up: "Only 3 reflections allowed,
    stopping." after lint errors it could not fix (hello.py:1:2: E999 SyntaxError: invalid
    syntax)``. ``server_unreachable`` is true when the model server could not be reached at
    all (connection refused, no such host): the attempt never had a chance, so the dispatcher
    need not count it. ``evidence`` is the line of Aider's that shows it.
    """

    kind: GiveUpKind
    cause: str
    server_unreachable: bool = False
    evidence: str = ""


def read_log_tail(path: Path | str, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``max_bytes`` of a log as text (UTF-8, bad bytes replaced); "" if unreadable.

    Binary-safe and cheap on a large log: only the tail is read. A line cut by the start of
    the tail is dropped, so no half line can look like one of Aider's messages.
    """
    try:
        with Path(path).open("rb") as handle:
            size = handle.seek(0, 2)
            start = max(0, size - max(0, max_bytes))
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    if start > 0:
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else b""
    return data.decode("utf-8", errors="replace")


def give_up_in_log(path: Path | str, max_bytes: int = TAIL_BYTES) -> GiveUp | None:
    """:func:`read_give_up` on the tail of the log at ``path``."""
    return read_give_up(read_log_tail(path, max_bytes))


# ---- Aider's lines ------------------------------------------------------------------------
# Each is a whole line as Aider 0.86 prints it (aider/ paths are in its package).

# coders/base_coder.py run_one: tool_warning(f"Only {self.max_reflections} reflections allowed,
# stopping.")
_REFLECTIONS = re.compile(r"Only \d+ reflections allowed, stopping\.")
# linter.py Linter.lint: res = "# Fix any errors below, if possible.\n\n"
_LINT = "# Fix any errors below, if possible."
# coders/base_coder.py apply_updates: tool_error("The LLM did not conform to the edit format.")
_NOT_CONFORM = "The LLM did not conform to the edit format."
# coders/base_coder.py apply_updates: tool_output(f"Applied edit to {path}")
_APPLIED = re.compile(r"Applied edit to (?P<path>\S.*)")
# coders/base_coder.py show_usage_report: "Tokens: 1.9k sent, 25 received." (a reply came)
_TOKENS = re.compile(r"Tokens: \S+ sent, \S+ received\..*")
# litellm's exceptions print as "litellm.NotFoundError: NotFoundError: OpenAIException - ..."
# (base_coder.send_message: tool_error(str(err)); models.py simple_send_with_retries: print)
_API_ERROR = re.compile(r"litellm\.(?P<name>[A-Za-z]+(?:Error|Timeout)?): (?P<message>.*)")
# base_coder.send_message and models.simple_send_with_retries: f"Retrying in {delay:.1f}
# seconds..."
_RETRYING = re.compile(r"Retrying in \d+(?:\.\d+)? seconds\.\.\.")
# repo.py get_commit_message: tool_error("Failed to generate commit message!"): the API errors
# just before it were the commit message's, and the edit was committed anyway.
_COMMIT_MESSAGE_FAILED = "Failed to generate commit message!"
# exceptions.py: the descriptions Aider prints after an API error.
_API_DESCRIPTIONS = (
    "The API provider is not able to authenticate you. Check your API key.",
    "The API provider's servers are down or overloaded.",
    "The API provider has refused the request due to a safety policy about the content.",
    "The API provider was unable to fetch one or more images.",
    "The API provider has rate limited you. Try again later or check your quotas.",
    "The API provider timed out without returning a response. They may be down or overloaded.",
    "Insufficient credits with the API provider. Please add credits.",
    "You need to: pip install boto3",
)
# base_coder.show_exhausted_error: f"Model {self.main_model.name} has hit a token limit!"
_TOKEN_LIMIT = re.compile(r"Model \S+ has hit a token limit!")
# Its hint lines; "of 0" means Aider does not know the model's limits, so the hint says nothing.
_TOKEN_HINT = re.compile(r"(?:Input|Output|Total) tokens: ~\S+ of [1-9][\d,]* -- possibly .*!")
# base_coder.py / io.py: tool_warning("Empty response received from LLM. Check your provider
# account?")
_EMPTY = "Empty response received from LLM. Check your provider account?"
# base_coder.apply_updates: tool_error("Exception while updating files:") then the error.
_UPDATE_EXCEPTION = "Exception while updating files:"
# Lines that end an attempt's work on their own (base_coder, repo.py, io.py, main.py).
_AIDER_ERRORS = re.compile(
    r"(?:Unable to commit: .+"
    r"|Unable to write file .+"
    r"|Unable to create \S.*, skipping edits\."
    r"|Skipping edits to \S.* that matches gitignore spec\."
    r"|Message file not found: .+"
    r"|Error reading message file: .+"
    r"|Unable to read git repository, it may be corrupt\?"
    r"|The git repo does not seem to have a working tree\?"
    r"|aider(?:\.exe)?: error: .+)"  # argparse: a flag Aider does not know (aider_extra_args)
)
# SearchReplaceNoExactMatch, UnifiedDiffNoMatch/NotUnique, an editblock parse error ("^^^
# Expected `=======`"), whole format's "No filename provided before ``` in file listing".
_NO_MATCH = "## SearchReplaceNoExactMatch: This SEARCH block failed to exactly match lines in"
_UDIFF = re.compile(r"(?P<name>UnifiedDiffNoMatch|UnifiedDiffNotUnique): hunk failed to apply!")
_EDIT_DOCS = "https://aider.chat/docs/troubleshooting/edit-errors.html"
# flake8's "path:line:col: CODE message", which Aider's Python lint runs.
_FLAKE8 = re.compile(r"(?P<where>[^\s:][^:]*:\d+:\d+): (?P<what>[A-Z]+\d+ .+)")
_PY_ERROR = re.compile(r"(?P<name>[A-Z][A-Za-z]*(?:Error|Exception|Warning)): (?P<msg>.+)")
_TRACEBACK = "Traceback (most recent call last):"

# Words of an error that mean the server was never reached (not that it answered badly).
_UNREACHABLE = re.compile(
    r"Connection refused|actively refused|No connection could be made"
    r"|Cannot connect to host|Failed to establish a new connection|All connection attempts failed"
    r"|OpenAIException - Connection error\.|Name or service not known|nodename nor servname"
    r"|getaddrinfo failed|Temporary failure in name resolution|Network is unreachable"
    r"|No route to host|Could not resolve host",
    re.IGNORECASE,
)

EventName = Literal[
    "applied",
    "tokens",
    "reflections",
    "lint",
    "not_conform",
    "api_error",
    "retrying",
    "commit_message_failed",
    "token_limit",
    "empty",
    "update_exception",
    "aider_error",
    "crash",
]


_EXACT: dict[str, EventName] = {
    _LINT: "lint",
    _NOT_CONFORM: "not_conform",
    _COMMIT_MESSAGE_FAILED: "commit_message_failed",
    _EMPTY: "empty",
    _UPDATE_EXCEPTION: "update_exception",
}
_PATTERNS: tuple[tuple[re.Pattern[str], EventName], ...] = (
    (_APPLIED, "applied"),
    (_TOKENS, "tokens"),
    (_REFLECTIONS, "reflections"),
    (_API_ERROR, "api_error"),
    (_RETRYING, "retrying"),
    (_TOKEN_LIMIT, "token_limit"),
    (_AIDER_ERRORS, "aider_error"),
)


@dataclass(frozen=True)
class _Event:
    name: EventName
    line: int  # index into the lines
    text: str  # the line (an API error: joined with its wrapped continuation)


def read_give_up(log_text: str) -> GiveUp | None:
    """How Aider gave up, from its log (or the tail of it); None if it did not say so.

    Aider gave up when, after the last edit it applied, it printed: "Only N reflections allowed,
    stopping."; its lint report; "The LLM did not conform to the edit format." (edits that
    did not match or parse); a model API error it stopped on (or was still retrying when the
    log ends); "Model X has hit a token limit!"; "Empty response received from LLM."; or an
    error of its own (an exception while updating files, a file it could not write, a commit
    it could not make, a message file it could not read, a traceback that ends the log).
    """
    lines = log_text.splitlines()
    events = _events(lines)
    last = _last_outcome(events)
    if last is None or last.name == "applied":
        return None
    if last.name == "reflections":
        return _reflections(lines, events, last)
    return _single(lines, events, last)


# ---- reading the lines --------------------------------------------------------------------
def _events(lines: Sequence[str]) -> list[_Event]:
    events: list[_Event] = []
    in_lint = False
    for index, raw in enumerate(lines):
        line = raw.rstrip()
        name = _classify(line)
        if name is not None and not _in_place(name, lines, index, events):
            name = None  # Aider's words where Aider would not print them: a model quoting them
        if name == "lint":
            in_lint = True
        elif name is not None:
            in_lint = False
        if name is None and line == _TRACEBACK and not in_lint:
            name = "crash"  # a traceback outside a lint report: Aider itself failed
        if name is None:
            continue
        text = _joined(lines, index) if name in ("api_error", "aider_error") else line
        events.append(_Event(name, index, text))
    return events


def _in_place(name: EventName, lines: Sequence[str], index: int, events: Sequence[_Event]) -> bool:
    """Whether a line that reads like Aider's stands where Aider prints it.

    Aider prints the edit-errors link right after "did not conform"; it lints only files it
    has just applied an edit to (no reply in between); an empty reply is followed by its
    usage line. A model's reply that quotes these lines has none of that around them.
    """
    if name == "not_conform":
        return _next_text(lines, index + 1) == _EDIT_DOCS
    if name == "lint":
        steps = [e.name for e in events if e.name in ("applied", "tokens")]
        return bool(steps) and steps[-1] == "applied"
    if name == "empty":
        following = _next_text(lines, index + 1)
        return not following or _TOKENS.fullmatch(following) is not None
    return True


def _classify(line: str) -> EventName | None:
    if line in _EXACT:
        return _EXACT[line]
    return next((name for pattern, name in _PATTERNS if pattern.fullmatch(line)), None)


def _joined(lines: Sequence[str], index: int, limit: int = 8) -> str:
    """A message and the lines rich wrapped it onto, as one line.

    Rich breaks a long line at a space and leaves that space at the end of the line, so a
    line that ends in a space goes on below (unless what follows is a message of its own).
    """
    parts = [lines[index].strip()]
    current = lines[index]
    for follow in lines[index + 1 : index + 1 + limit]:
        text = follow.strip()
        if not current.rstrip("\r").endswith(" ") or not text:
            break
        if _classify(text) is not None or text in _API_DESCRIPTIONS:
            break
        parts.append(text)
        current = follow
    return " ".join(parts)


# ---- deciding -----------------------------------------------------------------------------
# What Aider prints as the last thing it does (nothing is asked of the model after it).
_FINAL: frozenset[EventName] = frozenset(
    {"reflections", "api_error", "token_limit", "aider_error", "crash"}
)
# Events that say how a step ended (the rest only tell what happened around them).
_OUTCOMES: frozenset[EventName] = _FINAL | {
    "applied",
    "lint",
    "not_conform",
    "empty",
    "update_exception",
}


def _last_outcome(events: Sequence[_Event]) -> _Event | None:
    """The last event that says how a step ended, leaving out what does not stand.

    An API error of the commit message's (followed by "Failed to generate commit message!")
    did not stop anything. An API error or "Only N reflections" followed by a reply (a
    "Tokens:" line) or an applied edit was not the end: Aider went on (or a model's reply
    merely quoted the words). A crash counts only where the log ends in its traceback.
    """
    for position in range(len(events) - 1, -1, -1):
        event = events[position]
        if event.name not in _OUTCOMES:
            continue
        later = [e.name for e in events[position + 1 :]]
        if event.name == "api_error" and _for_commit_message(events, position):
            continue
        if event.name in _FINAL and "tokens" in later:
            continue
        if event.name == "crash" and later:
            continue
        return event
    return None


def _for_commit_message(events: Sequence[_Event], position: int) -> bool:
    for event in events[position + 1 :]:
        if event.name == "commit_message_failed":
            return True
        if event.name not in ("api_error", "retrying"):
            return False
    return False


def _single(lines: Sequence[str], events: Sequence[_Event], last: _Event) -> GiveUp:
    if last.name == "lint":
        return GiveUp(
            "lint_errors",
            _cap(f"Aider left lint errors it did not fix ({_lint_detail(lines, last.line)})"),
            evidence=last.text,
        )
    if last.name == "not_conform":
        detail = _edit_detail(lines, last.line)
        return GiveUp(
            "edits_not_applied",
            _cap(f'Aider could not apply the model\'s last edits: "{_NOT_CONFORM}" ({detail})'),
            evidence=last.text,
        )
    if last.name == "api_error":
        return _api_error(lines, events, last)
    if last.name == "token_limit":
        hint = _first_match(lines, last.line + 1, _TOKEN_HINT, limit=8)
        more = f" ({hint})" if hint else ""
        return GiveUp(
            "token_limit", _cap(f'Aider stopped: "{last.text}"{more}'), evidence=last.text
        )
    if last.name == "empty":
        return GiveUp("empty_reply", f'Aider stopped: "{_EMPTY}"', evidence=last.text)
    if last.name == "update_exception":
        error = _next_text(lines, last.line + 1)
        return GiveUp(
            "aider_error", _cap(f'Aider stopped: "{_UPDATE_EXCEPTION} {error}"'), evidence=error
        )
    if last.name == "crash":
        error = _crash_error(lines, last.line)
        return GiveUp("aider_error", _cap(f"Aider crashed: {error}"), evidence=error)
    # One failure brings on others (a file it could not write, then a commit with nothing in
    # it): the first after the model's last reply is the cause.
    replied = max((e.line for e in events if e.name == "tokens"), default=-1)
    first = next(e for e in events if e.name == "aider_error" and e.line > replied)
    return GiveUp("aider_error", _cap(f'Aider stopped: "{first.text}"'), evidence=first.text)


def _reflections(lines: Sequence[str], events: Sequence[_Event], last: _Event) -> GiveUp:
    """The reason Aider reflected the last time: the last failure before it gave up."""
    said = f'Aider gave up: "{last.text}"'
    before = [e for e in events if e.line < last.line]
    reason = next(
        (e for e in reversed(before) if e.name in ("lint", "not_conform", "update_exception")),
        None,
    )
    if reason is None or any(e.name == "applied" and e.line > reason.line for e in before):
        # e.g. the files the model named were added to the chat, again and again.
        return GiveUp("reflections", said, evidence=last.text)
    if reason.name == "lint":
        why = f"after lint errors it could not fix ({_lint_detail(lines, reason.line)})"
    elif reason.name == "not_conform":
        why = f"after edits that did not apply ({_edit_detail(lines, reason.line)})"
    else:
        why = f"after an error while updating files ({_next_text(lines, reason.line + 1)})"
    return GiveUp("reflections", _cap(f"{said} {why}"), evidence=last.text)


def _api_error(lines: Sequence[str], events: Sequence[_Event], last: _Event) -> GiveUp:
    position = events.index(last)
    later = [e.name for e in events[position + 1 :]]
    tries = 1
    for event in reversed(events[:position]):
        if event.name == "api_error":
            tries += 1
        elif event.name != "retrying":
            break
    description = next(
        (text for text in _following(lines, last.line, 8) if text in _API_DESCRIPTIONS), ""
    )
    error = _clip(last.text.split("\n", 1)[0], MAX_DETAIL_CHARS)
    described = f" ({description})" if description else ""
    counted = f" after {tries} tries" if tries > 1 else ""
    if "retrying" in later:
        cause = f"Aider was still retrying the model API when it stopped{counted}: {error}"
    else:
        cause = f"Aider stopped on a model API error{counted}: {error}{described}"
    unreachable = bool(_UNREACHABLE.search(last.text))
    if unreachable:
        cause += " - the model server could not be reached"
    return GiveUp("model_error", _cap(cause), server_unreachable=unreachable, evidence=last.text)


# ---- details ------------------------------------------------------------------------------
def _lint_detail(lines: Sequence[str], start: int, limit: int = 80) -> str:
    """The errors of a lint report: flake8's lines, else the first error line Python gave."""
    found: list[str] = []
    python_error = ""
    for raw in lines[start + 1 : start + 1 + limit]:
        line = raw.strip()
        if line.startswith("## See relevant line") or _classify(line) is not None:
            break
        flake = _FLAKE8.fullmatch(line)
        if flake and line not in found:
            found.append(line)
        elif not python_error and _PY_ERROR.fullmatch(line):
            python_error = line
    if not found:
        return _clip(python_error or "see the log", MAX_DETAIL_CHARS)
    shown = "; ".join(found[:2])
    more = f"; and {len(found) - 2} more" if len(found) > 2 else ""
    return _clip(shown + more, MAX_DETAIL_CHARS)


def _edit_detail(lines: Sequence[str], start: int, limit: int = 200) -> str:
    """What Aider said was wrong with the edits, after "did not conform"."""
    body = [line.rstrip() for line in lines[start + 1 : start + 1 + limit]]
    for index, line in enumerate(body):
        if _classify(line.strip()) is not None:
            body = body[:index]
            break
    # The file name may have been wrapped onto the next line.
    missed = [
        line[len(_NO_MATCH) :].strip() or _next_text(body, index + 1)
        for index, line in enumerate(body)
        if line.startswith(_NO_MATCH)
    ]
    if missed:
        blocks = "a SEARCH block" if len(missed) == 1 else f"{len(missed)} SEARCH blocks"
        where = ", ".join(dict.fromkeys(missed))
        what = f"SearchReplaceNoExactMatch: {blocks} matched nothing in {where}"
        return _clip(what, MAX_DETAIL_CHARS)
    for index, line in enumerate(body):
        udiff = _UDIFF.fullmatch(line)
        if udiff:
            path = _next_text(body, index + 1).split(" does not contain", 1)[0]
            path = path.split(" contains multiple", 1)[0]
            what = "matched nothing" if udiff["name"] == "UnifiedDiffNoMatch" else "matched twice"
            return _clip(f"{udiff['name']}: a diff hunk {what} in {path}", MAX_DETAIL_CHARS)
    caret = next((line[4:] for line in body if line.startswith("^^^ ")), "")
    if caret:
        return _clip(caret, MAX_DETAIL_CHARS)
    first = next((line.strip() for line in body if line.strip() and line != _EDIT_DOCS), "")
    return _clip(first or "see the log", MAX_DETAIL_CHARS)


def _crash_error(lines: Sequence[str], start: int) -> str:
    for raw in lines[start + 1 :]:
        if raw.strip() and not raw.startswith((" ", "\t")):
            return _clip(raw.strip(), MAX_DETAIL_CHARS)
    return "a traceback with no error line"


def _following(lines: Sequence[str], start: int, limit: int) -> list[str]:
    return [line.strip() for line in lines[start + 1 : start + 1 + limit]]


def _next_text(lines: Sequence[str], start: int) -> str:
    return next((line.strip() for line in lines[start:] if line.strip()), "")


def _first_match(lines: Sequence[str], start: int, pattern: re.Pattern[str], limit: int) -> str:
    return next(
        (text for text in _following(lines, start - 1, limit) if pattern.fullmatch(text)), ""
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _cap(text: str) -> str:
    return _clip(" ".join(text.split()), MAX_CAUSE_CHARS)
