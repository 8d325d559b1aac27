"""`recorder run script.py args…`: run a script nobody decorated inside a recorded run.

The script runs in this process, as `python script.py args…` would run it: its `sys.argv`,
`__name__ == "__main__"` (`__file__` absolute), `sys.path[0]` (the script's real directory;
the working directory for `-m`), the working directory, stdin, stdout and stderr are its
own, and `launch` returns the exit status Python would exit with. Around it, the lifecycle
of `@recorder.experiment` (experiment.py): seed, snapshot, RUNNING, heartbeat, output tail,
then COMPLETED (exit status 0), FAILED (any other; the traceback from the script's own frames
is printed as Python prints it and kept in `fail_trace`) or INTERRUPTED (Ctrl-C); `result`
is the exit status (130 for Ctrl-C, as a shell reports it).

What a decorated run takes from its function, a launched run takes from the script:
- config: what `argparse` parsed (every `parse_args`/`parse_known_args` call, defaults
  included, merged in order), else `{"argv": [...]}`; the raw argv is `entrypoint.argv`;
- metrics: lines of stdout matching the metric patterns (logparse.py), besides any
  `recorder.log` calls in the script;
- sources: the script and the project modules it imported, read again when it ends.
A decorated function the script calls runs plainly inside this run: one run, not two.

A replay re-runs it through `python -m recorder run` with the recorded options
(`entrypoint.launch_options`) and argv; the hand-over (handover.py) is taken here, by the
entry point named FUNCTION, not by a decorated function inside the script.
"""

from __future__ import annotations

import argparse
import functools
import importlib.machinery
import os
import sys
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, LaunchError

LAUNCHER = "recorder run"  # entrypoint.launcher of a launched run
FUNCTION = "<script>"  # its entrypoint.function: what the replay hand-over names
INTERRUPTED_STATUS = 130


@dataclass
class Target:
    """What to run: a file (or a directory/zip with `__main__.py`) or a module."""

    kind: str  # "file" or "module"
    given: str  # as typed: the path, or the module's name
    file: Path | None  # the source file (absolute), when known before it runs
    args: list[str]  # what follows it on the command line

    @property
    def argv(self) -> list[str]:
        """sys.argv as the script sees it (a module's argv[0] is set by runpy: its file)."""
        return [self.given if self.kind == "file" else str(self.file or self.given), *self.args]


def launch(target: str, args: Sequence[str] = (), *, module: bool = False,
           name: str | None = None, store: str | os.PathLike | None = None,
           patterns: Sequence[str] = (), default_patterns: bool = True) -> int:
    """Run `target` with `args` in a recorded run; return its exit status. Ctrl-C is
    re-raised (KeyboardInterrupt) once the run is recorded INTERRUPTED."""
    # imported here, not at module level: `import recorder` must stay fast
    from . import logparse
    from .capture.seeding import Seeder, choose_seed
    from .experiment import Status, _finish, snapshot
    from .flusher import Flusher
    from .output import OutputTail
    from .redact import Redactor
    from .run import Run, heartbeat_interval
    from .store.backends import backend_for

    compiled = [logparse.compile_pattern(p) for p in patterns]
    script = resolve(target, list(args), module)
    replay = _take_handover()
    backend = backend_for(replay.store if replay else store)
    backend.preload()
    redactor = Redactor()
    uid = replay.uid if replay else uuid.uuid4().hex
    seed = replay.seed if replay else choose_seed({})
    seeder = Seeder(seed, replay.torch if replay else None)
    seeder.start()

    options = _options(name or _default_name(script), patterns, default_patterns)
    entry = _entrypoint(script, redactor, options)
    doc, files = snapshot(entry, FUNCTION, options[1], backend, redactor)
    config = ScriptConfig(redactor, script.args)
    doc.update(uid=uid, config=config.stored, config_hash=config.hash, seed=seed,
               seeded=list(seeder.seeded),
               meta={"backend": backend.kind, "heartbeat_interval": heartbeat_interval()})
    if replay:
        doc["replay_of"] = replay.replay_of
    output = OutputTail()
    run = Run(uid, config.stored, lambda collect: Flusher(backend, uid, collect),
              output=output, redact=redactor.text)
    parser = logparse.MetricParser(_in_this_process(run.log), compiled, default_patterns,
                                   is_secret=lambda text: redactor.text(text) != text)
    stdout = sys.stdout
    lines = sys.stdout = logparse.MetricLines(stdout, parser.feed)
    output.start()
    run.start(doc, files)
    argparse_seen = ArgparseCapture(lambda values: config.parsed(values, run))
    argparse_seen.start()
    status, code, trace, interrupt = Status.FAILED, 1, None, None
    try:
        _execute(script)
        status, code = Status.COMPLETED, 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
        status = Status.COMPLETED if code == 0 else Status.FAILED
        trace = None if code == 0 else _script_trace(exc)
    except KeyboardInterrupt as exc:
        status, code, interrupt = Status.INTERRUPTED, INTERRUPTED_STATUS, exc
        _print_exception(exc)
    except BaseException as exc:  # noqa: BLE001 - the script's failure, reported as Python does
        trace = _script_trace(exc)
        _print_exception(exc)
    finally:
        argparse_seen.stop()
        output.stop()
        if sys.stdout is lines:
            sys.stdout = stdout
        lines.close()
        seeder.stop()
        _add_late_sources(run, doc, entry, backend)
        if status is not Status.COMPLETED:
            run.update(result=code)
        _finish(run, backend, redactor, status, code, trace, seeder, doc)
    if interrupt is not None:
        raise interrupt
    return code


