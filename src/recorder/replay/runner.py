"""`recorder replay`: rebuild a run's tree, check the environment, re-run it, judge it.

1. Load the run; rebuild its tree in a fresh directory (tree.py).
2. Compare this machine's environment and the declared data with the recording; with
   `strict`, any difference refuses the replay.
3. Run the entry point in a subprocess in the rebuilt tree, with the hand-over of
   handover.py (exact config, seed, torch settings, store, `replay_of`) and the recorded
   environment variables (settings.py). Its output is relayed as it comes.
4. Compare the new run with the original (compare.py) and store the verdict on the new run
   as its `replay` field.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TextIO

from ..config import canonical_json
from ..data import differences as data_differences
from ..errors import ReplayError, StoreError
from ..handover import REDACTED, Handover
from ..store import Store, backend_for, resolve_url
from ..store.backends import Backend
from . import compare, settings
from . import environment as env
from .paths import check_relpath, link
from .result import DRY_RUN, Plan, ReplayResult
from .tree import rebuild

OUTPUT_TAIL = 4000


def run_replay(run: int | str, *, store: str | os.PathLike | None = None, strict: bool = False,
               dry_run: bool = False, workdir: str | os.PathLike | None = None,
               keep: bool = False, tolerance: float = 0.0,
               secrets: Mapping[str, str] | None = None, ignore: Iterable[str] = (),
               compare_all: bool = False, output: TextIO | None = None,
               on_ready: Callable[[Plan], None] | None = None,
               timeout: float | None = None) -> ReplayResult:
    """`recorder.replay` (its docstring says what each option does)."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ReplayError(f"--tolerance must be a number >= 0, got {tolerance!r}")
    backend = backend_for(store)
    if backend.kind == "mongomock" and not dry_run:
        raise ReplayError(f"{backend.url} lives in one process's memory: the replay's "
                          "subprocess cannot write to it; use a directory or mongodb:// store")
    db = open_existing(backend, store)
    original = db.get_run(run)
    run_id = original["_id"]
    settings.check_entrypoint(original)
    given = settings.gather_secrets(original, secrets)
    dest = Path(workdir) if workdir is not None else Path(
        tempfile.mkdtemp(prefix=f"recorder-replay-{run_id}-"))
    keep = keep or workdir is not None
    handover_dir = Path(tempfile.mkdtemp(prefix="recorder-handover-"))
    try:
        tree = rebuild(original, db, dest, search=[Path.cwd()])
        links = link_data(original, tree)
        recorded = env.facts(original)
        here = env.current_facts(recorded, path=[str(tree.cwd), *(p for p in sys.path[1:] if p)])
        handover_path = handover_dir / "handover.json"
        child_env, applied, removed = settings.environment(original, tree, handover_path)
        command = settings.command(original, tree, given)
        shown = settings.command(original, tree, dict.fromkeys(given, REDACTED))
        plan = Plan(run_id, tree, shown, applied, removed, env.differences(recorded, here),
                    data_differences(original.get("data")), links, sorted(given), backend.url)
        if on_ready is not None:
            on_ready(plan)
        if strict and (plan.environment_differences or plan.data_differences):
            raise ReplayError(f"--strict: {_differences_text(plan)}; nothing was run")
        if dry_run:
            return ReplayResult(run_id, DRY_RUN, "nothing was run", plan,
                                kept=dest if keep else None)
        uid = uuid.uuid4().hex
        _handover(original, uid, backend, store, given).write(handover_path)
        code, tail = _run(command, tree.cwd, child_env,
                          sys.stdout if output is None else output, timeout)
        result = _judge(original, uid, backend, plan, code, tail, tolerance, ignore,
                        compare_all)
        result.kept = dest if keep else None
        return result
    finally:
        shutil.rmtree(handover_dir, ignore_errors=True)
        if not keep:
            shutil.rmtree(dest, ignore_errors=True)


def open_existing(backend: Backend, store: str | os.PathLike | None) -> Store:
    """The store, never creating an embedded one at a mistyped path."""
    if backend.kind == "embedded" and not Path(backend.url).is_dir():
        raise StoreError(f"no store at {backend.url}: give --store, or set RECORDER_STORE to "
                         "where your runs were recorded")
    return Store(backend.connect(), backend.write_lock, backend.url)


def link_data(run: dict, tree) -> list[str]:
    """Declared data inside the original tree that the rebuilt one lacks (ignored by git, or
    not stored) is linked to where it is, so the script finds it at the same relative path."""
    base = (run.get("experiment") or {}).get("base_dir") if isinstance(
        run.get("experiment"), dict) else None
    linked = []
    for entry in run.get("data") if isinstance(run.get("data"), list) else []:
        target = entry.get("abspath") if isinstance(entry, dict) else None
        if not isinstance(base, str) or not isinstance(target, str):
            continue
        rel = Path(os.path.relpath(target, base)).as_posix()
        try:
            check_relpath(rel, "data path")
        except ReplayError:
            continue  # outside the tree: the script reaches it by its absolute path
        if link(tree.root, rel, target):
            linked.append(rel)
    return linked


