"""What lands on the base branch is sound: the gates judge exactly what would land, whatever
the branch's history, and nothing the dispatcher does reaches the user's repository by a door
a worker could open. Real repositories, real histories, real lock files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git
from localdispatch.config import CONFIG_FILENAME
from localdispatch.merge import checkout_journal
from test_merging import Env, make_env


@pytest.fixture
def env(repo: Path) -> Env:
    return make_env(repo)


def commit(tree: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    git(tree, "add", "--force", "--", *files)
    git(tree, "commit", "-q", "-m", message)
    return git(tree, "rev-parse", "HEAD")


# ---- gates on base tip against the prepared merge ----------------------------------------


def test_a_criss_cross_ours_merge_cannot_revert_the_users_config(env: Env) -> None:
    """A criss-cross history: the branch's earlier commit was merged into main, and the branch
    then merges the user's config change with ``-s ours``. The two merge bases hold different
    configs; a diff from one of them can show no change to the config, while landing the
    branch would revert the user's change on main."""
    old_base = env.tip()
    scratch = env.repo.parent / "crisscross"
    git(env.repo, "worktree", "add", "-q", "-b", "ld/t-1-evil", str(scratch), old_base)
    early = commit(scratch, {"feature.py": "x = 1\n"}, "feature")
    user_change = commit(env.repo, {CONFIG_FILENAME: '{"num_workers": 3}\n'}, "user config")
    git(env.repo, "merge", "-q", "--no-ff", "-m", "merge the early work", early)
    git(scratch, "merge", "-q", "-s", "ours", "-m", "take theirs, keep ours", user_change)
    git(env.repo, "worktree", "remove", "--force", str(scratch))
    bases = git(env.repo, "merge-base", "--all", "main", "ld/t-1-evil").split()
    assert len(bases) == 2  # criss-cross
    user_tip = env.tip()

    outcome = env.queue.merge(env.task(), "ld/t-1-evil")

    assert outcome.status == "rejected" and CONFIG_FILENAME in outcome.message
    assert env.tip() == user_tip
    assert json.loads((env.repo / CONFIG_FILENAME).read_text(encoding="utf-8")) == {
        "num_workers": 3
    }


