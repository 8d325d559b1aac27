"""What the replay's subprocess gets: its command line, its environment variables, and the
values that were redacted as secrets at record time.

- Command: the recorded entry point (a file, or `python -m module`) with the recorded argv,
  run by this interpreter (`sys.executable`) from the recorded working directory inside the
  rebuilt tree; a run started by `recorder run` (`entrypoint.launcher`) is started by it
  again, `python -m recorder run` with its recorded options (`entrypoint.launch_options`).
- Environment: this process's, with the recorded `host.ENV` applied (values recorded as
  `<redacted>` are left as they are here), the variables of the recorded families
  (`ENV_ALLOWLIST`) that were not set at record time removed, the hand-over variable, and
  the tree's import roots first on PYTHONPATH (so that an editable install of the project
  does not bring in today's code instead of the rebuilt one).
- Secrets: a value stored as `<redacted>` (a config key, or an argv option such as
  `--api-key`) must be given, as `--set NAME=VALUE` (`secrets=` in Python) or in the
  environment variable `RECORDER_SET_<NAME>` (NAME upper-cased, leading dashes dropped,
  other non-alphanumerics as `_`: `api_key` and `--api-key` both read RECORDER_SET_API_KEY).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from ..capture.environment import select_env
from ..config import OVERRIDE
from ..errors import ReplayError
from ..handover import ENV_VAR, REDACTED, redacted_keys
from .paths import check_module, check_relpath
from .tree import Tree

SET_PREFIX = "RECORDER_SET_"
LAUNCHER = "recorder run"  # entrypoint.launcher of a run started by `recorder run` (launch.py)


def secret_names(run: dict) -> list[str]:
    """Names of the values recorded as `<redacted>`: config keys, then argv options."""
    argv_names = [name for _, name in _argv_secrets(_argv(run), launched(run))]
    return list(dict.fromkeys([*config_secrets(run), *argv_names]))


def gather_secrets(run: dict, given: Mapping[str, str] | None,
                   environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The value of every redacted name, from `given` or RECORDER_SET_<NAME>; a missing one
    is a ReplayError naming it."""
    environ = os.environ if environ is None else environ
    needed = secret_names(run)
    given = {name.lstrip("-"): value for name, value in (given or {}).items()}
    unknown = [name for name in given if name not in needed]
    if unknown:
        listed = ", ".join(needed) if needed else "nothing was"
        raise ReplayError(f"--set {unknown[0]}: only values redacted at record time can be set "
                          f"(redacted in run {run.get('_id')}: {listed})")
    values = {}
    for name in needed:
        value = given.get(name, environ.get(env_name(name)))
        if value is None:
            raise ReplayError(f"{name!r} was redacted as a secret when run {run.get('_id')} was "
                              f"recorded: give it with --set {name}=VALUE or the environment "
                              f"variable {env_name(name)}")
        values[name] = value
    return values


def env_name(name: str) -> str:
    return SET_PREFIX + re.sub(r"\W", "_", name.lstrip("-")).upper()


def check_entrypoint(run: dict) -> str:
    """The recorded entry point's kind, when it is one that can be started again."""
    entry = run.get("entrypoint") if isinstance(run.get("entrypoint"), dict) else {}
    kind = entry.get("kind")
    if kind in ("notebook", "interactive"):
        where = "a notebook" if kind == "notebook" else "an interactive session"
        raise ReplayError(f"run {run.get('_id')} was started from {where}: it is recorded but "
                          "cannot be replayed (replay starts a script or `python -m module`)")
    if kind not in ("file", "module"):
        raise ReplayError(f"run {run.get('_id')} has no recorded entry point to replay "
                          f"(entrypoint.kind {kind!r})")
    return kind


def config_secrets(run: dict) -> list[str]:
    """The config keys recorded as `<redacted>` that the hand-over must fill in; none for a
    run of `recorder run`, whose config is what its argv parses to (argv secrets suffice)."""
    if launched(run):
        return []
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    return redacted_keys(config)


def launched(run: dict) -> bool:
    """Whether the run was started by `recorder run` (a script that was not decorated)."""
    entry = run.get("entrypoint") if isinstance(run.get("entrypoint"), dict) else {}
    return entry.get("launcher") == LAUNCHER


