"""A journal around the one change localdispatch makes to the user's files: fast-forwarding
their checkout to a merge.

``git merge --ff-only`` writes the files one by one, then the index, then moves the branch. A
power cut in the middle leaves some files at the new version, the branch at the old one, and
maybe git's ``index.lock``; the next merge would then see "local changes" and blame the user.
So the update is written to ``.dispatch/checkout_update.json`` before it starts and removed
after it ends. If the journal is still there, :func:`settle` looks at every file the update
touches: if each holds its old or its new version (or is absent where that version has none),
the update is finished (those files set to the new version, then the branch moved by
compare-and-swap); otherwise the files that hold neither are named with the one command that
finishes the update, and nothing is touched.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localdispatch.errors import DispatchError
from localdispatch.git.commands import run_git
from localdispatch.statefile import JsonDocument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckoutUpdate:
    checkout: str
    branch: str
    old: str
    new: str
    started: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Settled:
    """What :func:`settle` found: ``state`` is ``none`` (no journal), ``done`` (the update
    had completed), ``finished`` (completed now) or ``person`` (see ``reason``/``steps``)."""

    state: str
    reason: str = ""
    steps: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


JOURNAL_VERSION = 1


def _document(journal: Path) -> JsonDocument:
    return JsonDocument(
        journal,
        version=JOURNAL_VERSION,
        kind="the journal of an update of your checkout",
        advice="It names an update of your checkout that a crash may have cut off.",
    )


def begin(journal: Path, update: CheckoutUpdate) -> None:
    """Written before the update starts; only the merge slot's holder writes it."""
    _document(journal).write(asdict(update))


def end(journal: Path) -> None:
    journal.unlink(missing_ok=True)
    journal.with_suffix(".paths").unlink(missing_ok=True)


def read(journal: Path) -> CheckoutUpdate | None:
    """The update the journal names; None when there is none, or when the journal cannot be
    read (a crash before its atomic write leaves no file, so that is someone else's file:
    it is reported and the merge goes on as if there were none)."""
    try:
        data = _document(journal).read()
        if not data:
            return None
        fields = {k: v for k, v in data.items() if k != "version"}
        return CheckoutUpdate(**fields)
    except (DispatchError, TypeError) as exc:
        log.warning("unreadable checkout journal %s (%s); ignoring it", journal, exc)
        return None


def settle(journal: Path, repo: Path) -> Settled:
    """Finish or explain an update of the user's checkout that a crash interrupted."""
    update = read(journal)
    if update is None:
        return Settled("none")
    checkout = Path(update.checkout)
    ref = f"refs/heads/{update.branch}"
    tip = run_git(["rev-parse", "--verify", "-q", ref], repo, check=False).stdout.strip()
    if tip != update.old or not checkout.is_dir():
        end(journal)  # it completed (git moves the branch last), or someone moved on since
        return Settled("done")
    removed = _remove_our_index_lock(checkout, update)
    paths = _changed(repo, update.old, update.new)
    odd = [path for path in paths if _version(checkout, path, update) is None]
    if odd:
        listing = journal.with_suffix(".paths")
        listing.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
        return _explain(update, odd, removed, listing)
    if paths:
        run_git(["checkout", "--no-overlay", update.new, "--", *paths], checkout)
    moved = run_git(["update-ref", ref, update.new, update.old], repo, check=False)
    if moved.returncode != 0:
        return _explain(update, [], removed, None, detail=moved.stderr.strip())
    end(journal)
    log.info("finished the interrupted update of %s to %s", checkout, update.new[:12])
    return Settled("finished", removed=removed)


def _changed(repo: Path, old: str, new: str) -> list[str]:
    out = run_git(["diff", "--name-only", "--no-renames", "-z", old, new, "--"], repo).stdout
    return [path for path in out.split("\0") if path]


def _version(checkout: Path, path: str, update: CheckoutUpdate) -> str | None:
    """``old`` or ``new`` if the file holds that version (absent counts where the version
    has no such file), None if it holds neither."""
    target = checkout / path
    present = target.is_file() or target.is_symlink()
    have = (
        run_git(["hash-object", "--no-filters", "--", path], checkout).stdout.strip()
        if present and not target.is_symlink()
        else None
    )
    for name, commit in (("new", update.new), ("old", update.old)):
        blob = run_git(["rev-parse", "-q", "--verify", f"{commit}:{path}"], checkout, check=False)
        expected = blob.stdout.strip() if blob.returncode == 0 else None
        if (expected is None and not present) or (expected is not None and expected == have):
            return name
    return None


def _remove_our_index_lock(checkout: Path, update: CheckoutUpdate) -> tuple[str, ...]:
    """git's index.lock in the checkout, if our interrupted update made it: it appeared after
    the journal was written. One older than that is not ours and stays."""
    git_dir = run_git(["rev-parse", "--absolute-git-dir"], checkout, check=False).stdout.strip()
    if not git_dir:
        return ()
    lock = Path(git_dir) / "index.lock"
    try:
        if lock.stat().st_mtime + 2 < update.started:
            return ()
        lock.unlink()
    except FileNotFoundError:
        return ()
    log.info("removed %s, left by the interrupted update of %s", lock, checkout)
    return (str(lock),)


def _explain(
    update: CheckoutUpdate,
    odd: list[str],
    removed: tuple[str, ...],
    listing: Path | None,
    detail: str = "",
) -> Settled:
    checkout = update.checkout
    shown = ", ".join(odd[:8]) + (f" and {len(odd) - 8} more" if len(odd) > 8 else "")
    what = f"{len(odd)} file(s) hold neither version ({shown})" if odd else detail
    reason = (
        f"an update of your checkout {checkout} from {update.old[:12]} to {update.new[:12]} "
        f"was cut off (a crash or power cut): {what}"
    )
    move = f'git -C "{checkout}" update-ref refs/heads/{update.branch} {update.new} {update.old}'
    command = move
    if listing is not None:  # only the files the update touches, never the user's others
        command = (
            f'git -C "{checkout}" checkout --no-overlay --pathspec-from-file="{listing}" '
            f"{update.new} && {move}"
        )
    steps = (
        "if you did not edit those files since, finish the update with:",
        command,
        "the merge is then recorded by the next dispatcher run",
    )
    return Settled("person", reason, steps, removed)


def same_checkout(update: CheckoutUpdate, checkout: Path) -> bool:
    return os.path.normcase(str(Path(update.checkout).resolve())) == os.path.normcase(
        str(checkout.resolve())
    )
