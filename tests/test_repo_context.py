"""Repository context for the splitter's prompt: ranking, trimming to a budget, real git repos."""

from __future__ import annotations

from pathlib import Path

from conftest import git, make_repo
from localdispatch.split.context import (
    CHARS_PER_TOKEN,
    build_context,
    estimate_tokens,
    find_readme,
    goal_words,
    omitted_summary,
    path_words,
    rank_files,
    readme_excerpt,
    recent_files,
    render_context,
    tracked_files,
)

GOAL = "Add a full analytics dashboard with cycle time, throughput and WIP"


def synthetic_files(count: int) -> list[str]:
    """A large repository's file list: deep vendored code, tests, docs and a few real hits."""
    files = [f"vendor/lib{i % 40}/module_{i}.py" for i in range(count - 60)]
    files += [f"tests/unit/test_feature_{i}.py" for i in range(50)]
    files += ["README.md", "pyproject.toml", "setup.cfg", "app/__init__.py"]
    files += ["app/analytics/dashboard.py", "app/metrics/throughput.py", "app/cycleTime.py"]
    files += ["docs/index.md", "docs/usage.md", "Makefile"]
    return files


def test_estimate_tokens_rounds_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("x" * (CHARS_PER_TOKEN * 10)) == 10


def test_goal_words_drop_stopwords_and_short_words() -> None:
    assert goal_words(GOAL) == {"analytic", "dashboard", "cycle", "time", "throughput", "wip"}


def test_path_words_split_folders_snake_and_camel_case() -> None:
    assert {"app", "cycle", "time", "py"} <= path_words("app/cycleTime.py")
    assert {"test", "feature"} <= path_words("tests/unit/test_feature_3.py")


def test_ranking_prefers_goal_words_then_hints_top_level_and_recent() -> None:
    files = ["z/deep/a.py", "README.md", "app/dashboards/view.py", "lib/other.py", "lib/new.py"]
    ranked = rank_files(files, GOAL, recent=["lib/new.py"], hint_files=["lib/other.py"])
    assert ranked[0] in ("app/dashboards/view.py", "lib/other.py")
    assert ranked.index("README.md") < ranked.index("z/deep/a.py")
    assert ranked.index("lib/new.py") < ranked.index("z/deep/a.py")
    assert ranked[-1] == "z/deep/a.py"


def test_small_repository_is_shown_in_full() -> None:
    files = ["README.md", "src/app.py", "tests/test_app.py"]
    context = render_context(files, GOAL, readme=("README.md", "# Demo\n\nA small app.\n"))
    assert context.shown == 3
    assert context.omitted == 0
    assert "Files tracked by git (all 3):" in context.text
    assert "src/app.py" in context.text
    assert "README.md (first lines):\n# Demo\n\nA small app." in context.text


def test_five_thousand_files_fit_the_budget_and_keep_the_relevant_ones() -> None:
    files = synthetic_files(5000)
    context = render_context(files, GOAL, readme=("README.md", "# App\n" * 2000))
    assert context.tokens <= 4000
    assert 0 < context.shown < 5000
    for wanted in ("app/analytics/dashboard.py", "app/metrics/throughput.py", "app/cycleTime.py"):
        assert f"\n{wanted}\n" in context.text
    assert "README.md" in context.text and "pyproject.toml" in context.text
    assert f"({context.shown:,} of 5,000 shown; {context.omitted:,} left out" in context.text
    assert "Folders with files left out: vendor/lib" in context.text


def test_budget_is_respected_for_small_budgets() -> None:
    files = synthetic_files(2000)
    for budget in (300, 1000, 2500):
        context = render_context(files, GOAL, budget_tokens=budget)
        assert context.tokens <= budget
        assert context.shown > 0


def test_readme_excerpt_skips_badges_and_stops_at_a_line_end() -> None:
    text = "[![build](x.svg)](y)\n<p align='center'>\n# Title\n\n\n\nFirst line.\nSecond line.\n"
    assert readme_excerpt(text, 1000) == "# Title\n\nFirst line.\nSecond line."
    assert readme_excerpt(text, 22) == "# Title\n\nFirst line."


def test_omitted_summary_groups_by_folder() -> None:
    summary = omitted_summary(["a/b/c/1.py", "a/b/2.py", "x.py", "d/3.py"] + ["a/b/4.py"] * 2)
    assert summary.startswith("a/b/ (4)")
    assert "(top level) (1)" in summary and "d/ (1)" in summary
    many = omitted_summary(f"f{i}/x.py" for i in range(15))
    assert many.endswith("and 5 more folders")


def test_find_readme_prefers_markdown_at_the_top() -> None:
    assert find_readme(["docs/README.md", "readme.txt", "README.md"]) == "README.md"
    assert find_readme(["docs/README.md"]) is None


def test_build_context_reads_a_real_repository(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "my repo",
        {
            "README.md": "# Tracker\n\nTracks work items.\n",
            "src/tracker/board.py": "",
            "src/tracker/dashboard.py": "",
            "docs/naïve plan.md": "",
        },
    )
    (repo / "src/tracker/metrics.py").write_text("x = 1\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "metrics")
    assert recent_files(repo)[0] == "src/tracker/metrics.py"
    assert "docs/naïve plan.md" in tracked_files(repo)
    context = build_context(repo, GOAL)
    assert context.readme == "README.md"
    assert "Tracks work items." in context.text
    assert "src/tracker/dashboard.py" in context.files
    assert "docs/naïve plan.md" in context.text
    assert context.total == 5 and context.omitted == 0


def test_build_context_outside_git_says_so(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Loose files\n", encoding="utf-8")
    context = build_context(tmp_path, GOAL)
    assert context.total == 0
    assert "No file list:" in context.text
    assert "# Loose files" in context.text
