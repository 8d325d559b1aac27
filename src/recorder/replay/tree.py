"""Rebuild a run's source tree in a fresh directory, and nothing outside it.

From git when the recorded commit is in a repository on this machine (the recorded
`git.root`, or the one holding the current directory; never fetched over the network):
a local `git clone --shared` checked out at the commit, then the stored diff applied with
`git apply --binary`, then the untracked files written. Otherwise from the source files
stored with the run (`experiment.sources`: the main file and the project modules it
imported) plus its stored untracked files.

Every stored file is checked against its sha256 (`Store.get_file` gives None on a mismatch).
A stored path that is absolute, climbs out with `..`, passes through a symbolic link or
writes into `.git` is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ReplayError
from ..store import Store
from .paths import check_relpath, safe_path, write_file

GIT_TIMEOUT = 120.0
_PROBE_TIMEOUT = 10.0


@dataclass
class Tree:
    """A rebuilt tree: `root` is the run's `experiment.base_dir`, `cwd` where it started."""

    root: Path
    cwd: Path
    origin: str  # "git" or "sources"
    commit: str | None = None
    repository: str | None = None
    diff: bool = False
    files: list[str] = field(default_factory=list)  # written from the store (untracked/sources)
    mismatches: list[str] = field(default_factory=list)  # recorded sources unlike the tree

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.root), "cwd": str(self.cwd), "origin": self.origin,
                "commit": self.commit, "repository": self.repository, "diff": self.diff,
                "files": self.files, "mismatches": self.mismatches}

    def describe(self) -> str:
        if self.origin == "git":
            extra = (" + the stored diff" if self.diff else "") + (
                f" + {_count(self.files, 'untracked file')}" if self.files else "")
            return f"git commit {self.commit[:12]} from {self.repository}{extra}"
        return f"{_count(self.files, 'stored file')} (no git commit reachable here)"


def rebuild(run: dict, store: Store, dest: Path, *, search: Sequence[Path] = (),
            cwd_layout: bool = True) -> Tree:
    """Write `run`'s tree under `dest` (which must be empty or absent). With `cwd_layout`,
    a run started above its tree (`cwd_relative` '..') gets the tree one level down, so the
    working directory exists inside `dest` too."""
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ReplayError(f"{dest} is not an empty directory: give a new or empty one")
    root, cwd = layout(run, dest) if cwd_layout else (dest, dest)
    git = run.get("git") if isinstance(run.get("git"), dict) else None
    repository = find_commit(git, search) if git else None
    if repository is not None:
        tree = _from_git(run, git, repository, store, root, cwd)
    else:
        tree = _from_sources(run, store, root, cwd)
    tree.cwd.mkdir(parents=True, exist_ok=True)
    return tree


def layout(run: dict, dest: Path) -> tuple[Path, Path]:
    """(tree root, working directory) under `dest` for the run's `entrypoint.cwd_relative`."""
    entry = run.get("entrypoint") if isinstance(run.get("entrypoint"), dict) else {}
    rel = entry.get("cwd_relative")
    if not isinstance(rel, str) or rel in ("", "."):
        return dest, dest
    parts = PurePosixPath(rel).parts
    ups = next((i for i, p in enumerate(parts) if p != ".."), len(parts))
    below = parts[ups:]
    base = PurePosixPath(str(run.get("experiment", {}).get("base_dir") or "")).parts
    if PurePosixPath(rel).is_absolute() or ".." in below or ups >= len(base) \
            or any(p in ("..", ".") for p in base[len(base) - ups:]):
        raise ReplayError(f"refused the recorded working directory {rel!r}: it leaves the "
                          "rebuilt tree")
    root = dest.joinpath(*base[len(base) - ups:]) if ups else dest
    return root, safe_path(dest, "/".join(below)) if below else dest


def find_commit(git: dict, search: Sequence[Path]) -> Path | None:
    """The top of a local repository holding the recorded commit, or None."""
    commit = git.get("commit")
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    candidates = [Path(git["root"])] if isinstance(git.get("root"), str) else []
    for directory in [*candidates, *search]:
        if not directory.is_dir():
            continue
        top = _git(directory, "rev-parse", "--show-toplevel", timeout=_PROBE_TIMEOUT, check=False)
        if top.returncode != 0:
            continue
        top_dir = Path(os.fsdecode(top.stdout.rstrip(b"\n")))
        found = _git(top_dir, "cat-file", "-e", f"{commit}^{{commit}}",
                     timeout=_PROBE_TIMEOUT, check=False)
        if found.returncode == 0:
            return top_dir
    return None


def _from_git(run: dict, git: dict, repository: Path, store: Store, root: Path,
              cwd: Path) -> Tree:
    commit = git["commit"]
    diff = _stored_diff(git, store)
    untracked = _stored_files(git.get("untracked"), "untracked file", store)
    root.parent.mkdir(parents=True, exist_ok=True)
    _git(root.parent, "clone", "-q", "--shared", "--no-checkout", "--template=",
         str(repository), str(root))
    branch = git.get("branch")
    if isinstance(branch, str) and _git(root, "check-ref-format", "--branch", branch,
                                        check=False).returncode == 0:
        _git(root, "checkout", "-q", "-B", branch, commit)
    else:
        _git(root, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit)
    remote = git.get("remote")
    if isinstance(remote, str) and remote:
        _git(root, "remote", "set-url", "origin", remote)  # as recorded, not our clone's source
    else:
        _git(root, "remote", "remove", "origin")
    if diff:
        _apply(root, diff)
    written = _write_all(root, untracked)
    tree = Tree(root, cwd, "git", commit=commit, repository=str(repository), diff=bool(diff),
                files=written)
    tree.mismatches = _mismatches(root, run)
    return tree


