"""Aider as an unattended worker: its argv, its environment, and the edit format for a model.

Aider is built for a person at a terminal. Run by the dispatcher it has no terminal (stdin is
closed, output goes to a log file), so everything that would prompt, colour, page, open a
browser, phone home or leave files in the worktree is switched off here, in one place. Each
choice below was checked against Aider 0.86 running offline against a local model server.

Three of Aider's habits need more than a flag:

- With ``--yes-always`` Aider answers *yes* to "Open documentation URL?" too, and opens a
  browser (aider issue #3372): on a model warning, a failed API call whose error names a URL,
  or a full context window. On Linux and macOS ``BROWSER`` is pointed at a program that does
  nothing, so Python's ``webbrowser`` "opens" the page there and stops looking (Windows has
  no such program; there the flags below avoid the common causes).
- Without a git identity Aider writes ``user.name "Your Name"`` into the repository's config,
  which for a worktree is the user's own ``.git/config``. The fallback identity is handed to it
  through ``GIT_CONFIG_*`` variables instead (see ``gitcmd.identity_env``).
- Aider adds every tracked file that a message names to the chat, and the task's rules name
  the protected paths; an ``--aiderignore`` file hides them (see :func:`aiderignore_text`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

# What each flag is for (all exist in Aider 0.86; later flags win, so aider_extra_args can
# override any of them):
AIDER_FLAGS = (
    "--yes-always",  # no question may wait for an answer that never comes
    "--no-check-update",  # no network call to PyPI, no upgrade offer
    "--no-analytics",  # no telemetry, no "allow analytics?" question
    "--no-show-release-notes",  # no release-notes offer (it opens a browser) on a new version
    "--no-show-model-warnings",  # unknown local models would warn and offer a browser
    "--no-check-model-accepts-settings",  # no warning about settings the model may ignore
    "--no-pretty",  # plain text in the log: no colours, no live markdown redraws
    "--no-fancy-input",  # no prompt_toolkit: it wants a real console, and there is none
    "--no-detect-urls",  # URLs in the task are not offered for scraping
    "--disable-playwright",  # never offer to install a browser engine
    "--no-suggest-shell-commands",  # the task is edits and commits, not commands to run
    "--no-notifications",  # no terminal bell or desktop notification
    "--encoding",
    "utf-8",  # read and write files as UTF-8, whatever the OS locale says
    "--no-gitignore",  # do not add .aider* to .gitignore: a change no task asked for
    "--map-tokens",
    "0",  # no repo map by default: small local models drown in it and it costs a scan
    "--auto-commits",  # each applied edit is a commit: commits are how a worker is judged
    "--no-dirty-commits",  # one commit per edit, not first an empty one for each new file
)
# Streaming stays on (Aider's default): the log grows while the model writes, and a slow local
# model is not cut off by the request timeout, which then applies between chunks, not to the
# whole answer.

# Edit formats that make Aider change files (ask, help and context only talk).
EDIT_FORMATS = ("whole", "diff", "diff-fenced", "udiff", "udiff-simple", "patch", "architect")

# Providers that mean a model served on this machine (litellm prefixes).
LOCAL_PROVIDERS = ("ollama/", "ollama_chat/", "lm_studio/")
# Local models this large (in billions of parameters) write SEARCH/REPLACE blocks well enough
# that Aider's own choice for them stands.
STRONG_LOCAL_BILLIONS = 30.0
_PARAMS = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)b(?![a-z])")


def is_ollama_model(model: str) -> bool:
    return model.startswith(("ollama/", "ollama_chat/"))


def choose_edit_format(model: str, configured: str | None = None) -> str | None:
    """The ``--edit-format`` for ``model``, or None to leave the choice to Aider.

    ``aider_edit_format`` wins when set. Otherwise a small local model (an Ollama or LM
    Studio model under ~30B parameters, or one whose size its name does not say) gets
    ``whole``: it rewrites each file in full, which small models get right far more often than
    SEARCH/REPLACE blocks. Other models get Aider's own per-model default (``diff`` for the
    strong models it knows, ``whole`` for models it does not).
    """
    if configured:
        return configured
    name = model.lower()
    if not name.startswith(LOCAL_PROVIDERS):
        return None
    sizes = [float(size) for size in _PARAMS.findall(name.split("/", 1)[1])]
    if sizes and max(sizes) >= STRONG_LOCAL_BILLIONS:
        return None
    return "whole"


def aider_argv(
    aider_cmd: str,
    model: str,
    task_file: Path,
    history_dir: Path,
    files: Sequence[str],
    *,
    edit_format: str | None = None,
    aiderignore: Path | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Aider's non-interactive argv.

    The task text is read from ``task_file`` (outside the worktree, so it is never committed);
    Aider's history files go to ``history_dir`` (under .dispatch/) for the same reason.
    ``files`` are added to the chat after ``--`` so that no file name can pass for an option;
    a named file that does not exist yet is created by Aider (its folder must exist first,
    see :func:`make_folders_for`).
    """
    program = shutil.which(aider_cmd) or aider_cmd
    argv = [program, "--model", model, "--message-file", str(task_file), *AIDER_FLAGS]
    if edit_format:
        argv += ["--edit-format", edit_format]
    if aiderignore is not None:
        argv += ["--aiderignore", str(aiderignore)]
    argv += [
        "--input-history-file",
        str(history_dir / "input.history"),
        "--chat-history-file",
        str(history_dir / "chat.history.md"),
        "--llm-history-file",
        str(history_dir / "llm.history"),
        *extra_args,
    ]
    if files:
        argv += ["--", *files]
    return argv


