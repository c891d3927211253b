"""The sanity gate: refuse a merge that would put obviously broken files on the base branch.

It judges exactly the change a merge would make to the base: the tree of the base tip against
the tree of the prepared merge commit (never a diff from a merge base, which a criss-cross
history can fool). In every file that change adds or modifies:

- no conflict markers (``<<<<<<<``, ``>>>>>>>`` or the diff3 ``|||||||`` at the start of a
  line, followed by a space or the end of the line; ``=======`` alone is a Markdown/RST
  heading underline and is left alone);
- ``.py``/``.pyi``/``.pyw`` files compile (never run);
- ``.json`` files parse (except the JSON-with-comments files editors keep);
- ``.toml`` files parse, where ``tomllib`` exists (Python 3.11+).

A check that the file's base version already failed is not held against the change: the
user's own tooling may accept what ours does not (newer Python syntax, say); we only refuse
what this change broke. Binary files, files over :data:`MAX_BYTES`, symlinks and submodules
are skipped and listed as such.

Contents come from git's object store (one ``git cat-file --batch`` for every blob), never from
a working tree, where a worker could have left a symlink or a FIFO in a file's place.

The pure part (:func:`check_file`: bytes in, findings out) is apart from the git part
(:func:`check_merge`). ``check_merge`` runs the Python and TOML parsers in a child Python with
a time limit (and, on Linux, a memory limit), because both can be driven into minutes of work
or gigabytes of memory by a file of a few kilobytes (one f-string with 100,000 fields takes
Python 3.11 minutes to compile; ``a.b.b.b… = 1`` with 16,000 parts costs tomllib a gigabyte),
and nothing a worker writes may hang or crash the dispatcher. Conflict markers and JSON are
checked in-process: a regular expression and the C JSON scanner are linear.
"""

from __future__ import annotations

import importlib
import json
import logging
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import IO, NamedTuple

from localdispatch.errors import GitError

log = logging.getLogger(__name__)

MAX_BYTES = 2 * 1024 * 1024
"""Files larger than this are skipped: no source file a worker should write is this big."""

BINARY_SNIFF_BYTES = 8 * 1024
"""A NUL byte in this many leading bytes makes a file binary, as git itself decides."""

PARSE_TIMEOUT_SECS = 20.0
"""One file's parse in the child; a normal 2 MiB Python file compiles in one or two seconds."""

PARSE_BUDGET_SECS = 60.0
"""All parses of one merge: past it, files are refused unparsed, so the gate always ends."""

GIT_TIMEOUT_SECS = 120.0
SUMMARY_LIMIT = 5

_STARTUP_TIMEOUT_SECS = 30.0
_PARSER_MEMORY_BYTES = 1024 * 1024 * 1024  # compiling 2 MiB of dense Python peaks near 400 MB
_TOO_BIG = f"larger than {MAX_BYTES // (1024 * 1024)} MiB"
_PYTHON = f"Python {sys.version_info.major}.{sys.version_info.minor}"
_SYMLINK_MODE = "120000"
_SUBMODULE_MODE = "160000"

# Exactly git's default marker size, then a space (git and Aider both write one) or the end of
# the line: so `<<<<<<<<` rules and e-mail quoting like `>>>>>>>word` are not flagged.
_MARKER = re.compile(rb"^(?:<{7}|>{7}|\|{7})(?: |\r?$)", re.MULTILINE)
_TOML_WHERE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")

# JSON files that their tools read as JSON with comments (JSONC).
_JSONC_DIRS = frozenset({".vscode", ".devcontainer"})
_JSONC_NAMES = ("tsconfig*.json", "jsconfig*.json", ".devcontainer.json", ".eslintrc.json")


def _load_tomllib() -> ModuleType | None:
    # Imported by name so that mypy, checking for Python 3.10, accepts it on every version.
    try:
        return importlib.import_module("tomllib")
    except ImportError:  # Python 3.10: TOML goes unchecked
        return None


_TOMLLIB = _load_tomllib()


# ---- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One problem in one changed file; ``line`` and ``column`` count from 1."""

    path: str
    line: int | None
    problem: str
    column: int | None = None

    def describe(self) -> str:
        """``config/x.json line 3, column 5: invalid JSON (Expecting ',' delimiter)``."""
        where = _printable(self.path)
        if self.line is not None:
            where += f" line {self.line}"
            if self.column is not None:
                where += f", column {self.column}"
        return f"{where}: {_printable(self.problem)}"


