"""The sanity gate: pure checks on bytes, then real repositories with real merges."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import git, make_repo
from localdispatch.errors import GitError
from localdispatch.merge import sanity
from localdispatch.merge.sanity import Finding, SanityReport, check_file, check_merge, why_skipped

has_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")

AIDER_BLOCK = """\
import os

def greet(name):
<<<<<<< SEARCH
    return "hi"
=======
    return f"hello {name}"
>>>>>>> REPLACE
"""

# ---- conflict markers ------------------------------------------------------------------------


def test_an_aider_search_replace_block_in_python_is_refused_at_its_first_marker() -> None:
    findings = check_file("src/app.py", AIDER_BLOCK.encode())
    assert findings[0] == Finding("src/app.py", 4, 'conflict marker "<<<<<<< SEARCH"')
    # and it does not compile either, which is reported too
    assert [f.problem.startswith("Python") for f in findings] == [False, True]


@pytest.mark.parametrize(
    ("text", "line", "marker"),
    [
        ("a\n<<<<<<< HEAD\nb\n", 2, "<<<<<<< HEAD"),
        ("a\nb\n>>>>>>> feature/x\n", 3, ">>>>>>> feature/x"),
        ("a\n||||||| merged common ancestors\n", 2, "||||||| merged common ancestors"),
        ("a\r\n<<<<<<<\r\nb\r\n", 2, "<<<<<<<"),  # bare marker, CRLF
        ("a\n\n>>>>>>>", 3, ">>>>>>>"),  # at the end of the file, no newline
    ],
)
def test_every_kind_of_marker_in_any_text_file_is_found(text: str, line: int, marker: str) -> None:
    assert check_file("notes.txt", text.encode()) == [
        Finding("notes.txt", line, f'conflict marker "{marker}"')
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Title\n=======\n\nBody\n",  # a Markdown/RST heading underline
        "<<<<<<<< eight is not a marker\n",
        ">>>>>>>quoted e-mail\n",
        "  <<<<<<< indented\n",
        "x = '<<<<<<< HEAD'\n",
    ],
)
def test_lookalikes_are_not_markers(text: str) -> None:
    assert check_file("README.md", text.encode()) == []


def test_a_marker_line_is_shown_printable_and_short() -> None:
    [finding] = check_file("a.txt", b"<<<<<<< \x1b[31mred\x1b[0m" + b"x" * 200 + b"\n")
    assert "\x1b" not in finding.describe()
    assert "\\x1b[31mred" in finding.describe()
    assert len(finding.problem) < 100


# ---- Python --------------------------------------------------------------------------------


def test_python_that_does_not_compile_is_refused_with_its_line() -> None:
    [finding] = check_file("pkg/mod.py", b"def ok():\n    return 1\n\ndef bad(:\n    pass\n")
    assert (finding.path, finding.line) == ("pkg/mod.py", 4)
    assert "cannot compile it (SyntaxError" in finding.problem
    assert f"Python {sys.version_info.major}.{sys.version_info.minor}" in finding.problem


def test_errors_found_only_by_the_compiler_are_refused_too() -> None:
    # `await` outside a function parses; only compiling (never running) finds it.
    [finding] = check_file("a.py", b"x = 1\nawait x\n")
    assert finding.line == 2


@pytest.mark.parametrize("name", ["types.pyi", "gui.pyw", "LOUD.PY"])
def test_stubs_windows_scripts_and_any_case_count_as_python(name: str) -> None:
    assert len(check_file(name, b"def f(:\n")) == 1


def test_coding_cookies_bom_and_warnings_are_fine() -> None:
    latin1 = b"# -*- coding: latin-1 -*-\nname = '\xe9'\n"
    bom = b"\xef\xbb\xbfx = 1\n"
    noisy = b"import re\npattern = '\\d+'\nsame = 1 is 1\n"  # DeprecationWarning, SyntaxWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in (latin1, bom, noisy):
            assert check_file("a.py", data) == []
    assert caught == []


@pytest.mark.parametrize("prefix", [b"", b"x = 1\n" * 2000])  # NUL first, or after 8 KiB
def test_python_with_null_bytes_is_refused_not_skipped_as_binary(prefix: bytes) -> None:
    data = prefix + b"\0y = 2\n"
    assert why_skipped("a.py", data) is None
    [finding] = check_file("a.py", data)
    assert "null bytes" in finding.problem


@pytest.mark.parametrize(
    "source",
    [
        "[" * 100_000,
        "x = " + "-" * 100_000 + "1",
        "x = a" + ".b" * 100_000,
        "x = " + "1+" * 100_000 + "1",
        "x = " + "lambda: " * 100_000 + "1",
    ],
    ids=["brackets", "unary", "attributes", "sum", "lambdas"],
)
def test_absurdly_nested_python_is_refused_without_crashing(source: str) -> None:
    [finding] = check_file("deep.py", source.encode())
    assert "cannot compile it" in finding.problem


# ---- JSON and TOML ----------------------------------------------------------------------------


def test_json_that_does_not_parse_is_refused_with_line_and_column() -> None:
    [finding] = check_file("config/x.json", b'{\n  "a": 1,\n  "b": 2\n    "c": 3\n}\n')
    assert finding == Finding("config/x.json", 4, "invalid JSON (Expecting ',' delimiter)", 5)


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"a": [1, 2.5, null]}',  # UTF-8 with a BOM
        '{"k": "é"}'.encode("utf-16"),  # UTF-16, NUL bytes and all
        b'{"n": ' + b"9" * 10_000 + b"}",  # longer than Python converts, still JSON
    ],
    ids=["bom", "utf16", "long-number"],
)
def test_valid_json_in_any_form_passes(data: bytes) -> None:
    assert check_file("data.json", data) == []


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 5000 + b"]" * 5000])
def test_absurdly_nested_json_is_refused_without_crashing(data: bytes) -> None:
    [finding] = check_file("deep.json", data)
    assert finding.problem == "invalid JSON (nested too deeply)"


def test_json_that_is_not_utf8_is_refused() -> None:
    [finding] = check_file("a.json", b'{\n"a": "\xff"}')
    assert finding == Finding("a.json", 2, "invalid JSON (not UTF-8)")


@pytest.mark.parametrize(
    "path",
    [
        "tsconfig.json",
        "web/tsconfig.base.json",
        "jsconfig.json",
        ".vscode/settings.json",
        "tools/.devcontainer/devcontainer.json",
        ".devcontainer.json",
        ".eslintrc.json",
        "app/settings.jsonc",
    ],
)
def test_json_with_comments_files_are_not_parsed_but_still_searched_for_markers(
    path: str,
) -> None:
    assert check_file(path, b'{\n  // a comment\n  "a": 1,\n}\n') == []
    assert len(check_file(path, b"{\n<<<<<<< HEAD\n}\n")) == 1


@has_tomllib
def test_toml_that_does_not_parse_is_refused_with_line_and_column() -> None:
    [finding] = check_file("pyproject.toml", b'[project]\nname = "x"\nversion = \n')
    assert finding == Finding("pyproject.toml", 3, "invalid TOML (Invalid value)", 11)


@has_tomllib
@pytest.mark.parametrize(
    "data", [b"a = " + b"[" * 100_000, b"a = " + b"{b=" * 5000 + b"1" + b"}" * 5000]
)
def test_absurdly_nested_toml_is_refused_without_crashing(data: bytes) -> None:
    [finding] = check_file("deep.toml", data)
    assert finding.problem == "invalid TOML (nested too deeply)"


@has_tomllib
def test_toml_with_a_bom_passes() -> None:
    assert check_file("Cargo.toml", b'\xef\xbb\xbf[package]\nname = "x"\n') == []


# ---- what is skipped, and the base version -------------------------------------------------


def test_a_check_the_base_version_already_failed_is_not_held_against_the_change() -> None:
    broken_before = b"print 'python 2'\n"
    broken_after = b"print 'python 2, still'\n"
    assert check_file("old.py", broken_after, broken_before) == []
    assert len(check_file("old.py", broken_after, b"print('fine')\n")) == 1
    assert len(check_file("old.py", broken_after)) == 1  # a new file has no excuse
    # The exemption is per check: markers are new even though compiling failed before.
    [finding] = check_file("old.py", b"print 'x'\n<<<<<<< HEAD\n", broken_before)
    assert finding.problem == 'conflict marker "<<<<<<< HEAD"'
    assert check_file("x.json", b"{oops: 2}", b"{oops: 1}") == []


def test_binary_files_are_skipped() -> None:
    data = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\n<<<<<<< HEAD\n"
    assert why_skipped("logo.png", data) == "binary"
    assert why_skipped("notes.txt", b"\0" + b"<<<<<<< x\n") == "binary"
    assert check_file("logo.png", data) == []
    # A NUL after the first 8 KiB does not make a text file binary.
    late = b"a\n" * 5000 + b"\0\n<<<<<<< x\n"
    assert why_skipped("notes.txt", late) is None
    assert len(check_file("notes.txt", late)) == 1


def test_files_over_the_size_limit_are_skipped() -> None:
    data = b"<<<<<<< HEAD\n" + b"a" * sanity.MAX_BYTES
    assert why_skipped("big.txt", data) == "larger than 2 MiB"
    assert check_file("big.txt", data) == []


# ---- the report ------------------------------------------------------------------------------


def test_the_summary_names_file_line_and_problem() -> None:
    report = SanityReport(
        findings=(
            Finding("src/app.py", 12, 'conflict marker "<<<<<<< SEARCH"'),
            Finding("config/x.json", 3, "invalid JSON (Expecting ',' delimiter)", 5),
        ),
        checked=4,
    )
    assert not report.passed
    assert report.summary() == (
        'src/app.py line 12: conflict marker "<<<<<<< SEARCH"; '
        "config/x.json line 3, column 5: invalid JSON (Expecting ',' delimiter)"
    )


def test_the_summary_shows_the_first_few_then_a_count() -> None:
    findings = tuple(Finding(f"f{n}.py", None, "bad") for n in range(8))
    summary = SanityReport(findings, checked=8).summary()
    assert summary == "f0.py: bad; f1.py: bad; f2.py: bad; f3.py: bad; f4.py: bad; and 3 more"
    assert SanityReport(checked=3).summary() == "no problems in 3 changed file(s)"
    assert SanityReport(checked=3).passed


def test_a_path_with_control_characters_is_shown_escaped() -> None:
    finding = Finding("evil\nname\x1b[2J.py", 1, "bad")
    assert finding.describe() == "evil\\nname\\x1b[2J.py line 1: bad"


# ---- the child process that parses ------------------------------------------------------------

SAMPLES = [
    ("a.py", AIDER_BLOCK.encode()),
    ("b.py", b"def f(:\n"),
    ("c.py", b"x = " + b"-" * 100_000 + b"1"),
    ("d.py", b"x = 1\n\0"),
    ("e.py", b"# -*- coding: latin-1 -*-\nx = '\xe9'\n"),
    ("f.toml", b"a = \n"),
    ("g.toml", b"a = " + b"[" * 100_000),
    ("h.json", b"[1,]"),
]


@pytest.mark.parametrize(("path", "data"), SAMPLES, ids=[path for path, _ in SAMPLES])
def test_the_parser_process_judges_exactly_as_the_pure_checks_do(path: str, data: bytes) -> None:
    with sanity.ParserProcess() as parsers:
        assert sanity._judge(path, data, lambda: None, parsers.run) == check_file(path, data)


def test_a_parse_that_takes_too_long_is_refused_and_the_next_file_still_checked(
    tmp_path: Path,
) -> None:
    # A stand-in for the child that says it is ready and then never answers: real inputs
    # that take minutes to compile depend on the Python version.
    stuck = tmp_path / "stuck.py"
    stuck.write_text(
        "import sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n", encoding="utf-8"
    )
    with sanity.ParserProcess([sys.executable, str(stuck)], timeout=0.5) as parsers:
        [slow] = sanity._judge("slow.py", b"x = 1\n", lambda: None, parsers.run)
        assert slow.problem == "not checked: parsing took over 0.5 s"
        [again] = sanity._judge("next.py", b"x = 1\n", lambda: None, parsers.run)
        assert again.problem == "not checked: parsing took over 0.5 s"  # a fresh child


def test_the_time_for_all_parses_of_a_merge_is_bounded(tmp_path: Path) -> None:
    stuck = tmp_path / "stuck.py"
    stuck.write_text(
        "import sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n", encoding="utf-8"
    )
    with sanity.ParserProcess([sys.executable, str(stuck)], timeout=0.3, budget=0.5) as parsers:
        problems = [parsers.run("python", b"x = 1\n") for _ in range(6)]
    assert all(problem is not None and not problem.judged for problem in problems)
    assert problems[-1] == sanity._unjudged("the gate's 0.5 s for parsing were used up")


def test_a_base_version_that_could_not_be_judged_excuses_nothing() -> None:
    base = b"def f():\n    return 1\n"

    def run(kind: str, data: bytes) -> sanity._Problem | None:
        return sanity._unjudged("too slow") if data == base else sanity._run_here(kind, data)

    findings = sanity._judge("a.py", b"def f(:\n", lambda: base, run)
    assert [finding.line for finding in findings] == [1]


def test_a_parser_process_that_dies_refuses_the_file(tmp_path: Path) -> None:
    dies = tmp_path / "dies.py"
    dies.write_text("print('ready', flush=True)\n", encoding="utf-8")
    with sanity.ParserProcess([sys.executable, str(dies)]) as parsers:
        [finding] = sanity._judge("a.py", b"x = 1\n", lambda: None, parsers.run)
    assert finding.problem == "not checked: the parser process stopped on it"


def test_without_a_parser_process_the_checks_run_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sanity.ParserProcess([str(tmp_path / "no such python")]) as parsers:
        assert sanity._judge("a.py", b"def f(:\n", lambda: None, parsers.run) == check_file(
            "a.py", b"def f(:\n"
        )
    assert "parsing in-process" in caplog.text


# ---- real repositories, real merges ------------------------------------------------------------


def write(repo: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_bytes(content.encode("utf-8"))  # no newline translation


def commit(repo: Path, files: dict[str, str | bytes], message: str = "change") -> str:
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def merge(repo: Path, branch: str) -> str:
    """Merge ``branch`` into the checked-out branch as the merge queue does: a merge commit."""
    git(repo, "merge", "-q", "--no-ff", "-m", f"merge {branch}", branch)
    return git(repo, "rev-parse", "HEAD")


BASE_FILES = {
    "src/app.py": "import os\n\n\ndef greet(name):\n    return 'hi'\n",
    "config/x.json": '{\n  "a": 1,\n  "b": 2\n}\n',
    "README.md": "Demo\n====\n",
    "legacy.py": "print 'python 2 forever'\n",
}


@pytest.fixture
def base_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "my repo", dict(BASE_FILES))


def test_a_merge_with_broken_files_is_reported_by_file_and_line(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    git(base_repo, "checkout", "-q", "-b", "ld/t-1")
    commit(
        base_repo,
        {
            "src/app.py": AIDER_BLOCK,
            "config/x.json": '{\n  "a": 1,\n  "b": 2\n  "c": 3\n}\n',
            "README.md": "Demo\n=======\n\nMore text.\n",
            "src/new.py": "def fine():\n    return 1\n",
            "legacy.py": "print 'python 2, edited'\n",
        },
    )
    git(base_repo, "checkout", "-q", "main")
    merged = merge(base_repo, "ld/t-1")

    report = check_merge(base_repo, base, merged)

    # legacy.py never compiled (Python 2): editing it is not this change's fault
    assert report.checked == 5
    assert [(f.path, f.line) for f in report.findings] == [
        ("config/x.json", 4),
        ("src/app.py", 4),
        ("src/app.py", 4),
    ]
    assert report.summary().startswith(
        "config/x.json line 4, column 3: invalid JSON (Expecting ',' delimiter); "
        'src/app.py line 4: conflict marker "<<<<<<< SEARCH"; src/app.py line 4, column'
    )


def test_a_sound_merge_passes(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    git(base_repo, "checkout", "-q", "-b", "ld/t-2")
    commit(base_repo, {"src/app.py": BASE_FILES["src/app.py"] + "\nX = 1\n", "a.toml": "a = 1\n"})
    git(base_repo, "checkout", "-q", "main")
    report = check_merge(base_repo, base, merge(base_repo, "ld/t-2"))
    assert report == SanityReport(findings=(), checked=2, skipped=())
    assert report.summary() == "no problems in 2 changed file(s)"


def test_a_criss_cross_history_is_judged_by_the_base_tip_and_merged_trees(tmp_path: Path) -> None:
    # The user fixes app.py on main; a worker branch re-merges that fix with `-s ours`,
    # discarding it. Merging the branch then silently restores the broken app.py, and the
    # diff from one of the two merge bases does not even list the file.
    repo = make_repo(tmp_path / "repo", {"app.py": "def f(:\n    pass\n", "g.txt": "g\n"})
    git(repo, "checkout", "-q", "-b", "side")
    side = commit(repo, {"g.txt": "g2\n"}, "side change")
    git(repo, "checkout", "-q", "main")
    fix = commit(repo, {"app.py": "def f():\n    pass\n"}, "fix app.py")
    base = merge(repo, "side")
    git(repo, "checkout", "-q", "-b", "worker", side)
    git(repo, "merge", "-q", "-s", "ours", "-m", "re-merge the fix, keeping ours", fix)
    git(repo, "checkout", "-q", "main")
    merged = merge(repo, "worker")

    assert len(git(repo, "merge-base", "--all", base, "worker").split()) == 2
    assert "app.py" not in git(repo, "diff", "--name-only", side, "worker")
    report = check_merge(repo, base, merged)
    assert [(f.path, f.line) for f in report.findings] == [("app.py", 1)]
    assert report.checked == 1


def test_a_file_the_merge_leaves_as_it_was_is_not_checked(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    git(base_repo, "checkout", "-q", "-b", "ld/t-3")
    commit(base_repo, {"src/app.py": AIDER_BLOCK}, "break it")
    commit(base_repo, {"src/app.py": BASE_FILES["src/app.py"], "NOTES.md": "n\n"}, "undo")
    git(base_repo, "checkout", "-q", "main")
    report = check_merge(base_repo, base, merge(base_repo, "ld/t-3"))
    assert report == SanityReport(findings=(), checked=1, skipped=())


def _tree_commit(
    repo: Path, parent: str, entries: dict[str, tuple[str, bytes | str] | None]
) -> str:
    """A commit on ``parent`` with ``entries`` (path: (mode, contents or object id), or None to
    delete) set, made with plumbing so any mode (symlink, submodule) works on every OS."""
    env = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "sanity-test-index")}

    def run(*args: str, stdin: bytes = b"") -> str:
        result = subprocess.run(
            ["git", *args], cwd=repo, env=env, input=stdin, capture_output=True, check=True
        )
        return result.stdout.decode("utf-8").strip()

    run("read-tree", parent)
    for path, entry in entries.items():
        if entry is None:
            run("update-index", "--force-remove", path)
            continue
        mode, content = entry
        if isinstance(content, bytes):
            content = run("hash-object", "-w", "--stdin", stdin=content)
        run("update-index", "--add", "--cacheinfo", f"{mode},{content},{path}")
    tree = run("write-tree")
    return run("commit-tree", tree, "-p", parent, "-m", "plumbing")


def test_binary_big_symlink_and_submodule_entries_are_skipped_and_listed(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    marker = b"<<<<<<< HEAD\n"
    merged = _tree_commit(
        base_repo,
        base,
        {
            "logo.png": ("100644", b"\x89PNG\0\0" + marker),
            "big.txt": ("100644", marker + b"x" * sanity.MAX_BYTES),
            "link.py": ("120000", b"src/app.py"),
            "vendor/lib": ("160000", "1" * 40),
            "run.sh": ("100755", b"#!/bin/sh\n" + marker),
            "README.md": None,  # a deletion is neither checked nor skipped
        },
    )
    report = check_merge(base_repo, base, merged)
    assert report.findings == (Finding("run.sh", 2, 'conflict marker "<<<<<<< HEAD"'),)
    assert report.checked == 1
    assert sorted(report.skipped) == [
        ("big.txt", "larger than 2 MiB"),
        ("link.py", "symlink"),
        ("logo.png", "binary"),
        ("vendor/lib", "submodule"),
    ]


def test_a_symlink_turned_into_a_file_is_judged_without_an_excuse(base_repo: Path) -> None:
    # The link's blob (its target, which does not compile either) is no base version of
    # the file that replaces it; and a file turned into a link is skipped.
    head = git(base_repo, "rev-parse", "HEAD")
    base = _tree_commit(base_repo, head, {"tool.py": ("120000", b"../shared tools/tool.py")})
    merged = _tree_commit(
        base_repo,
        base,
        {"tool.py": ("100644", b"def f(:\n"), "src/app.py": ("120000", b"../README.md")},
    )
    report = check_merge(base_repo, base, merged)
    assert [(f.path, f.line) for f in report.findings] == [("tool.py", 1)]
    assert report.skipped == (("src/app.py", "symlink"),)


def test_deletions_and_paths_with_spaces_and_accents(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    git(base_repo, "checkout", "-q", "-b", "ld/t-4")
    git(base_repo, "rm", "-q", "legacy.py")
    commit(base_repo, {"docs/naïve notes.txt": "a\n>>>>>>> theirs\n"})
    git(base_repo, "checkout", "-q", "main")
    report = check_merge(base_repo, base, merge(base_repo, "ld/t-4"))
    assert report.findings == (
        Finding("docs/naïve notes.txt", 2, 'conflict marker ">>>>>>> theirs"'),
    )
    assert (report.checked, report.skipped) == (1, ())


def test_contents_come_from_git_objects_never_from_the_working_tree(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    git(base_repo, "checkout", "-q", "-b", "ld/t-5")
    commit(base_repo, {"src/app.py": AIDER_BLOCK})
    git(base_repo, "checkout", "-q", "main")
    merged = merge(base_repo, "ld/t-5")
    write(base_repo, {"src/app.py": "x = 1\n"})  # the checkout says one thing...
    report = check_merge(base_repo, base, merged)  # ...the commit another
    assert report.findings[0] == Finding("src/app.py", 4, 'conflict marker "<<<<<<< SEARCH"')


def test_replace_refs_cannot_disguise_a_blob(base_repo: Path) -> None:
    base = git(base_repo, "rev-parse", "HEAD")
    git(base_repo, "checkout", "-q", "-b", "ld/t-6")
    commit(base_repo, {"src/app.py": AIDER_BLOCK})
    git(base_repo, "checkout", "-q", "main")
    merged = merge(base_repo, "ld/t-6")
    git(base_repo, "replace", f"{merged}:src/app.py", f"{base}:src/app.py")
    assert len(check_merge(base_repo, base, merged).findings) == 2


def test_git_args_lead_every_git_command_and_git_failures_raise(base_repo: Path) -> None:
    head = git(base_repo, "rev-parse", "HEAD")
    hooks = ["-c", f"core.hooksPath={os.devnull}"]
    assert check_merge(base_repo, head, head, git_args=hooks) == SanityReport()
    with pytest.raises(GitError, match="diff-tree"):
        check_merge(base_repo, head, head, git_args=["--no-such-option"])
    with pytest.raises(GitError, match="diff-tree"):
        check_merge(base_repo, head, "0" * 40)
    with pytest.raises(GitError, match="needs two commits"):
        check_merge(base_repo, head, "--output=x")


def test_the_parser_child_starts_from_an_isolated_python(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Python and TOML are parsed in a child run with -I -S (no site-packages): the module
    must import there, or every merge would fall back to parsing in the dispatcher."""
    child = subprocess.run(
        [*sanity._parser_argv()[:-3], "-c", "import sys; sys.path.append(sys.argv[1]); "
         "import localdispatch.merge.sanity", sanity._parser_argv()[-1]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    (repo / "a.py").write_text("x = (\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "broken")
    with caplog.at_level("WARNING", logger="localdispatch.merge.sanity"):
        report = check_merge(repo, base, git(repo, "rev-parse", "HEAD"))
    assert report.findings and report.findings[0].path == "a.py"
    assert "parsing in-process" not in caplog.text
