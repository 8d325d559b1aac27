"""`recorder compare A B`: two recorded runs side by side, without running anything.

The config difference (flattened keys), the code difference (a unified diff of the two
rebuilt trees), the environment difference, and the status and metric comparison that a
replay's verdict uses (A is the reference).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import canonical_json
from ..errors import RecorderError
from ..render import flatten
from ..store import Store
from . import compare
from . import environment as env
from .tree import rebuild

ABSENT = "(absent)"
MAX_DIFF_BYTES = 2_000_000  # files larger than this are compared by content, not diffed


@dataclass
class RunComparison:
    a: int
    b: int
    config: list[tuple[str, Any, Any]]  # (key, value in A, value in B); ABSENT when missing
    code: str  # a unified diff; "" when the trees are the same
    code_unavailable: str  # why there is no code diff, or ""
    environment: list[env.Difference]
    status: compare.StatusComparison
    metrics: list[compare.MetricComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b,
                "config": [{"key": k, "a": va, "b": vb} for k, va, vb in self.config],
                "code": self.code, "code_unavailable": self.code_unavailable or None,
                "environment": [d.to_dict() for d in self.environment],
                "status": self.status.to_dict(),
                "metrics": [m.to_dict() for m in self.metrics]}


def compare_runs(store: Store, a_ref: int | str, b_ref: int | str, tolerance: float = 0.0,
                 ignore: Iterable[str] = ()) -> RunComparison:
    a, b = store.get_run(a_ref), store.get_run(b_ref)
    code, unavailable = "", ""
    with tempfile.TemporaryDirectory(prefix="recorder-compare-") as tmp:
        try:
            tree_a = rebuild(a, store, Path(tmp) / "a", search=[Path.cwd()], cwd_layout=False)
            tree_b = rebuild(b, store, Path(tmp) / "b", search=[Path.cwd()], cwd_layout=False)
            code = tree_diff(tree_a.root, tree_b.root)
        except RecorderError as exc:  # the rest of the comparison still stands
            unavailable = str(exc)
    return RunComparison(
        a["_id"], b["_id"], config_differences(a.get("config"), b.get("config")), code,
        unavailable,
        env.differences(env.facts(a), env.facts(b)) + env.determinism_differences(a, b),
        compare.compare_status(a, b),
        compare.compare_metrics(store.metrics(a["_id"]), store.metrics(b["_id"]), tolerance,
                                ignore))


def config_differences(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    flat_a, flat_b = flatten(a), flatten(b)
    keys = list(dict.fromkeys([*flat_a, *flat_b]))
    return [(k, flat_a.get(k, ABSENT), flat_b.get(k, ABSENT)) for k in keys
            if k not in flat_a or k not in flat_b
            or canonical_json(flat_a[k]) != canonical_json(flat_b[k])]


def tree_diff(a: Path, b: Path) -> str:
    """A unified diff of two directory trees (`.git` left out; links compared as links)."""
    files = sorted(set(_files(a)) | set(_files(b)))
    out: list[str] = []
    for rel in files:
        old, new = _content(a / rel), _content(b / rel)
        if old == new:
            continue
        texts = [_text(x) for x in (old, new)]
        if None in texts:
            out.append(f"Binary files a/{rel} and b/{rel} differ\n")
            continue
        out += difflib.unified_diff(
            texts[0].splitlines(keepends=True), texts[1].splitlines(keepends=True),
            fromfile=f"a/{rel}" if old is not None else "/dev/null",
            tofile=f"b/{rel}" if new is not None else "/dev/null")
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
    return "".join(out)


def _files(root: Path) -> list[str]:
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        found += [Path(directory, n).relative_to(root).as_posix() for n in names]
    return found


def _content(path: Path) -> bytes | None:
    if path.is_symlink():
        return b"symbolic link to " + os.fsencode(os.readlink(path))
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_DIFF_BYTES:
        return b"\0large file, sha256 " + hashlib.sha256(path.read_bytes()).digest()
    return path.read_bytes()


def _text(data: bytes | None) -> str | None:
    if data is None:
        return ""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