@dataclass(frozen=True)
class SanityReport:
    """What the gate found in the files a merge changes.

    ``checked`` counts the files whose contents were judged; ``skipped`` lists
    ``(path, reason)`` for the changed files it did not judge (deletions are neither).
    """

    findings: tuple[Finding, ...] = ()
    checked: int = 0
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def passed(self) -> bool:
        return not self.findings

    def summary(self, limit: int = SUMMARY_LIMIT) -> str:
        """The first ``limit`` findings in one line, then "and N more"."""
        if not self.findings:
            return f"no problems in {self.checked} changed file(s)"
        text = "; ".join(finding.describe() for finding in self.findings[:limit])
        more = len(self.findings) - limit
        return f"{text}; and {more} more" if more > 0 else text


def _printable(text: str) -> str:
    # Paths and marker lines come from a worker and end up in task text, logs and commit
    # messages: a newline or a terminal escape in them must not reach those as such.
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


# ---- the checks (pure: bytes in, a problem or None out) -----------------------------------


class _Problem(NamedTuple):
    line: int | None
    column: int | None
    text: str
    judged: bool = True  # False: the file could not be judged (a time limit, a dead child)


def _marker_problem(data: bytes) -> _Problem | None:
    match = _MARKER.search(data)
    if match is None:
        return None
    start = match.start()
    end = data.find(b"\n", start)
    text = data[start : end if end >= 0 else len(data)][:60]
    shown = text.decode("utf-8", errors="replace").rstrip()
    return _Problem(data.count(b"\n", 0, start) + 1, None, f'conflict marker "{shown}"')


def _python_problem(data: bytes) -> _Problem | None:
    # Compiling bytes (not text) lets Python honour a BOM or a coding cookie as it would on
    # import. Warnings (invalid escapes, `is` with a literal) are not failures and must not
    # reach the dispatcher's output (catch_warnings changes process-wide state: another
    # reason check_merge compiles in a child, where nothing else runs).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(data, "<changed file>", "exec", dont_inherit=True)
    except SyntaxError as exc:  # IndentationError, TabError; null bytes from Python 3.12 on
        return _Problem(exc.lineno or None, exc.offset or None, _cannot_compile(exc, exc.msg))
    except ValueError as exc:  # null bytes before Python 3.12
        return _Problem(None, None, _cannot_compile(exc, str(exc)))
    except (RecursionError, MemoryError):
        return _Problem(None, None, f"{_PYTHON} cannot compile it (nested too deeply)")
    except Exception as exc:  # noqa: BLE001 - fail closed: a file we cannot judge does not land
        return _Problem(None, None, _cannot_compile(exc, str(exc)))
    return None


def _cannot_compile(exc: BaseException, message: str) -> str:
    # The version is named because a newer Python may accept what this one refuses.
    return f"{_PYTHON} cannot compile it ({type(exc).__name__}: {message})"


def _json_problem(data: bytes) -> _Problem | None:
    try:
        # json.loads on bytes accepts UTF-8 with or without a BOM (and UTF-16/32). Numbers are
        # kept as text: converting a 5,000-digit integer is refused by Python, not by JSON.
        json.loads(data, parse_int=str, parse_float=str)
    except json.JSONDecodeError as exc:
        return _Problem(exc.lineno, exc.colno, f"invalid JSON ({exc.msg})")
    except UnicodeDecodeError as exc:
        return _Problem(data.count(b"\n", 0, exc.start) + 1, None, "invalid JSON (not UTF-8)")
    except RecursionError:
        return _Problem(None, None, "invalid JSON (nested too deeply)")
    except (ValueError, MemoryError) as exc:
        return _Problem(None, None, f"invalid JSON ({type(exc).__name__}: {exc})")
    return None


def _toml_problem(data: bytes) -> _Problem | None:
    if _TOMLLIB is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Problem(data.count(b"\n", 0, exc.start) + 1, None, "invalid TOML (not UTF-8)")
    try:
        # A BOM is not TOML, but editors write one and most readers skip it: not ours to refuse.
        _TOMLLIB.loads(text.removeprefix("\ufeff"))
    except RecursionError:
        return _Problem(None, None, "invalid TOML (nested too deeply)")
    except MemoryError:
        return _Problem(None, None, "invalid TOML (too large to parse)")
    except ValueError as exc:  # tomllib.TOMLDecodeError, or an integer too long to convert
        message = str(exc)
        where = _TOML_WHERE.search(message)
        if where is None:
            return _Problem(None, None, f"invalid TOML ({message})")
        line, column = (int(group) if group else None for group in where.groups())
        return _Problem(line, column, f"invalid TOML ({message[: where.start()]})")
    return None


