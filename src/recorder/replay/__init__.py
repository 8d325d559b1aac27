"""Replay a recorded run: rebuild its tree, check the environment, re-run it with its exact
settings, and say whether it came out the same (DESIGN.md 4).

Modules: tree.py (rebuild), paths.py (stored paths, writes that stay in the tree),
environment.py (differences, requirements), settings.py (what the subprocess gets),
compare.py (the verdict), runner.py (all of it, in order), runs.py (`recorder compare A B`),
report.py (what the CLI prints). Nothing is imported until `replay` is called:
`import recorder` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .result import Plan, ReplayResult


def replay(run: int | str, *, store: str | os.PathLike | None = None, strict: bool = False,
           dry_run: bool = False, workdir: str | os.PathLike | None = None, keep: bool = False,
           tolerance: float = 0.0, secrets: Mapping[str, str] | None = None,
           ignore: Iterable[str] = (), compare_all: bool = False,
           output: TextIO | None = None, on_ready: Callable[[Plan], None] | None = None,
           timeout: float | None = None) -> ReplayResult:
    """Re-run a recorded run with its exact settings; say whether it came out the same.

        result = recorder.replay(12)
        result.verdict    # "reproduced" | "diverged" | "could not replay" | "dry run"
        result.exit_code  # 0 | 1 | 2 | 0, as `recorder replay` exits

    run: an id or "last", in `store` (default: $RECORDER_STORE, else ./.recorder); the
    replay's run goes to that same store, with `replay_of` and the verdict (`replay`).
    strict: refuse to run when the environment or declared data differ from the recording.
    dry_run: rebuild and check, run nothing. workdir: rebuild the tree there (an empty or new
    directory; kept), else in a temporary directory removed afterwards unless `keep`.
    tolerance: accept |a - b| <= tolerance * max(|a|, |b|) (default: exact).
    secrets: {name: value} for values redacted at record time (or RECORDER_SET_<NAME>).
    ignore: shell patterns of metrics shown but not judged. Timing metrics (`time`,
    `ms/batch`, `*_sec`, `it/s`...: replay.compare.is_timing) are shown but not judged
    either, unless `compare_all`.
    output: where the script's output goes (default sys.stdout). on_ready: called with the
    plan before anything runs. timeout: seconds before the script is killed.

    Raises ReplayError (a RecorderError) when there is nothing to compare: an unknown run,
    a tree that cannot be rebuilt, a refused path, a missing secret, a strict difference,
    or a script that never started its run.
    """
    from .runner import run_replay

    return run_replay(run, store=store, strict=strict, dry_run=dry_run, workdir=workdir,
                      keep=keep, tolerance=tolerance, secrets=secrets, ignore=ignore,
                      compare_all=compare_all, output=output, on_ready=on_ready,
                      timeout=timeout)


def __getattr__(name: str):
    if name in ("Plan", "ReplayResult"):
        from . import result

        return getattr(result, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Plan", "ReplayResult", "replay"]
