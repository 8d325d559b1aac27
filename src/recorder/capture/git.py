"""Snapshot of a directory's git state at run start: commit, branch, remote, diff, untracked files.

It calls the `git` executable with `subprocess.run` rather than GitPython, whose import alone
costs about 180 ms of the start-up budget. Every call shares one deadline (`timeout`), so a huge
repository or a hung filesystem cannot stall a run: a timeout, a missing `git` or a failing git
command means "not available" and gives `(None, {})`, never an exception.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# Base names (matched case-insensitively) of files that usually hold secrets: never snapshotted.
SECRET_FILE_PATTERNS = (".env*", "*.pem", "*.key", "id_rsa*", ".netrc", "credentials*")

# `-c` settings that keep user config (prefixes, colours, quoting, renames) out of the diff bytes,
# so the diff always applies with `git apply --binary` and equal trees give equal diffs.
_DIFF_CONFIG = (
    "-c", "core.quotepath=off",
    "-c", "diff.noprefix=false",
    "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.relative=false",
    "-c", "diff.suppressBlankEmpty=false",
    "-c", "color.ui=false",
)
_DIFF_ARGS = (
    "diff", "HEAD", "--binary", "--full-index", "--no-color", "--no-ext-diff", "--no-textconv",
    "--no-renames", "--no-relative", "--submodule=short", "--src-prefix=a/", "--dst-prefix=b/",
)


class _Unavailable(Exception):
    """git cannot answer in time (or at all): the capture gives up as a whole."""

    def __init__(self, message: str, *, expected: bool = False) -> None:
        super().__init__(message)
        self.expected = expected  # no git installed: normal, not worth a warning


class _Git:
    """Runs git commands in one directory under one shared deadline."""

    def __init__(self, cwd: Path, timeout: float) -> None:
        self.cwd = cwd
        self.deadline = time.monotonic() + timeout
        # Status must not take index.lock: other git commands (or runs) may be working here.
        self.env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def __call__(self, *args: str, ok: tuple[int, ...] = (0,)
                 ) -> subprocess.CompletedProcess[bytes]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Unavailable(f"no time left for git {args[0]}")
        try:
            proc = subprocess.run(
                ["git", *args], cwd=self.cwd, env=self.env, capture_output=True,
                stdin=subprocess.DEVNULL, timeout=left, check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise _Unavailable(f"git {args[0]} timed out") from e
        except OSError as e:  # git not installed, or cwd gone
            raise _Unavailable(f"cannot run git: {e}", expected=True) from e
        if proc.returncode not in ok:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise _Unavailable(f"git {args[0]} failed ({proc.returncode}): {err}")
        return proc


def capture_git(
    directory: Path,
    *,
    exclude: Sequence[Path] = (),
    max_file_bytes: int = 1_000_000,
    max_total_bytes: int = 20_000_000,
    max_inline_diff: int = 256_000,
    timeout: float = 5.0,
) -> tuple[dict | None, dict[str, bytes]]:
    """Describe the git work tree holding `directory` well enough to rebuild it exactly.

    Returns `(doc, files)`; `files` maps sha256 hex to the bytes of untracked files (and of a
    diff too large or not UTF-8 to keep inline). `doc` is None outside a work tree, or when git
    is missing or does not answer within `timeout` seconds (all calls together).
    """
    try:
        return _capture(Path(directory), exclude, max_file_bytes, max_total_bytes,
                        max_inline_diff, timeout)
    except _Unavailable as e:
        log.log(logging.DEBUG if e.expected else logging.WARNING, "git state not recorded: %s", e)
        return None, {}


def _capture(directory: Path, exclude: Sequence[Path], max_file_bytes: int,
             max_total_bytes: int, max_inline_diff: int, timeout: float
             ) -> tuple[dict | None, dict[str, bytes]]:
    git = _Git(directory, timeout)
    top = git("rev-parse", "--show-toplevel", ok=(0, 128))
    if top.returncode != 0:  # not a work tree (or inside .git, or a bare repository)
        return None, {}
    root = Path(os.fsdecode(top.stdout.rstrip(b"\n")))
    git.cwd = root

    status = git("status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all",
                 "--no-renames", "--ignore-submodules=none")
    commit, branch, changed, untracked = _parse_status(status.stdout)
    remote = _remote_url(git)

    excluded = _relative_prefixes(root, exclude)
    files: dict[str, bytes] = {}
    skipped: list[dict] = []
    if commit is None:  # no commits yet: everything not ignored counts as untracked
        untracked = sorted(set(untracked) | set(changed))
        changed = []
    secret_changes = [p for p in changed if _is_secret(p)]
    skipped += [{"path": p, "reason": "secret"} for p in secret_changes]

    diff: str | None = None
    diff_file_id: str | None = None
    if commit is not None:
        raw = b""
        if changed:
            pathspec = ["--", ".", *(f":(exclude,literal){p}" for p in secret_changes)]
            raw = git(*_DIFF_CONFIG, *_DIFF_ARGS, *pathspec).stdout
        diff, diff_file_id = _inline_or_file(raw, max_inline_diff, files)

    stored, store_skipped = _snapshot_untracked(root, untracked, excluded, max_file_bytes,
                                                max_total_bytes, files)
    skipped += store_skipped
    outside_store = [p for p in untracked if _excluded_by(p, excluded) is None]

    doc = {
        "root": str(root),
        "commit": commit,
        "branch": branch,
        "detached": branch is None,
        "remote": remote,
        "dirty": bool(changed) or bool(outside_store),
        "diff": diff,
        "diff_file_id": diff_file_id,
        "untracked": stored,
        "skipped": skipped,
    }
    return doc, files


def _parse_status(out: bytes) -> tuple[str | None, str | None, list[str], list[str]]:
    """Read `git status --porcelain=v2 --branch -z`: commit, branch, changed and untracked paths."""
    commit = branch = None
    changed: list[str] = []
    untracked: list[str] = []
    for entry in out.split(b"\0"):
        if not entry:
            continue
        kind = entry[:1]
        if entry.startswith(b"# branch.oid "):
            oid = entry[13:].decode()
            commit = None if oid == "(initial)" else oid
        elif entry.startswith(b"# branch.head "):
            head = entry[14:].decode("utf-8", "replace")
            branch = None if head == "(detached)" else head
        elif kind == b"1":
            changed.append(os.fsdecode(entry.split(b" ", 8)[8]))
        elif kind == b"u":
            changed.append(os.fsdecode(entry.split(b" ", 10)[10]))
        elif kind == b"?":
            untracked.append(os.fsdecode(entry[2:]))
    return commit, branch, changed, untracked


def _inline_or_file(raw: bytes, max_inline: int, files: dict[str, bytes]
                    ) -> tuple[str | None, str | None]:
    """Keep a small UTF-8 diff inline; put any other in `files` (it must never be dropped)."""
    if len(raw) <= max_inline:
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    sha = hashlib.sha256(raw).hexdigest()
    files[sha] = raw
    return None, sha


def _snapshot_untracked(root: Path, paths: list[str], excluded: list[str], max_file_bytes: int,
                        max_total_bytes: int, files: dict[str, bytes]
                        ) -> tuple[list[list[str]], list[dict]]:
    """Read the untracked files worth keeping; say why each other one was left out."""
    stored: list[list[str]] = []
    skipped: list[dict] = []
    store_dirs: set[str] = set()
    total = 0
    for rel in sorted(paths):
        store_dir = _excluded_by(rel, excluded)
        if store_dir is not None:
            store_dirs.add(store_dir)  # one entry per store, not one per file in it
            continue
        name = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if name != rel:  # not UTF-8: cannot be named in the run document
            skipped.append({"path": name, "reason": "unreadable"})
            continue
        if rel.endswith("/"):  # git lists an untracked nested repository as one directory
            skipped.append({"path": rel.rstrip("/"), "reason": "nested repository"})
            continue
        if _is_secret(rel):
            skipped.append({"path": rel, "reason": "secret"})
            continue
        data, reason = _read_regular(root / rel, max_file_bytes)
        if data is None:
            skipped.append({"path": rel, "reason": reason})
            continue
        if total + len(data) > max_total_bytes:
            skipped.append({"path": rel, "reason": "total cap"})
            continue
        total += len(data)
        sha = hashlib.sha256(data).hexdigest()
        files[sha] = data
        stored.append([rel, sha])
    skipped += [{"path": d, "reason": "store"} for d in sorted(store_dirs)]
    return stored, skipped


def _read_regular(path: Path, max_bytes: int) -> tuple[bytes | None, str]:
    """Read a regular file without following symlinks; (None, reason) when it is not stored."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return None, "symlink"
        if not stat.S_ISREG(st.st_mode):
            return None, "unreadable"
        if st.st_size > max_bytes:
            return None, "too large"
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError as e:  # deleted since `git status` listed it: said so, not a crash
        return None, {errno.ELOOP: "symlink", errno.ENOENT: "deleted"}.get(e.errno, "unreadable")
    with open(fd, "rb") as f:  # the file may have changed since lstat: check again
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None, "unreadable"
            data = f.read(max_bytes + 1)
        except OSError:
            return None, "unreadable"
    if len(data) > max_bytes:
        return None, "too large"
    return data, ""