_CHECKS: dict[str, Callable[[bytes], _Problem | None]] = {
    "markers": _marker_problem,
    "python": _python_problem,
    "json": _json_problem,
    "toml": _toml_problem,
}
_Runner = Callable[[str, bytes], _Problem | None]  # the checks, here or in the child


def _run_here(kind: str, data: bytes) -> _Problem | None:
    return _CHECKS[kind](data)


def _parser_kind(path: str) -> str | None:
    """Which parser judges ``path``, by its (case-blind) extension."""
    posix = PurePosixPath(path.lower())
    if posix.suffix in (".py", ".pyi", ".pyw"):
        return "python"
    if posix.suffix == ".toml":
        return "toml"
    if posix.suffix == ".json" and not _is_jsonc(posix):
        return "json"
    return None


def _is_jsonc(posix: PurePosixPath) -> bool:
    if _JSONC_DIRS.intersection(posix.parts[:-1]):
        return True
    return any(fnmatchcase(posix.name, pattern) for pattern in _JSONC_NAMES)


def checks_for(path: str) -> list[str]:
    """The checks a changed file gets: markers always, then its parser if it has one."""
    kind = _parser_kind(path)
    return ["markers"] if kind is None else ["markers", kind]


def why_skipped(path: str, data: bytes) -> str | None:
    """Why ``data`` (the contents of ``path``) is not judged at all, or None.

    A file a parser judges is never "binary": a NUL byte in Python or TOML is itself a defect
    and the parser reports it, and JSON may legitimately be UTF-16.
    """
    if len(data) > MAX_BYTES:
        return _TOO_BIG
    if _parser_kind(path) is None and b"\0" in data[:BINARY_SNIFF_BYTES]:
        return "binary"
    return None


def check_file(path: str, data: bytes, base_data: bytes | None = None) -> list[Finding]:
    """Findings for one changed file (pure, in-process), its base version given if it had one.

    Parses in this process: for contents from a worker, :func:`check_merge` parses in a child
    with a time limit instead.
    """
    return _judge(path, data, lambda: base_data, _run_here)


def _judge(
    path: str, data: bytes, load_base: Callable[[], bytes | None], run: _Runner
) -> list[Finding]:
    # The base version is loaded only when a check fails, which for a sound change is never.
    if why_skipped(path, data) is not None:
        return []
    findings = []
    for kind in checks_for(path):
        problem = run(kind, data)
        if problem is None:
            continue
        if _failed_on_base(path, kind, load_base(), run):
            continue  # not this change's doing
        findings.append(Finding(path, problem.line, problem.text, problem.column))
    return findings


def _failed_on_base(path: str, kind: str, base: bytes | None, run: _Runner) -> bool:
    if base is None or why_skipped(path, base) is not None:
        return False
    problem = run(kind, base)
    # A base we could not judge excuses nothing, or a worker could hide behind a time limit.
    return problem is not None and problem.judged


# ---- parsing in a child Python --------------------------------------------------------------

_ISOLATED_KINDS = frozenset({"python", "toml"})


