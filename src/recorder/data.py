"""`recorder.data(path)`: record what a data file or directory held, so a replay can tell.

The run document's `data` field lists one entry per declared path:
`{path (as given), abspath, kind ("file" | "directory"), sha256, size (bytes), files, sampled}`.

Hashing is capped so that declaring a large dataset stays cheap:
- a file up to `FULL_HASH_BYTES` (64 MiB) is hashed whole (sha256 of its bytes);
- a larger file is *sampled*: sha256 of its size (8 bytes, big-endian) then its first and
  last `SAMPLE_BYTES` (4 MiB each). A change in the middle of such a file, its size kept,
  goes unnoticed; `sampled` says so in the entry;
- a directory is hashed as the sha256 of one line `relpath NUL size NUL sha256 LF` per file,
  in sorted order, each file hashed as above. Symbolic links to files are followed; links to
  directories are not descended into.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import Any

from .run import Run, active_run

FULL_HASH_BYTES = 64 * 2**20
SAMPLE_BYTES = 4 * 2**20
_BLOCK = 2**20
_declared: weakref.WeakKeyDictionary[Run, dict[str, dict]] = weakref.WeakKeyDictionary()


def data(path: str | os.PathLike) -> str:
    """Record the sha256 of a data file or directory with the current run; returns it."""
    run = active_run("data")
    entry = describe(path)
    entries = _declared.setdefault(run, {})
    entries[entry["path"]] = entry
    run.update(data=list(entries.values()))
    return entry["sha256"]


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """The `data` entry of a path; a missing path is a FileNotFoundError naming it."""
    given = Path(path)
    absolute = given.absolute()
    if absolute.is_dir():
        sha, size, count, sampled = hash_directory(absolute)
        kind = "directory"
    elif absolute.exists():
        sha, size, sampled = hash_file(absolute)
        kind, count = "file", 1
    else:
        raise FileNotFoundError(f"recorder.data: no file or directory at {str(given)!r}")
    return {"path": os.fspath(path), "abspath": str(absolute), "kind": kind, "sha256": sha,
            "size": size, "files": count, "sampled": sampled}


def hash_file(path: Path) -> tuple[str, int, bool]:
    """(sha256, size, sampled) of one file, under the cap of the module docstring."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            while block := f.read(_BLOCK):
                digest.update(block)
            return digest.hexdigest(), size, False
        digest.update(size.to_bytes(8, "big"))
        digest.update(f.read(SAMPLE_BYTES))
        f.seek(size - SAMPLE_BYTES)
        digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest(), size, True


def hash_directory(path: Path) -> tuple[str, int, int, bool]:
    """(sha256, total size, number of files, any file sampled) of a directory tree."""
    digest = hashlib.sha256()
    total = count = 0
    sampled = False
    for directory, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(directory) / name
            if not file.is_file():  # a broken link, a socket: not data
                continue
            sha, size, cut = hash_file(file)
            rel = file.relative_to(path).as_posix()
            digest.update(f"{rel}\0{size}\0{sha}\n".encode("utf-8", "surrogateescape"))
            total, count, sampled = total + size, count + 1, sampled or cut
    return digest.hexdigest(), total, count, sampled


def differences(recorded: Any) -> list[dict[str, Any]]:
    """Each recorded entry whose absolute path now holds something else (or nothing):
    `{path, recorded, now}` with the sha256s, `now` None when the path is gone."""
    found = []
    for entry in recorded if isinstance(recorded, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("abspath"), str):
            continue
        try:
            now = describe(entry["abspath"])["sha256"]
        except OSError:
            now = None
        if now != entry.get("sha256"):
            found.append({"path": entry.get("path", entry["abspath"]),
                          "recorded": entry.get("sha256"), "now": now})
    return found