def _relative_prefixes(root: Path, exclude: Sequence[Path]) -> list[str]:
    """The excluded directories as POSIX paths relative to `root` ("" excludes everything)."""
    prefixes: set[str] = set()
    real_root = os.path.realpath(root)
    for path in exclude:
        for form in {os.path.abspath(path), os.path.realpath(path)}:
            for base in {str(root), real_root}:
                rel = os.path.relpath(form, base)
                if _inside(rel):
                    prefixes.add("" if rel == os.curdir else Path(rel).as_posix())
                elif _inside(os.path.relpath(base, form)):
                    prefixes.add("")  # the excluded directory holds the whole work tree
    return sorted(prefixes)


def _inside(rel: str) -> bool:
    """Whether a relative path stays inside its base."""
    return rel != os.pardir and not rel.startswith(os.pardir + os.sep)


def _excluded_by(rel: str, prefixes: list[str]) -> str | None:
    """The excluded directory that holds `rel`, or None."""
    for p in prefixes:
        if p == "" or rel == p or rel.startswith(p + "/"):
            return p or "."
    return None


def _is_secret(rel: str) -> bool:
    name = rel.rstrip("/").rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_FILE_PATTERNS)


def _remote_url(git: _Git) -> str | None:
    """URL of `origin`, else of the first remote, without credentials."""
    out = git("config", "-z", "--get-regexp", r"^remote\..*\.url$", ok=(0, 1)).stdout
    urls: dict[str, str] = {}
    for entry in out.split(b"\0"):
        key, _, value = entry.decode("utf-8", "replace").partition("\n")
        if key:
            urls.setdefault(key[len("remote."):-len(".url")], value)
    url = urls.get("origin") or next(iter(urls.values()), None)
    return strip_credentials(url) if url else None


def strip_credentials(url: str) -> str:
    """Drop `user:password@` from a URL; for http(s) drop a bare user too (often a token).

    `ssh://git@host/x` and scp-like `git@host:x` keep their user name: it is not a secret.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # scp-like or a local path
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at:
        return url
    if ":" in userinfo or scheme.lower() in ("http", "https", "ftp", "ftps"):
        return f"{scheme}://{host}{rest[end:]}"
    return url
