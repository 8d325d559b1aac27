"""`@recorder.experiment`: the decorator and the run lifecycle, in one place.

start: config, seed, snapshot (git, sources, environment) -> RUNNING
main:  the user's function, its output teed, its metrics buffered
end:   COMPLETED (result) | FAILED (fail_trace, exception re-raised) | INTERRUPTED (Ctrl-C)
"""

from __future__ import annotations

import builtins
import enum
import functools
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RecorderError
from .run import Run, current_run, heartbeat_interval, utcnow

if TYPE_CHECKING:
    from .capture.seeding import Seeder
    from .redact import Redactor
    from .store.backends import Backend

FORMAT = "recorder-1"
EXIT_TIMEOUT = {"mongodb": 5.0}  # at most this long waiting for the database at exit
LOCAL_EXIT_TIMEOUT = 30.0


class Status(str, enum.Enum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"


def experiment(func: Callable | None = None, *, name: str | None = None,
               store: str | os.PathLike | None = None) -> Callable:
    """Record every call of `func` as a run: `@experiment` or `@experiment(name=..., store=...)`."""
    if func is None:
        return functools.partial(experiment, name=name, store=store)

    @functools.wraps(func)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        try:
            if current_run() is not None:  # already inside a run: one run, not two
                return _within(current_run(), func, args, kwargs)
            return _record(func, name or func.__name__, store, args, kwargs)
        except RecorderError as exc:
            if func.__module__ != "__main__":
                raise
            print(f"recorder: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return recorded


def _within(run: Run, func: Callable, args: tuple, kwargs: dict) -> Any:
    """A decorated script under `recorder run`: its argv `key=value` overrides apply as
    they would under `python script.py`, and its config becomes the run's."""
    if args or kwargs or func.__module__ != "__main__":
        return func(*args, **kwargs)
    from . import config as cfg
    from .redact import Redactor

    overrides, rest = cfg.split_argv(sys.argv[1:])
    resolved = cfg.resolve(func, args, kwargs, overrides)
    sys.argv[1:] = rest
    stored = Redactor().config(resolved.config)
    run.function_config = stored  # what argparse parses later is merged over it
    run.config = stored
    run.update(config=stored, config_hash=cfg.config_hash(stored))
    return func(**resolved.kwargs)


def _record(func: Callable, name: str, store, args: tuple, kwargs: dict) -> Any:
    # imported here, not at module level: `import recorder` must stay fast
    from . import config as cfg
    from .capture.seeding import Seeder, choose_seed
    from .flusher import Flusher
    from .handover import take as take_replay
    from .output import OutputTail
    from .redact import Redactor
    from .store.backends import backend_for

    replay = take_replay(func)  # `recorder replay` started this process: see handover.py
    argv = list(sys.argv)
    overrides: dict[str, str] = {}
    from_argv = not args and not kwargs and func.__module__ == "__main__"
    if from_argv:
        overrides, rest = cfg.split_argv(sys.argv[1:])
    resolved = (replay.resolve(func, args, kwargs) if replay  # the stored config, exactly
                else cfg.resolve(func, args, kwargs, overrides))
    if from_argv:
        sys.argv[1:] = rest
    backend = backend_for(replay.store if replay else store)
    backend.preload()
    redactor = Redactor()
    stored_config = redactor.config(resolved.config)
    uid = replay.uid if replay else uuid.uuid4().hex
    seed = replay.seed if replay else choose_seed(resolved.config)
    seeder = Seeder(seed, replay.torch if replay else None)
    seeder.start()

    doc, files = _snapshot(func, name, backend, redactor, argv)
    doc.update(uid=uid, config=stored_config, config_hash=cfg.config_hash(stored_config),
               seed=seed, seeded=list(seeder.seeded),
               meta={"overrides": redactor.config(overrides), "backend": backend.kind,
                     "heartbeat_interval": heartbeat_interval()})
    if replay:
        doc["replay_of"] = replay.replay_of
    output = OutputTail()
    run = Run(uid, stored_config, lambda collect: Flusher(backend, uid, collect),
              output=output, redact=redactor.text)
    output.start()
    run.start(doc, files)
    status, result, trace = Status.FAILED, None, None
    try:
        result = func(**resolved.kwargs)
        status = Status.COMPLETED
        return result
    except KeyboardInterrupt:
        status = Status.INTERRUPTED
        raise
    except SystemExit as exc:
        status = Status.COMPLETED if exc.code in (None, 0) else Status.FAILED
        trace = None if status is Status.COMPLETED else _traceback()
        raise
    except BaseException:
        trace = _traceback()
        raise
    finally:
        output.stop()
        seeder.stop()
        _finish(run, backend, redactor, status, result, trace, seeder, doc)


def _snapshot(func: Callable, name: str, backend: Backend, redactor: Redactor,
              argv: list[str]) -> tuple[dict, dict[str, bytes]]:
    """What was run: entry point, git state, sources and environment, at start."""
    return snapshot(entrypoint(func, redactor.argv(argv)), func.__name__, name, backend, redactor)


def snapshot(entry: dict[str, Any], command: str, name: str, backend: Backend,
             redactor: Redactor) -> tuple[dict, dict[str, bytes]]:
    """The run document at start for an entry point (`entrypoint()`'s, or launch.py's for
    `recorder run`): git state, sources and environment; `entry` gets its relative paths."""
    from .capture.environment import capture_environment, capture_host
    from .capture.git import capture_git
    from .capture.seeding import determinism
    from .capture.sources import capture_sources

    main_file = Path(entry["file"]) if entry.get("file") else None
    start_dir = main_file.parent if main_file else Path.cwd()
    exclude = [Path(backend.url)] if backend.kind == "embedded" else []
    git, files = capture_git(start_dir, exclude=exclude)
    base_dir = Path(git["root"]) if git else start_dir
    sources, source_files = capture_sources(main_file, base_dir, exclude=exclude)
    files.update(source_files)
    if git:
        git["remote"] = redactor.text(git["remote"]) if git.get("remote") else git.get("remote")
    entry["cwd_relative"] = _relative(Path.cwd(), base_dir)
    if main_file:
        entry["file"] = _relative(main_file, base_dir) or str(main_file)
    environment = capture_environment()
    now = utcnow()
    doc = {
        "format": FORMAT,
        "experiment": {
            "name": name,
            "base_dir": str(base_dir),
            "mainfile": entry.get("file"),
            "sources": sources,
            "dependencies": sorted(f"{k}=={v}" for k, v in environment["packages"].items()),
            "repositories": [{"url": git.get("remote"), "commit": git.get("commit"),
                              "dirty": git.get("dirty")}] if git else [],
        },
        "command": command,
        "host": capture_host(redactor),
        "environment": environment,
        "git": git,
        "entrypoint": entry,
        "determinism": {"start": determinism()},
        "start_time": now,
        "heartbeat": now,
        "status": Status.RUNNING.value,
        "result": None,
        "info": {},
        "artifacts": [],
        "captured_out": "",
        "tags": [],
    }
    return doc, files


def entrypoint(func: Callable, argv: list[str]) -> dict[str, Any]:
    """How the run was started: a file, `python -m module`, or a notebook."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    entry: dict[str, Any] = {"function": func.__qualname__, "module": func.__module__,
                             "argv": argv, "cwd": os.getcwd(), "python": sys.executable}
    main_file = getattr(main, "__file__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        module = spec.name.removesuffix(".__main__")
        entry.update(kind="module", module=module)
        if main_file:
            entry["file"] = str(Path(main_file).resolve())
    elif main_file:
        entry.update(kind="file", file=str(Path(main_file).resolve()))
    elif hasattr(builtins, "__IPYTHON__") or "ipykernel" in sys.modules:
        entry.update(kind="notebook")
    else:
        entry.update(kind="interactive")
    return entry


def _finish(run: Run, backend: Backend, redactor: Redactor, status: Status, result: Any,
            trace: str | None, seeder: Seeder, doc: dict) -> None:
    from .capture.environment import torch_info
    from .capture.seeding import determinism

    fields: dict[str, Any] = {"status": status.value, "stop_time": utcnow(),
                              "determinism": {**doc["determinism"], "end": determinism()},
                              "seeded": list(seeder.seeded)}
    if status is Status.COMPLETED:
        fields["result"] = _storable_result(result, redactor)
    if trace:
        fields["fail_trace"] = redactor.text(trace).splitlines(keepends=True)
    torch = torch_info()
    if torch != doc["environment"].get("torch"):
        fields["environment.torch"] = torch
    timeout = EXIT_TIMEOUT.get(backend.kind, LOCAL_EXIT_TIMEOUT)
    if not run.finish(fields, timeout):
        print(f"recorder: warning: run {run.uid} was not fully written to {backend.url}; "
              f"its remaining writes are in {run.spool_path}", file=sys.__stderr__)


def _traceback() -> str:
    import traceback  # imported on failure only: it costs 10 ms at start

    return traceback.format_exc()


def _storable_result(result: Any, redactor: Redactor) -> Any:
    from . import config as cfg
    from .errors import ConfigError

    try:
        return redactor.config(cfg.bson_safe(result, "result"))
    except ConfigError as exc:
        print(f"recorder: warning: the return value is stored as text: {exc}", file=sys.__stderr__)
        return redactor.text(repr(result))


def _relative(path: Path, base: Path) -> str | None:
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:
        return None
