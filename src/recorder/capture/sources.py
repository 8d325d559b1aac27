"""The project's own Python source files loaded by a run, so it can be rebuilt without git.

This runs at every run start, over every loaded module (often over a thousand with torch), so it
works on path strings: a file is stat'ed only once it looks like project code, and a directory is
resolved or checked for `pyvenv.cfg` once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

_INSTALLED_DIRS = frozenset({"site-packages", "dist-packages"})


def capture_sources(
    main_file: Path | None,
    base_dir: Path,
    modules: Iterable[ModuleType] | None = None,
    exclude: Sequence[Path] = (),
) -> tuple[list[list[str]], dict[str, bytes]]:
    """List the main file and the loaded modules that belong to the project under `base_dir`.

    Returns `(sources, files)`: sorted `[relpath, sha256]` pairs (POSIX paths relative to
    `base_dir`) and the bytes of each file by sha256. Installed packages (site-packages,
    virtualenvs, the interpreter's prefixes) and `exclude` paths are left out; a file that cannot
    be read is skipped.
    """
    if modules is None:
        modules = list(sys.modules.values())
    finder = _ProjectFiles(Path(base_dir), exclude)
    candidates: list[str] = []
    if main_file is not None:
        candidates.append(os.path.abspath(main_file))  # any suffix: `python train` is a script
    for module in modules:
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and not finder.surely_installed(file):
            path = _source_of(file)
            if path is not None:
                candidates.append(path)

    by_rel: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for path in candidates:
        rel = finder.relpath(path)
        if rel is None or rel in by_rel:
            continue
        data = _read(path)
        if data is None:
            continue
        sha = hashlib.sha256(data).hexdigest()
        files[sha] = data
        by_rel[rel] = sha
    return sorted([rel, sha] for rel, sha in by_rel.items()), files


def _read(path: str) -> bytes | None:
    """The file's bytes, or None when it vanished, is unreadable, or lies inside a zip archive."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _source_of(file: str) -> str | None:
    """The absolute `.py` path behind a module's `__file__`, or None (built-ins, extensions)."""
    if not file:
        return None
    path = os.path.abspath(file)
    if path.endswith(".py"):
        return path
    if path.endswith(".pyc"):
        try:
            return importlib.util.source_from_cache(path)  # __pycache__/x.cpython-311.pyc
        except ValueError:
            return path[:-1]  # legacy x.pyc beside x.py
    return None


class _ProjectFiles:
    """Decides which absolute paths are project files, caching per directory."""

    def __init__(self, base_dir: Path, exclude: Sequence[Path]) -> None:
        abs_base = os.path.abspath(base_dir)
        self.bases = list(dict.fromkeys([abs_base, os.path.realpath(abs_base)]))
        self.real_base = self.bases[-1]
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        # A prefix holding the project (a conda env or `python -m venv .` as the work dir) only
        # excludes its installed packages, which the site-packages rule already catches.
        self.skip_roots = self._relative_roots(prefixes, whole_tree=False)
        self.skip_roots |= self._relative_roots(exclude, whole_tree=True)
        # Most loaded modules live under an interpreter prefix: reject them by string alone.
        self.outside = tuple(p + os.sep for p in prefixes if not _contains(p, abs_base))
        self.base_starts = tuple(b + os.sep for b in self.bases)
        self.real_dirs: dict[str, str] = {}
        self.venv_dirs: dict[str, bool] = {}

    def _relative_roots(self, paths: Iterable, *, whole_tree: bool) -> set[str]:
        roots: set[str] = set()
        for path in paths:
            for form in {os.path.abspath(path), os.path.realpath(path)}:
                for base in self.bases:
                    rel = os.path.relpath(form, base)
                    if rel == os.curdir:
                        if whole_tree:
                            roots.add("")
                    elif _inside(rel):
                        roots.add(rel)
                    elif whole_tree and _inside(os.path.relpath(base, form)):
                        roots.add("")
        return roots

    def surely_installed(self, file: str) -> bool:
        """A cheap first look: under an interpreter prefix and not textually in the project."""
        return file.startswith(self.outside) and not file.startswith(self.base_starts)

    def relpath(self, path: str) -> str | None:
        """POSIX path of `path` relative to the base, or None when it is not project code."""
        rel = self._under_base(path)
        if rel is None:
            return None
        parts = rel.split(os.sep)
        if _INSTALLED_DIRS.intersection(parts[:-1]):
            return None
        for root in self.skip_roots:
            if root == "" or rel == root or rel.startswith(root + os.sep):
                return None
        if self._in_venv(parts[:-1]) or not self._really_inside(path):
            return None
        return "/".join(parts)

    def _under_base(self, path: str) -> str | None:
        for base in self.bases:
            if path.startswith(base + os.sep):
                return path[len(base) + 1:]
        if path.startswith(self.outside) or _INSTALLED_DIRS.intersection(path.split(os.sep)):
            return None
        # Reached through a symlink (say /home -> /data/home): resolve its directory, once.
        directory, name = os.path.split(path)
        real = self.real_dirs.get(directory)
        if real is None:
            real = self.real_dirs[directory] = os.path.realpath(directory)
        if real.startswith(self.real_base + os.sep):
            return os.path.join(real[len(self.real_base) + 1:], name)
        if real == self.real_base:
            return name
        return None

    def _really_inside(self, path: str) -> bool:
        """A symlink in the project pointing out of it (to a dataset folder, a home
        directory) is never followed out: what it leads to is not project code."""
        directory = os.path.dirname(path)
        real = self.real_dirs.get(directory)
        if real is None:
            real = self.real_dirs[directory] = os.path.realpath(directory)
        if real != self.real_base and not real.startswith(self.real_base + os.sep):
            return False
        if os.path.islink(path):  # a link to one file: where it leads is what counts
            return os.path.realpath(path).startswith(self.real_base + os.sep)
        return True

    def _in_venv(self, dir_parts: list[str]) -> bool:
        """Whether a directory between the base and the file holds `pyvenv.cfg`."""
        rel = ""
        for part in dir_parts:
            rel = os.path.join(rel, part) if rel else part
            known = self.venv_dirs.get(rel)
            if known is None:
                known = os.path.isfile(os.path.join(self.real_base, rel, "pyvenv.cfg"))
                self.venv_dirs[rel] = known
            if known:
                return True
        return False


def _contains(directory: str, path: str) -> bool:
    return _inside(os.path.relpath(path, directory))


def _inside(rel: str) -> bool:
    """Whether a relative path stays inside its base."""
    return rel != os.pardir and not rel.startswith(os.pardir + os.sep)