def _handover(run: dict, uid: str, backend: Backend, store, secrets: dict[str, str]) -> Handover:
    entry = run.get("entrypoint") if isinstance(run.get("entrypoint"), dict) else {}
    seed = run.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ReplayError(f"run {run['_id']} has no recorded seed ({seed!r})")
    determinism = run.get("determinism") if isinstance(run.get("determinism"), dict) else {}
    start, end = determinism.get("start") or {}, determinism.get("end") or {}
    torch = start if "torch_threads" in start else end  # as at start when torch was imported
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    config_secrets = {k: v for k, v in secrets.items() if k in set(settings.config_secrets(run))}
    return Handover(
        replay_of=run["_id"], uid=uid,
        store=backend.url if backend.kind == "embedded" else resolve_url(store),
        function=str(entry.get("function") or run.get("command") or "main"),
        config=config, seed=seed,
        torch={k: v for k, v in torch.items() if k.startswith(("torch_", "determ", "cudnn_"))},
        secrets=config_secrets)


def _run(command: list[str], cwd: Path, child_env: dict[str, str], output: TextIO,
         timeout: float | None) -> tuple[int, str]:
    """Run the replay, relaying its stdout and stderr to `output`; (exit code, last output)."""
    proc = subprocess.Popen(command, cwd=cwd, env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer:
        timer.start()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    tail = ""
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = decoder.decode(chunk)
            tail = (tail + text)[-OUTPUT_TAIL:]
            output.write(text)
            output.flush()
        return proc.wait(), tail
    except KeyboardInterrupt:  # the child got the Ctrl-C too: let it record INTERRUPTED
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        raise
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _judge(original: dict, uid: str, backend: Backend, plan: Plan, code: int, tail: str,
           tolerance: float, ignore: Iterable[str], compare_all: bool = False) -> ReplayResult:
    db = Store(backend.connect(), backend.write_lock, backend.url)  # sees the child's writes
    replay_id = db.run_id_for(uid)
    if replay_id is None:
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "no output")
        raise ReplayError(f"the replay exited with status {code} before starting its run: "
                          f"{last.strip()[:300]}")
    new = db.get_run(replay_id)
    status = compare.compare_status(original, new)
    metrics = compare.compare_metrics(db.metrics(original["_id"]), db.metrics(replay_id),
                                      tolerance, ignore, judge_timing=compare_all)
    config_same = _same_config(original, new, plan.tree.root)
    verdict, reason = compare.verdict(status, metrics, config_same)
    seen = {d.what for d in plan.environment_differences}
    after = [d for d in (env.determinism_differences(original, new)
                         + env.differences(_torch_only(env.facts(original)),
                                           _torch_only(env.facts(new))))
             if d.what not in seen]
    result = ReplayResult(original["_id"], verdict, reason, plan, replay_id, status, metrics,
                          config_same, plan.environment_differences + after,
                          plan.data_differences + _data_after(original, new))
    db.apply({"op": "update_run", "uid": uid, "set": {"replay": result.stored()}})
    return result


def _same_config(original: dict, new: dict, tree_root: Path) -> bool:
    """The same config, paths inside the rebuilt tree read as the original tree's (a script
    run by `recorder run` records argparse's values, and a default may be an absolute path
    of its own directory)."""
    recorded, replayed = canonical_json(original.get("config")), canonical_json(new.get("config"))
    base = (original.get("experiment") or {}).get("base_dir") if isinstance(
        original.get("experiment"), dict) else None
    if recorded == replayed or not isinstance(base, str):
        return recorded == replayed
    for root in dict.fromkeys([str(tree_root), os.path.realpath(tree_root)]):
        replayed = replayed.replace(json.dumps(root)[1:-1], json.dumps(base)[1:-1])
    return recorded == replayed


def _torch_only(facts: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in facts.items() if k.startswith("torch ")}


def _data_after(original: dict, new: dict) -> list[dict]:
    """Declared data the replay's script read differently (by the path as written)."""
    def by_path(run):
        entries = run.get("data") if isinstance(run.get("data"), list) else []
        return {e.get("path"): e.get("sha256") for e in entries if isinstance(e, dict)}
    before, after = by_path(original), by_path(new)
    return [{"path": p, "recorded": before[p], "now": after.get(p), "seen": "in the replay"}
            for p in before if p in after and after[p] != before[p]]


def _differences_text(plan: Plan) -> str:
    items = [f"{d.what} {d.recorded} (recorded) vs {d.now} (here)"
             for d in plan.environment_differences]
    items += [f"data {d['path']} changed" if d["now"] else f"data {d['path']} is missing"
              for d in plan.data_differences]
    shown = "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")
    return f"{len(items)} difference{'s' if len(items) != 1 else ''} from the recording: {shown}"