class ParserProcess:
    """Runs the Python and TOML checks in a child Python, one file at a time, each with a time
    limit: a file that takes longer is refused, and the child is replaced for the next one.

    The child is this module run by the same interpreter, isolated (``-I -S``: no environment
    variables, no site-packages, nothing from the current folder on its path), and is started
    only when a file needs it. If it cannot start, the checks run here (with a warning).
    """

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        timeout: float = PARSE_TIMEOUT_SECS,
        budget: float = PARSE_BUDGET_SECS,
    ) -> None:
        self.argv = list(argv) if argv is not None else _parser_argv()
        self.timeout = timeout
        self.budget = budget
        self._deadline: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._greeted = False
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._unavailable = not self.argv[0]  # an embedded Python has no sys.executable

    def new_budget(self) -> None:
        """Start a new merge's parsing budget (a child kept across merges serves many)."""
        self._deadline = None

    def warm_up(self) -> None:
        """Start the child without waiting for it: it gets ready while git works."""
        if self._proc is None and not self._unavailable:
            self._spawn()

    def run(self, kind: str, data: bytes) -> _Problem | None:
        if kind not in _ISOLATED_KINDS:
            return _run_here(kind, data)
        if self._deadline is None:
            self._deadline = time.monotonic() + self.budget
        wait = min(self.timeout, self._deadline - time.monotonic())
        if wait <= 0:
            return _unjudged(f"the gate's {self.budget:g} s for parsing were used up")
        proc = self._ready()
        if proc is None or proc.stdin is None:
            return _run_here(kind, data)
        try:
            proc.stdin.write(f"{kind} {len(data)}\n".encode("ascii"))
            proc.stdin.write(data)
            proc.stdin.flush()
            return _decode_reply(self._replies.get(timeout=wait))
        except queue.Empty:
            self.close()
            return _unjudged(f"parsing took over {wait:.3g} s")
        except (OSError, ValueError, TypeError):  # the child is gone, or answered nonsense
            self.close()
            return _unjudged("the parser process stopped on it")

    def _ready(self) -> subprocess.Popen[bytes] | None:
        self.warm_up()
        if self._proc is not None and not self._greeted:
            try:
                greeting = self._replies.get(timeout=_STARTUP_TIMEOUT_SECS)
            except queue.Empty:
                greeting = None
            self._greeted = greeting == b"ready"
            if not self._greeted:
                log.warning("sanity gate: the parser process did not start; parsing in-process")
                self.close()
                self._unavailable = True
        return self._proc

    def _spawn(self) -> None:
        self._replies = queue.Queue()  # a fresh one: nothing a killed child said may leak in
        self._greeted = False
        try:
            self._proc = _containment().spawn(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            log.warning("sanity gate: cannot start %s (%s); parsing in-process", self.argv, exc)
            self._unavailable = True
            return
        pump = threading.Thread(target=_pump, args=(self._proc.stdout, self._replies), daemon=True)
        pump.start()

    def close(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    def __enter__(self) -> ParserProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _containment() -> ModuleType:
    """``localdispatch.processes``, imported when first needed: this module is also the
    parser child, which runs with ``-I -S`` (no site-packages, so no psutil) and must start
    fast; only the parent starts processes."""
    return importlib.import_module("localdispatch.processes")


def _parser_argv() -> list[str]:
    # The folder holding this package goes last on the child's path, so the standard library
    # always wins over anything that sits beside the package (a site-packages folder). The
    # child imports localdispatch/__init__.py too: keep it light, the child starts per merge.
    root = str(Path(__file__).resolve().parents[2])
    code = (
        "import sys; sys.path.append(sys.argv[1]); "
        "import localdispatch.merge.sanity as s; s._serve()"
    )
    return [sys.executable or "", "-I", "-S", "-c", code, root]


def _pump(stream: IO[bytes], replies: queue.Queue[bytes | None]) -> None:
    # The only reader of the child's stdout, so the only one to close it (at its end).
    with stream:
        for line in iter(stream.readline, b""):
            replies.put(line.rstrip(b"\r\n"))
    replies.put(None)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # Our own child, by its handle; closing stdin alone would wait out a runaway parse.
    proc.kill()
    proc.wait()
    if proc.stdin is not None:
        with suppress(OSError):  # flushing into a dead child
            proc.stdin.close()


def _unjudged(why: str) -> _Problem:
    return _Problem(None, None, f"not checked: {why}", judged=False)


def _decode_reply(reply: bytes | None) -> _Problem | None:
    if reply is None:
        raise ValueError("the parser process ended")
    value = json.loads(reply)
    if value is None:
        return None
    line, column, text = value
    return _Problem(line, column, str(text))


def _serve() -> None:
    """The child's loop: ``KIND SIZE\\n`` then SIZE bytes in; one JSON line out for each."""
    _limit_memory()
    warnings.simplefilter("ignore")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"ready\n")
    stdout.flush()
    for header in iter(stdin.readline, b""):
        kind, _, size = header.decode("ascii").partition(" ")
        problem = _run_here(kind, stdin.read(int(size)))
        reply = None if problem is None else [problem.line, problem.column, problem.text]
        stdout.write(json.dumps(reply).encode("ascii") + b"\n")
        stdout.flush()


def _limit_memory() -> None:
    # Only Linux enforces an address-space limit (macOS ignores RLIMIT_AS, Windows has none);
    # elsewhere the time limit bounds how much a runaway parse can take.
    if not sys.platform.startswith("linux"):
        return
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _PARSER_MEMORY_BYTES
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    with suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# ---- reading the change from git ------------------------------------------------------------


class _Change(NamedTuple):
    path: str
    mode: str
    oid: str
    base_oid: str | None  # the base version's blob, if the base had a regular file there


def check_merge(
    repo: Path,
    base: str,
    merged: str,
    *,
    git_args: Sequence[str] = (),
    parsers: ParserProcess | None = None,
) -> SanityReport:
    """Judge every file that moving the base from ``base`` to ``merged`` would add or change.

    ``base`` and ``merged`` are commits (or trees) of ``repo``; ``git_args`` lead every git
    command (``-c core.hooksPath=...``). Raises GitError if git cannot read them. A caller
    that merges again and again passes its own ``parsers``, which this leaves running: the
    child's start-up (tens of milliseconds) is then paid once, not per merge.
    """
    if parsers is None:
        with ParserProcess() as own:
            return check_merge(repo, base, merged, git_args=git_args, parsers=own)
    parsers.new_budget()
    findings: list[Finding] = []
    skipped: list[tuple[str, str]] = []
    changes = []
    for change in _changed_files(repo, base, merged, git_args):
        reason = _mode_skip(change.mode)
        if reason is None:
            changes.append(change)
        else:
            skipped.append((change.path, reason))
    checked = 0
    with _BlobReader(repo, git_args) as blobs:
        if any(_parser_kind(change.path) in _ISOLATED_KINDS for change in changes):
            parsers.warm_up()
        oids = [oid for change in changes for oid in (change.oid, change.base_oid) if oid]
        sizes = _blob_sizes(repo, oids, git_args)
        for change in changes:
            data = _read_new(change, sizes, blobs)
            reason = _TOO_BIG if data is None else why_skipped(change.path, data)
            if reason is not None:
                skipped.append((change.path, reason))
            elif data is not None:
                checked += 1
                load_base = _base_loader(change.base_oid, sizes, blobs)
                findings += _judge(change.path, data, load_base, parsers.run)
    return SanityReport(tuple(findings), checked, tuple(skipped))


def _read_new(change: _Change, sizes: Mapping[str, int | None], blobs: _BlobReader) -> bytes | None:
    """The merged version's contents, or None if it is too big to judge."""
    size = sizes.get(change.oid)
    if size is None:
        raise GitError(f"git has no blob {change.oid} for {change.path!r} in {blobs.repo}.")
    return blobs.read(change.oid) if size <= MAX_BYTES else None


def _mode_skip(mode: str) -> str | None:
    if mode == _SYMLINK_MODE:
        return "symlink"
    if mode == _SUBMODULE_MODE:
        return "submodule"
    return None if _is_regular(mode) else f"not a file (mode {mode})"


def _is_regular(mode: str) -> bool:
    return mode.startswith("100")  # 100644, 100755 (and the old 100664)


def _base_loader(
    oid: str | None, sizes: Mapping[str, int | None], blobs: _BlobReader
) -> Callable[[], bytes | None]:
    """Reads the base version once, on first need; None if there was none or it is too big."""
    loaded: list[bytes | None] = []

    def load() -> bytes | None:
        if not loaded:
            size = sizes.get(oid) if oid else None  # None also if a partial clone lacks it
            small = oid is not None and size is not None and size <= MAX_BYTES
            loaded.append(blobs.read(oid) if oid and small else None)
        return loaded[0]

    return load


def _changed_files(
    repo: Path, base: str, merged: str, git_args: Sequence[str]
) -> Iterator[_Change]:
    """Files added, modified or retyped between the two trees; deletions need no check.

    ``diff-tree`` (plumbing: no user diff settings) in raw form gives each file's modes and
    blob ids along with its path; ``-z`` leaves paths unquoted.
    """
    for rev in (base, merged):
        if not rev or rev.startswith("-"):
            raise GitError(f"The sanity gate needs two commits; {rev!r} is not one.")
    args = ["diff-tree", "-r", "-z", "--no-renames", "--no-abbrev", base, merged]
    fields = _git(repo, args, git_args).split(b"\0")
    for meta, raw_path in zip(fields[0::2], fields[1::2], strict=False):
        old_mode, mode, old_oid, oid, _status = meta.decode("ascii").lstrip(":").split()
        if set(oid) == {"0"}:
            continue  # deleted
        yield _Change(
            path=raw_path.decode("utf-8", errors="replace"),
            mode=mode,
            oid=oid,
            base_oid=old_oid if _is_regular(old_mode) else None,
        )


def _blob_sizes(repo: Path, oids: Sequence[str], git_args: Sequence[str]) -> dict[str, int | None]:
    """The size of each object (None if git lacks it), read before any content, so that a
    huge blob is never inflated and piped through just to be skipped."""
    if not oids:
        return {}
    unique = list(dict.fromkeys(oids))
    request = "".join(f"{oid}\n" for oid in unique).encode("ascii")
    out = _git(repo, ["cat-file", "--batch-check"], git_args, stdin=request)
    sizes: dict[str, int | None] = {}
    for line in out.decode("ascii", errors="replace").splitlines():
        oid, _, rest = line.partition(" ")
        kind, _, size = rest.partition(" ")
        sizes[oid] = int(size) if kind == "blob" else None
    return sizes


def _git_env() -> dict[str, str]:
    # Imported here, not at the top: the parser child imports this module and must start fast.
    from localdispatch.git.commands import git_env

    # No replace refs: judge the blobs that are really committed (what a push or a clone
    # gets). No lazy fetch: a partial clone must not go to the network for a base blob.
    return git_env({"GIT_NO_REPLACE_OBJECTS": "1", "GIT_NO_LAZY_FETCH": "1"})


def _git(repo: Path, args: Sequence[str], git_args: Sequence[str], stdin: bytes = b"") -> bytes:
    argv = ["git", *git_args, *args]
    try:
        result = _containment().run(
            argv,
            cwd=repo,
            input=stdin,
            capture_output=True,
            env=_git_env(),
            timeout=GIT_TIMEOUT_SECS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GitError(
            "git is not installed or not on PATH.",
            hint="Install git (https://git-scm.com) and open a new terminal.",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"`git {' '.join(args)}` did not finish in {GIT_TIMEOUT_SECS:g} s.") from exc
    if result.returncode != 0:
        raise _git_failed(args, repo, result.stderr)
    out: bytes = result.stdout
    return out


def _git_failed(args: Sequence[str], repo: Path, stderr: bytes) -> GitError:
    detail = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return GitError(
        f"`git {' '.join(args)}` failed in {repo}: {' '.join(detail[-3:]) or 'no output'}",
        path=repo,
    )


class _BlobReader:
    """One ``git cat-file --batch`` for every blob, asked one at a time (so it never blocks
    on a full pipe, and only one file is in memory at once), started on the first read."""

    def __init__(self, repo: Path, git_args: Sequence[str]) -> None:
        self.repo = repo
        self.argv = ["git", *git_args, "cat-file", "--batch"]
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._watchdog: threading.Timer | None = None

    def read(self, oid: str) -> bytes:
        proc = self._started()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(f"{oid}\n".encode("ascii"))
            proc.stdin.flush()
        except OSError:
            raise self._failed() from None
        header = proc.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise self._failed(f"no blob {oid}")
        size = int(header[2])
        data = proc.stdout.read(size)
        if len(data) != size or proc.stdout.read(1) != b"\n":
            raise self._failed()
        return data

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            # A file, not a pipe, so it cannot fill up and stall git; closed in __exit__.
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
            try:
                self._proc = _containment().spawn(
                    self.argv,
                    cwd=self.repo,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self._stderr,
                    env=_git_env(),
                )
            except FileNotFoundError as exc:
                raise GitError("git is not installed or not on PATH.") from exc
            # A git that stops answering is killed, and the read then fails instead of hanging.
            self._watchdog = threading.Timer(GIT_TIMEOUT_SECS, self._proc.kill)
            self._watchdog.daemon = True
            self._watchdog.start()
        return self._proc

    def _failed(self, what: str = "") -> GitError:
        self.close()
        stderr = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            stderr = self._stderr.read()
        detail = what or stderr.decode("utf-8", errors="replace").strip() or "it stopped"
        return GitError(f"`git cat-file --batch` failed in {self.repo}: {detail}", path=self.repo)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._proc is not None:
            _stop(self._proc)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> _BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._stderr is not None:
            self._stderr.close()