def _in_this_process(log: Callable) -> Callable:
    """`log`, silently skipped in a forked child (a DataLoader worker printing a line): only
    the process that started the run logs (run.py warns about explicit calls there)."""
    pid = os.getpid()

    def log_here(name: str, value: Any, step: int) -> None:
        if os.getpid() == pid:
            log(name, value, step)

    return log_here


def resolve(target: str, args: list[str], module: bool) -> Target:
    """The script or module to run, or a LaunchError naming what is missing."""
    if module:
        return Target("module", target, _module_file(target), args)
    path = Path(target)
    if not path.exists():
        raise LaunchError(f"no script {target!r} (looked in {os.getcwd()}): give the path of a "
                          "Python file, or -m MODULE")
    if path.is_dir() and not (path / "__main__.py").is_file():
        raise LaunchError(f"{target!r} is a directory without __main__.py: give a Python file")
    main = path / "__main__.py" if path.is_dir() else path
    return Target("file", target, Path(os.path.abspath(main)), args)


def _module_file(name: str) -> Path | None:
    """The file of module `name` (a package's `__main__.py`), found without importing it;
    a LaunchError when its top-level package is nowhere on the path."""
    if not name or any(not part.isidentifier() for part in name.split(".")):
        raise LaunchError(f"-m {name!r}: not a module name")
    search: list[str] | None = [os.getcwd(), *sys.path[1:]]
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]), search)
        if spec is None:
            if i == 0:
                raise LaunchError(f"no module named {parts[0]!r} (looked in {os.getcwd()} "
                                  "and on sys.path)")
            return None  # found when imported (the package may extend its path): runpy says
        search = list(spec.submodule_search_locations or [])
    if spec is not None and spec.submodule_search_locations is not None:
        main = importlib.machinery.PathFinder.find_spec(f"{name}.__main__", search)
        spec = main
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and os.path.isfile(origin) else None


def _execute(script: Target) -> None:
    """Run it as Python would: `__main__`, `sys.argv`, `sys.path[0]`; restored afterwards."""
    import runpy

    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = script.argv
    if not sys.path:
        sys.path.append("")
    try:
        if script.kind == "module":
            sys.path[0] = os.getcwd()
            runpy.run_module(script.given, run_name="__main__", alter_sys=True)
        elif _is_plain_file(script.given):
            sys.path[0] = os.path.dirname(os.path.realpath(script.given))
            _run_file(str(script.file))
        else:  # a directory or zip archive with __main__.py: runpy puts it first on the path
            del sys.path[0]
            runpy.run_path(script.given, run_name="__main__")
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _is_plain_file(path: str) -> bool:
    import zipfile

    return os.path.isfile(path) and not zipfile.is_zipfile(path)