def command(run: dict, tree: Tree, secrets: Mapping[str, str]) -> list[str]:
    """The command line that starts the recorded entry point in the rebuilt tree."""
    entry = run.get("entrypoint") if isinstance(run.get("entrypoint"), dict) else {}
    kind = check_entrypoint(run)
    argv = _argv(run)
    for index, name in _argv_secrets(argv, launched(run)):
        argv[index] = argv[index].replace(REDACTED, secrets[name])
    python = [sys.executable]
    if launched(run):
        options = entry.get("launch_options")
        options = [str(o) for o in options] if isinstance(options, list) else []
        python = [sys.executable, "-m", "recorder", "run", *options]
    if kind == "module":
        return [*python, "-m", check_module(entry.get("module")), *argv[1:]]
    if not isinstance(entry.get("file"), str):
        raise ReplayError(f"run {run.get('_id')} has no recorded entry point file")
    main_file = tree.root / check_relpath(entry["file"], "entry point")
    if not main_file.is_file():
        raise ReplayError(f"the entry point {entry['file']!r} is not in the rebuilt tree")
    return [*python, os.path.relpath(main_file, tree.cwd), *argv[1:]]


def environment(run: dict, tree: Tree, handover: Path, base: Mapping[str, str] | None = None
                ) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(the subprocess's variables, the recorded ones applied, the ones removed)."""
    env = dict(os.environ if base is None else base)
    host = run.get("host") if isinstance(run.get("host"), dict) else {}
    recorded = host.get("ENV")
    applied: dict[str, str] = {}
    removed: list[str] = []
    if isinstance(recorded, dict):
        removed = sorted(name for name in select_env(env) if name not in recorded)
        for name in removed:
            del env[name]
        applied = {k: v for k, v in recorded.items() if isinstance(v, str) and v != REDACTED}
        env.update(applied)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(name, None)
    ceiling = str(tree.root.parent)  # the replay's git state is the rebuilt tree's, or none
    env["GIT_CEILING_DIRECTORIES"] = os.pathsep.join(
        p for p in (env.get("GIT_CEILING_DIRECTORIES"), ceiling) if p)
    env["PYTHONPATH"] = os.pathsep.join(
        [*import_roots(run, tree), *_moved(env.get("PYTHONPATH"), run, tree)])
    if not env["PYTHONPATH"]:
        del env["PYTHONPATH"]
    env[ENV_VAR] = str(handover)
    return env, applied, removed


def import_roots(run: dict, tree: Tree) -> list[str]:
    """The directories of the tree that hold the recorded modules' top-level packages."""
    experiment = run.get("experiment") if isinstance(run.get("experiment"), dict) else {}
    roots: list[str] = []
    for entry in experiment.get("sources") or []:
        if not (isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str)):
            continue
        directory = tree.root / Path(entry[0]).parent
        while directory != tree.root and (directory / "__init__.py").is_file():
            directory = directory.parent
        if str(directory) not in roots and directory.is_dir():
            roots.append(str(directory))
    return roots


def _moved(pythonpath: str | None, run: dict, tree: Tree) -> list[str]:
    """PYTHONPATH entries inside the original tree point into the rebuilt one instead."""
    base = (run.get("experiment") or {}).get("base_dir") if isinstance(
        run.get("experiment"), dict) else None
    entries = [p for p in (pythonpath or "").split(os.pathsep) if p]
    if not isinstance(base, str):
        return entries
    moved = []
    for entry in entries:
        rel = os.path.relpath(os.path.abspath(entry), base)
        inside = rel != os.pardir and not rel.startswith(os.pardir + os.sep)
        moved.append(str(tree.root / rel) if inside else entry)
    return moved


def _argv(run: dict) -> list[str]:
    entry = run.get("entrypoint") if isinstance(run.get("entrypoint"), dict) else {}
    argv = entry.get("argv")
    return [str(a) for a in argv] if isinstance(argv, list) and argv else [""]


def _argv_secrets(argv: list[str], script_args: bool = False) -> list[tuple[int, str]]:
    """(index, name) of argv tokens holding `<redacted>`; `key=value` config tokens are left
    out (the replay takes its config from the run, and strips them from argv), unless they
    are `script_args` (a run of `recorder run` passes all of argv to the script)."""
    found = []
    for i, token in enumerate(argv[1:], 1):
        if REDACTED not in token or (OVERRIDE.match(token) and not script_args):
            continue
        if (token.startswith("-") or script_args) and "=" in token:
            name = token.partition("=")[0].lstrip("-")
        elif token == REDACTED and argv[i - 1].startswith("-"):
            name = argv[i - 1].lstrip("-")
        else:
            name = f"argv{i}"
        found.append((i, name))
    return found