def test_a_gitignore_that_unignores_state_files_is_refused(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/ign", {".gitignore": "*.pyc\n!/task_queue.json\n!/.dispatch/\n"})
    before = env.tip()

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "rejected"
    assert ".gitignore" in outcome.message and "task_queue.json" in outcome.message
    assert env.tip() == before
    env.store.all()  # the store file exists; the user's status must stay clean
    assert git(env.repo, "status", "--porcelain") == ""


def test_an_ordinary_gitignore_change_lands(env: Env) -> None:
    outcome = env.queue.merge(env.task(), env.branch("ld/ign2", {".gitignore": "*.pyc\n"}))
    assert outcome.status == "merged"


def test_a_change_the_merge_does_not_make_is_not_blamed(env: Env) -> None:
    """The branch changed the config and changed it back: nothing of it would land."""
    scratch = env.repo.parent / "back"
    git(env.repo, "worktree", "add", "-q", "-b", "ld/back", str(scratch), "main")
    original = (scratch / CONFIG_FILENAME).read_text(encoding="utf-8")
    commit(scratch, {CONFIG_FILENAME: "{}\n"}, "touch config")
    commit(scratch, {CONFIG_FILENAME: original, "real.py": "ok = True\n"}, "undo, real work")
    git(env.repo, "worktree", "remove", "--force", str(scratch))
    assert env.queue.merge(env.task(), "ld/back").status == "merged"


def test_nothing_of_a_refused_merge_reaches_the_users_repository(env: Env) -> None:
    branch = env.branch("ld/cfg", {CONFIG_FILENAME: '{"num_workers": 64}\n'})
    objects_before = git(env.repo, "count-objects", "-v")
    assert env.queue.merge(env.task(), branch).status == "rejected"
    assert git(env.repo, "count-objects", "-v") == objects_before  # no merge commit fetched
    assert "integration" in str(env.queue.integration_path)
    assert (env.queue.integration_path / ".git").is_dir()  # a private clone, not a worktree
    assert git(env.repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_test_command_cannot_move_the_users_main(repo: Path, tmp_path: Path) -> None:
    """The test gate runs worker-written code: in the private integration clone, its git
    reaches nothing of the user's."""
    script = (
        "import subprocess, sys\n"
        "subprocess.run(['git', 'update-ref', 'refs/heads/main', 'HEAD'])\n"
        "subprocess.run(['git', '-C', '..', 'update-ref', 'refs/heads/evil', 'HEAD'])\n"
        "subprocess.run(['git', 'config', 'core.hooksPath', '/nowhere'])\n"
    )
    env = make_env(repo, test_command=[sys.executable, "-c", script])
    before = git(env.repo, "for-each-ref", "--format=%(refname) %(objectname)")
    branch = env.branch("ld/t", {"t.py": "x = 1\n"})

    outcome = env.queue.merge(env.task(), branch)

    assert outcome.status == "merged"
    after = git(env.repo, "for-each-ref", "--format=%(refname) %(objectname)")
    assert "refs/heads/evil" not in after
    assert "hooksPath" not in (env.repo / ".git" / "config").read_text(encoding="utf-8")
    assert env.tip() == outcome.commit and before != after  # moved by the queue, to the merge


# ---- lock files that are not ours ---------------------------------------------------------


def test_a_foreign_ref_lock_waits_for_a_person_and_is_never_removed(env: Env) -> None:
    git(env.repo, "checkout", "-q", "--detach")  # the base checked out nowhere: update-ref
    lock = env.repo / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("", encoding="utf-8")
    task = env.task()
    before = env.tip()

    outcome = env.queue.merge(task, env.branch("ld/l", {"l.py": "\n"}))

    assert outcome.status == "waiting" and outcome.person
    assert str(lock) in outcome.message or "main.lock" in outcome.message
    [entry] = env.queue.pending()
    assert any("main.lock" in step for step in entry["steps"])
    assert lock.exists() and env.tip() == before
    assert env.queue.retry_pending() == []  # no loop, no new reason
    lock.unlink()  # the person removes it
    [retried] = env.queue.retry_pending()
    assert retried.status == "merged"


def test_a_foreign_index_lock_in_the_users_checkout_waits_for_a_person(env: Env) -> None:
    lock = env.repo / ".git" / "index.lock"
    lock.write_text("", encoding="utf-8")
    outcome = env.queue.merge(env.task(), env.branch("ld/i", {"i.py": "\n"}))
    assert outcome.status == "waiting" and outcome.person and lock.exists()


# ---- an update of the user's checkout cut off by a power cut ------------------------------


def interrupted_update(env: Env, files: dict[str, str], written: dict[str, str]) -> Path:
    """Stage what a power cut during `git merge --ff-only` leaves: the journal, some files
    already at the new version, the branch still at the old one."""
    old = env.tip()
    scratch = env.repo.parent / "upd"
    git(env.repo, "worktree", "add", "-q", "--detach", str(scratch), old)
    new = commit(scratch, files, "the merge")
    git(env.repo, "worktree", "remove", "--force", str(scratch))
    journal = env.layout.checkout_journal
    update = checkout_journal.CheckoutUpdate(str(env.repo), "main", old, new)
    checkout_journal.begin(journal, update)
    for rel, text in written.items():
        (env.repo / rel).write_text(text, encoding="utf-8")
    return journal


def test_a_half_written_checkout_update_is_finished_on_restart(env: Env) -> None:
    journal = interrupted_update(
        env, {"a.py": "a = 2\n", "b.py": "b = 2\n"}, written={"a.py": "a = 2\n"}
    )
    (env.repo / ".git" / "index.lock").write_text("", encoding="utf-8")  # ours: made after

    settled = checkout_journal.settle(journal, env.repo)

    assert settled.state == "finished" and settled.removed
    assert (env.repo / "b.py").read_text(encoding="utf-8") == "b = 2\n"
    assert git(env.repo, "status", "--porcelain") == ""
    assert git(env.repo, "rev-parse", "HEAD") == env.tip() and not journal.exists()


def test_a_cut_off_update_with_a_strange_file_names_the_command(env: Env) -> None:
    journal = interrupted_update(
        env, {"a.py": "a = 2\n", "b.py": "b = 2\n"}, written={"a.py": "a = 2 and more\n"}
    )
    before = env.tip()

    settled = checkout_journal.settle(journal, env.repo)

    assert settled.state == "person" and "a.py" in settled.reason
    assert any("pathspec-from-file" in step for step in settled.steps)
    assert env.tip() == before and journal.exists()
    assert (env.repo / "a.py").read_text(encoding="utf-8") == "a = 2 and more\n"
    command = next(step for step in settled.steps if "update-ref" in step)
    # The command it names does what it says (run the way a user would, through a shell).
    if os.name != "nt":
        subprocess.run(command, shell=True, check=True, cwd=env.repo)
        assert git(env.repo, "status", "--porcelain") == ""
        assert checkout_journal.settle(journal, env.repo).state == "done"


def test_an_update_that_had_completed_leaves_only_its_journal(env: Env) -> None:
    journal = interrupted_update(env, {"a.py": "a = 2\n"}, written={})
    update = checkout_journal.read(journal)
    assert update is not None
    git(env.repo, "merge", "-q", "--ff-only", update.new)
    assert checkout_journal.settle(journal, env.repo).state == "done"
    assert not journal.exists()


# ---- the sanity gate in the merge queue ---------------------------------------------------

AIDER_LEFTOVER = """def greet():
<<<<<<< SEARCH
    return "hello"
=======
    return "hi"
>>>>>>> REPLACE
"""


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("app/greet.py", AIDER_LEFTOVER, "app/greet.py line 2"),
        ("notes/plan.md", "# Plan\n\n<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> b\n", "line 3"),
        ("conf/settings.json", '{"a": 1,\n "b": }\n', "conf/settings.json line 2"),
        ("pyproject.toml", '[project]\nname = "x\n', "pyproject.toml"),
    ],
)
def test_what_would_break_the_base_is_refused_with_file_and_line(
    env: Env, name: str, text: str, where: str
) -> None:
    task = env.task()
    before = env.tip()

    outcome = env.queue.merge(task, env.branch("ld/bad", {name: text}))

    assert outcome.status == "rejected"
    assert "sanity gate" in outcome.message and where in outcome.message
    assert env.tip() == before