def aiderignore_text(protected: Sequence[str], own: str = "") -> str:
    """An .aiderignore that hides the protected paths from Aider, after the repository's own.

    Aider adds every tracked file that the task text names to the chat, and the task's rules
    name the protected paths (the config, the launchers): without this, it would hand the
    model the very files it must not change. Patterns are anchored at the root, as the merge's
    path gate reads them (gitignore would match a bare name at any depth).
    """
    lines = [own.rstrip("\n")] if own.strip() else []
    lines.append("# localdispatch: protected paths (the merge refuses changes to them)")
    for pattern in protected:
        text = pattern.strip().replace("\\", "/").lstrip("/")
        if text:
            lines.append("/" + text)
    return "\n".join(lines) + "\n"


def write_aiderignore(path: Path, protected: Sequence[str], worktree: Path) -> Path:
    """Write :func:`aiderignore_text` for ``worktree`` (keeping its .aiderignore) to ``path``."""
    try:
        own = (worktree / ".aiderignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        own = ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(aiderignore_text(protected, own), encoding="utf-8", newline="\n")
    return path


def chat_files(files: Sequence[str], worktree: Path) -> list[str]:
    """The task's files that Aider can take: a folder among several files makes Aider exit
    with nothing done (and a single folder means something else to it), so folders are left
    to the task text, which names them anyway."""
    return [name for name in files if not (worktree / name).is_dir()]


def make_folders_for(files: Sequence[str], worktree: Path) -> list[Path]:
    """Create the missing folders of the task's new files; return the folders made.

    Aider finds the repository from the files it is given, and a file whose folder does not
    exist yet is in no repository: Aider would then run without git, and make no commit. The
    file itself is left for Aider to create. Paths that would leave the worktree are skipped.
    """
    root = worktree.resolve()
    made = []
    for name in files:
        folder = (worktree / name).parent
        try:
            inside = folder.resolve().is_relative_to(root)
        except OSError:
            continue
        if inside and not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            made.append(folder)
    return made


def no_op_browser() -> str | None:
    """A program that accepts a URL and does nothing, for ``BROWSER``; None if there is none.

    On Windows no program is known to exit 0 on any argument without side effects, so there
    the flags above are all that keeps the browser shut (see the module docstring).
    """
    if os.name == "nt":
        return None
    return shutil.which("true")


def aider_env(
    model: str,
    environ: Mapping[str, str],
    *,
    ollama_host: str,
    openai_base: str | None = None,
    openai_key_env: str | None = None,
) -> dict[str, str]:
    """Environment variables for an Aider worker (added to the dispatcher's own).

    Aider finds an Ollama server through ``OLLAMA_API_BASE``; unless the user set it, it is
    the server the splitter uses (``ollama.host``), so one setting points both at the same
    place. Likewise an ``openai/`` model goes to ``openai_base`` (the splitter's
    ``llm.base_url``) unless ``OPENAI_API_BASE`` is set, with the key from the variable
    ``openai_key_env`` names: Aider refuses to call without one, and a local server that
    checks none ignores the stand-in given then.
    """
    env = {
        "PYTHONIOENCODING": "utf-8",  # the log file gets UTF-8, not the Windows code page
        "PYTHONUTF8": "1",  # and so does every file Python opens without an encoding
        "TERM": "dumb",  # no escape sequences, no cursor tricks
        "NO_COLOR": "1",
    }
    # Offline machines: litellm would fetch its model price list from GitHub at every start.
    if "LITELLM_LOCAL_MODEL_COST_MAP" not in environ:
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    browser = no_op_browser()
    if browser:
        env["BROWSER"] = browser
    if is_ollama_model(model) and not environ.get("OLLAMA_API_BASE"):
        env["OLLAMA_API_BASE"] = ollama_host
    if model.startswith("openai/") and openai_base and not environ.get("OPENAI_API_BASE"):
        env["OPENAI_API_BASE"] = openai_base
        if not environ.get("OPENAI_API_KEY"):
            env["OPENAI_API_KEY"] = environ.get(openai_key_env or "", "") or "localdispatch"
    return env
