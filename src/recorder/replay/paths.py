"""Paths read from a run document, and writing below a directory without leaving it.

A stored path must be relative, stay below the tree (no `..`), not write into `.git`, and
not pass through a symbolic link that exists in the tree (a committed link to `/etc`, say);
files are opened with O_NOFOLLOW. Anything else is refused with a ReplayError naming it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import ReplayError

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_relpath(rel: Any, what: str = "path") -> PurePosixPath:
    """A stored path as a clean relative path, or a ReplayError naming it."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ReplayError(f"refused the stored {what} {rel!r}: not a file name")
    path = PurePosixPath(rel)
    if path.is_absolute() or PureWindowsPath(rel).drive or rel.startswith("\\"):
        raise ReplayError(f"refused the stored {what} {rel!r}: it is absolute")
    if ".." in path.parts or ".." in PureWindowsPath(rel).parts:
        raise ReplayError(f"refused the stored {what} {rel!r}: it leaves the tree ('..')")
    if any(part.casefold() == ".git" for part in path.parts):
        raise ReplayError(f"refused the stored {what} {rel!r}: it writes into .git")
    if not path.parts or path.parts == (".",):
        raise ReplayError(f"refused the stored {what} {rel!r}: not a file name")
    return path


def safe_path(root: Path, rel: str, *, link_ok: bool = False) -> Path:
    """`root/rel` when no existing part of it below `root` is a symbolic link (but the last
    part itself, with `link_ok`)."""
    path = root
    parts = check_relpath(rel).parts
    for i, part in enumerate(parts):
        path = path / part
        if path.is_symlink() and not (link_ok and i == len(parts) - 1):
            raise ReplayError(f"refused the stored path {rel!r}: it passes through the "
                              f"symbolic link {path.relative_to(root).as_posix()!r}")
    return path


def write_file(root: Path, rel: str, data: bytes) -> Path:
    """Write below `root` without following a link anywhere on the way."""
    path = safe_path(root, rel)
    try:
        for parent in reversed(path.relative_to(root).parents[:-1]):
            (root / parent).mkdir(exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        with open(os.open(path, flags, 0o644), "wb") as f:
            f.write(data)
    except OSError as exc:
        raise ReplayError(f"cannot write the stored file {rel!r}: {exc.strerror}") from None
    return path


def check_module(name: Any) -> str:
    if not isinstance(name, str) or not _MODULE.match(name):
        raise ReplayError(f"refused the recorded module {name!r}: not a dotted module name")
    return name


def link(root: Path, rel: str, target: str) -> bool:
    """A symbolic link `root/rel` -> `target` (declared data the tree lacks: ignored by git,
    or too large to store); False when the tree has something there, or a link on the way."""
    try:
        path = safe_path(root, rel)
    except ReplayError:
        return False
    if os.path.lexists(path) or not os.path.exists(target):
        return False
    for parent in reversed(path.relative_to(root).parents[:-1]):
        (root / parent).mkdir(exist_ok=True)
    os.symlink(target, path)
    return True