def _run_file(path: str) -> None:
    """`python path`: a fresh `__main__` module, the code compiled with the absolute path."""
    with open(path, "rb") as f:
        source = f.read()
    code = compile(source, path, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __cached__=None, __spec__=None, __package__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", path),
                         __builtins__=__builtins__)
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)  # noqa: S102 - running the user's script is the point
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _exit_status(code: Any) -> int:
    """What Python exits with for `sys.exit(code)`; a message is printed to stderr, as Python
    prints it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _script_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from the script's first frame: ours and runpy's left out."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in (__name__, "runpy"):
        tb = tb.tb_next
    return tb


def _script_trace(exc: BaseException) -> str:
    import traceback

    exc.__traceback__ = _script_frames(exc.__traceback__)
    return "".join(traceback.format_exception(exc))


def _print_exception(exc: BaseException) -> None:
    exc.__traceback__ = _script_frames(exc.__traceback__)
    sys.excepthook(type(exc), exc, exc.__traceback__)


def exit_interrupted() -> None:
    """End this process the way Python ends on an unhandled Ctrl-C: killed by SIGINT."""
    import signal

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if hasattr(signal, "SIGINT") and hasattr(os, "kill"):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(INTERRUPTED_STATUS)


# -- config: argparse's values ------------------------------------------------------------


class ScriptConfig:
    """The run's config: what argparse parsed, merged over the calls, once the script parsed
    anything; until then (and for a script without argparse) `{"argv": [...]}`."""

    def __init__(self, redactor, argv: list[str]):
        from .config import config_hash

        self._redactor = redactor
        self._hash = config_hash
        self._values: dict[str, Any] | None = None
        self.stored = redactor.config({"argv": list(argv)})
        self.hash = config_hash(self.stored)

    def parsed(self, values: Mapping[str, Any], run) -> None:
        self._values = {**(self._values or {}), **storable(values)}
        self.stored = self._redactor.config({**(run.function_config or {}), **self._values})
        self.hash = self._hash(self.stored)
        run.config = self.stored
        run.update(config=self.stored, config_hash=self.hash)


def storable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed values as a config: each value as `config.bson_safe` makes it (a Path a
    string, an enum its value), else its repr (an open file, an object); a dest with dots
    (`--optim.lr`) nested as `{"optim": {"lr": ...}}`; a leading `$` becomes `_`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = "_" + str(key)[1:] if str(key).startswith("$") else str(key)
        value = _storable_value(value, key)
        parts = key.split(".")
        node = out
        if len(parts) > 1 and all(parts):
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    node, parts = out, [key.replace(".", "_")]
                    break
        else:
            parts = [key.replace(".", "_")]
        node[parts[-1]] = value
    return out


def _storable_value(value: Any, key: str) -> Any:
    from .config import bson_safe

    if isinstance(value, argparse.Namespace):
        return storable(vars(value))
    try:
        return bson_safe(value, key)
    except ConfigError:
        pass
    if isinstance(value, Mapping):
        return storable({str(k): v for k, v in value.items()})
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_storable_value(v, key) for v in value]
    return repr(value)


class ArgparseCapture:
    """While started, every `ArgumentParser.parse_known_args` (which `parse_args` calls) and
    `parse_known_intermixed_args` hands the namespace it returns to `on_parse` (the outermost
    call only: subparsers parse inside it). Nothing else about parsing changes; an error in
    `on_parse` is dropped, never the script's."""

    METHODS = ("parse_known_args", "parse_known_intermixed_args")

    def __init__(self, on_parse: Callable[[dict[str, Any]], None]):
        self.on_parse = on_parse
        self._depth = 0
        self._originals: dict[str, Callable] = {}
        self._wrappers: dict[str, Callable] = {}

    def start(self) -> None:
        for name in self.METHODS:
            original = getattr(argparse.ArgumentParser, name, None)
            if original is None:
                continue
            self._originals[name] = original
            self._wrappers[name] = wrapper = self._wrap(original)
            setattr(argparse.ArgumentParser, name, wrapper)

    def stop(self) -> None:
        for name, original in self._originals.items():
            if argparse.ArgumentParser.__dict__.get(name) is self._wrappers[name]:
                setattr(argparse.ArgumentParser, name, original)
        self._originals.clear()
        self._wrappers.clear()

    def _wrap(self, original: Callable) -> Callable:
        capture = self

        @functools.wraps(original)
        def parse(parser, *args, **kwargs):
            capture._depth += 1
            try:
                result = original(parser, *args, **kwargs)
            finally:
                capture._depth -= 1
            if capture._depth == 0:
                try:
                    capture.on_parse(dict(vars(result[0])))
                except Exception:  # noqa: BLE001, S110 - recording must not break the script
                    pass
            return result

        return parse


# -- the entry point ------------------------------------------------------------------------


def _take_handover():
    """The replay hand-over, when `recorder replay` started this process for a launched run
    (the decorator takes those naming its function instead)."""
    from .handover import ENV_VAR, Handover

    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    handover = Handover.read(path)
    if handover.function != FUNCTION:
        return None
    os.environ.pop(ENV_VAR, None)
    return handover


def _default_name(script: Target) -> str:
    if script.kind == "module":
        return script.given
    path = Path(script.given)
    return path.resolve().name if path.is_dir() else path.stem


def _options(name: str, patterns: Sequence[str], default_patterns: bool) -> list[str]:
    """The `recorder run` options a replay passes again (the store comes by the hand-over)."""
    options = ["--name", name]
    for pattern in patterns:
        options += ["--metric-pattern", pattern]
    return options + ([] if default_patterns else ["--no-default-patterns"])


def _entrypoint(script: Target, redactor, options: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": script.kind, "function": FUNCTION,
        "module": script.given if script.kind == "module" else "__main__",
        "argv": redactor.argv(script.argv), "cwd": os.getcwd(), "python": sys.executable,
        "launcher": LAUNCHER, "launch_options": options,
    }
    if script.file is not None:
        entry["file"] = str(script.file)
    return entry


def _add_late_sources(run, doc: dict, entry: dict, backend) -> None:
    """The project modules the script imported while it ran (the start only saw the script)."""
    from .capture.sources import capture_sources

    try:
        base = Path(doc["experiment"]["base_dir"])
        main = base / entry["file"] if entry.get("file") else None
        exclude = [Path(backend.url)] if backend.kind == "embedded" else []
        sources, files = capture_sources(main, base, exclude=exclude)
    except Exception:  # noqa: BLE001 - what the start recorded stands
        return
    if sources != doc["experiment"]["sources"]:
        run.add_files(files)
        run.update(**{"experiment.sources": sources})