def _from_sources(run: dict, store: Store, root: Path, cwd: Path) -> Tree:
    experiment = run.get("experiment") if isinstance(run.get("experiment"), dict) else {}
    git = run.get("git") if isinstance(run.get("git"), dict) else {}
    sources = _stored_files(experiment.get("sources"), "source file", store)
    if not sources:
        why = "its commit is in no repository here" if git else "it was not in a git repository"
        raise ReplayError(f"run {run.get('_id')} cannot be rebuilt: {why} and it has no "
                          "stored source files")
    untracked = _stored_files(git.get("untracked"), "untracked file", store)
    root.mkdir(parents=True, exist_ok=True)
    written = _write_all(root, untracked + sources)
    return Tree(root, cwd, "sources", files=sorted(set(written)))


def _stored_diff(git: dict, store: Store) -> bytes:
    if isinstance(git.get("diff"), str):
        return git["diff"].encode("utf-8")
    file_id = git.get("diff_file_id")
    if not file_id:
        return b""
    data = store.get_file(str(file_id))
    if data is None:
        raise ReplayError(f"the stored git diff (sha256 {str(file_id)[:12]}) is missing from the "
                          "store or does not match its sha256")
    return data


def _stored_files(entries: Any, what: str, store: Store) -> list[tuple[str, bytes]]:
    """Every `[relpath, sha256]` entry, read and checked, before anything is written."""
    files = []
    for entry in entries if isinstance(entries, list) else []:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2
                and isinstance(entry[0], str) and isinstance(entry[1], str)):
            raise ReplayError(f"a stored {what} entry is malformed: {entry!r}")
        rel, sha = entry
        check_relpath(rel, what)
        data = store.get_file(sha)
        if data is None:
            raise ReplayError(f"the stored {what} {rel!r} (sha256 {sha[:12]}) is missing from "
                              "the store or does not match its sha256")
        files.append((rel, data))
    return files


def _write_all(root: Path, files: list[tuple[str, bytes]]) -> list[str]:
    for rel, _ in files:  # refuse before writing anything
        safe_path(root, rel)
    for rel, data in files:
        write_file(root, rel, data)
    return [rel for rel, _ in files]


def _apply(root: Path, diff: bytes) -> None:
    """`git apply --binary`, after checking every path it names; git refuses a patch that
    reaches outside or through a symbolic link, and so do we, first, with a clearer message."""
    listing = _git(root, "apply", "--numstat", "-z", "-", input=diff, check=False)
    if listing.returncode != 0:
        raise ReplayError(f"the stored git diff does not apply to commit: "
                          f"{_last_line(listing.stderr)}")
    for rel in _numstat_paths(listing.stdout):
        check_relpath(rel, "path in the stored git diff")
        safe_path(root, rel, link_ok=True)  # a tracked link itself may change, not what's below
    applied = _git(root, "apply", "--index", "--binary", "--whitespace=nowarn", "-", input=diff,
                   check=False)  # --index: new files are added, as they were at record time
    if applied.returncode != 0:
        raise ReplayError(f"the stored git diff does not apply to its commit: "
                          f"{_last_line(applied.stderr)}")


def _numstat_paths(out: bytes) -> list[str]:
    """Paths of `git apply --numstat -z` (a rename is `added TAB deleted TAB NUL old NUL new`)."""
    paths, fields = [], out.split(b"\0")
    i = 0
    while i < len(fields):
        record = fields[i]
        if not record:
            i += 1
            continue
        name = record.split(b"\t", 2)[2] if record.count(b"\t") >= 2 else b""
        if name:
            paths.append(os.fsdecode(name))
            i += 1
        else:
            paths += [os.fsdecode(fields[i + 1]), os.fsdecode(fields[i + 2])]
            i += 3
    return paths


def _mismatches(root: Path, run: dict) -> list[str]:
    """Recorded source files whose bytes differ in the rebuilt tree (an edit made after the
    git state was read, say): shown as a warning."""
    experiment = run.get("experiment") if isinstance(run.get("experiment"), dict) else {}
    found = []
    for entry in experiment.get("sources") or []:
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
            try:
                path = safe_path(root, entry[0])
                if hashlib.sha256(path.read_bytes()).hexdigest() != entry[1]:
                    found.append(entry[0])
            except (OSError, ReplayError):
                found.append(entry[0])
    return found


def _git(cwd: Path, *args: str, input: bytes | None = None, check: bool = True,
         timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """git with no network, no prompts, no hooks or LFS downloads, under a timeout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_LFS_SKIP_SMUDGE="1", GIT_OPTIONAL_LOCKS="0",
               GIT_PROTOCOL_FROM_USER="0", GIT_ALLOW_PROTOCOL="file")
    try:
        result = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd,
                                env=env, input=input, capture_output=True, timeout=timeout,
                                stdin=None if input is not None else subprocess.DEVNULL,
                                check=False)
    except subprocess.TimeoutExpired:
        raise ReplayError(f"git {args[0]} took longer than {timeout:.0f} s in {cwd}") from None
    except OSError as exc:
        raise ReplayError(f"cannot run git: {exc}") from None
    if check and result.returncode != 0:
        raise ReplayError(f"git {args[0]} failed in {cwd}: {_last_line(result.stderr)}")
    return result


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