def test_a_file_already_broken_on_the_base_is_not_held_against_the_branch(env: Env) -> None:
    commit(env.repo, {"legacy.py": "def broken(:\n    pass\n"}, "the user's own broken file")
    branch = env.branch("ld/edit", {"legacy.py": "def broken(:\n    pass\n# touched\n"})
    assert env.queue.merge(env.task(), branch).status == "merged"


def test_the_sanity_gate_can_be_switched_off(repo: Path) -> None:
    env = make_env(repo, sanity_gate=False)
    outcome = env.queue.merge(env.task(), env.branch("ld/off", {"x.py": "not python\n"}))
    assert outcome.status == "merged"


# ---- end to end: a hostile worker under the real dispatcher -------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="the worker's hooks are shell scripts")
def test_a_hostile_worker_reaches_nothing_of_the_users_repository(
    repo: Path, tmp_path: Path
) -> None:
    from test_dispatch_e2e import add, configure, dispatch, stamps_of

    configure(repo, "hostile_worker.py", num_workers=1)
    config_before = (repo / ".git" / "config").read_text(encoding="utf-8")
    first = add(repo, "First", "--files", "one.txt")
    second = add(repo, "Second", "--files", "two.txt")

    result = dispatch(repo, tmp_path / "stamps", "--until-idle")

    assert result.returncode == 0, result.stderr
    for task_id in (first, second):
        [tried] = [s for s in stamps_of(tmp_path / "stamps", task_id) if s["event"] == "tried"]
        assert tried["results"]["move own main"] == 0  # it did move a main: its own
        assert tried["results"]["walk up to .dispatch"] != 0
        assert tried["results"]["push to origin"] != 0
    heads = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads")
    assert heads.split() == ["refs/heads/main"]  # no evil ref; merged branches deleted
    assert git(repo, "show", "main:one.txt") == f"{first} was here"
    assert git(repo, "show", "main:two.txt") == f"{second} was here"
    assert (repo / ".git" / "config").read_text(encoding="utf-8") == config_before
    assert not list((repo / ".dispatch" / "tasks").glob("*.hook-ran"))
    assert git(repo, "status", "--porcelain") == ""


def test_the_test_command_and_workers_see_the_users_tags(repo: Path) -> None:
    """Version tools (git describe, setuptools-scm) read tags: the private clones have them."""
    git(repo, "tag", "-a", "v1.2.0", "-m", "release")
    script = (
        "import subprocess, sys\n"
        "out = subprocess.run(['git', 'describe', '--tags'], capture_output=True, text=True)\n"
        "sys.exit(0 if out.stdout.startswith('v1.2.0') else 1)\n"
    )
    env = make_env(repo, test_command=[sys.executable, "-c", script])
    outcome = env.queue.merge(env.task(), env.branch("ld/tagged", {"t.txt": "x\n"}))
    assert outcome.status == "merged", outcome.message

    from localdispatch.git import branches
    from localdispatch.git.clones import clone_at

    clone = clone_at(repo, repo / ".dispatch" / "worktrees" / "w1")
    branches.prepare_task_slot(clone, "main", "ld/t-9-x")
    assert git(clone.path, "describe", "--tags").startswith("v1.2.0")
