"""The replay hand-over: how `recorder replay` tells the decorator in its subprocess what to do.

One environment variable, `RECORDER_REPLAY`, names a JSON file (mode 0600, removed by the
replayer when the subprocess ends) holding:

    {"replay_of": 12, "uid": "<uid of the new run>", "store": "<URL or absolute path>",
     "function": "main", "config": {...stored config...}, "seed": 1234,
     "torch": {...determinism settings to apply to torch...},
     "secrets": {"api_key": "<value given with --set>"}}

The first run of `function` in the subprocess takes it (and removes the variable, so child
processes do not): it runs with exactly the stored config (the `key=value` tokens of argv are
still removed from `sys.argv`, so argparse sees the same argv), the recorded seed even when it
was generated, the torch settings applied when torch is imported, writes to `store` whatever
the decorator or `./.recorder` would say, and its run document gets `replay_of`.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from . import config as cfg
from .errors import ConfigError, ReplayError

ENV_VAR = "RECORDER_REPLAY"
REDACTED = "<redacted>"


@dataclass
class Handover:
    replay_of: int
    uid: str
    store: str
    function: str
    config: dict
    seed: int
    torch: dict = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        """Readable by this user only: it may hold secrets and a store URL with a password."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Handover:
        try:
            with open(path, encoding="utf-8") as f:
                return cls(**json.load(f))
        except (OSError, ValueError, TypeError) as exc:
            raise ReplayError(f"cannot read the replay hand-over {ENV_VAR}={path}: {exc}") from None

    def resolve(self, func: Callable, args: tuple, kwargs: dict) -> cfg.ResolvedConfig:
        """The call of `func` with the stored config, redacted values filled in."""
        wanted = fill_secrets(self.config, self.secrets)
        signature = inspect.signature(func)
        params = [p for p in signature.parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        model = cfg._model_parameter(params)
        if model is not None:
            return _resolve_model(model, wanted)
        hints = _hints(func)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        given = signature.bind_partial(*args, **kwargs).arguments
        names = [p.name for p in params]
        call: dict[str, Any] = {}
        for key, value in wanted.items():
            param = signature.parameters.get(key)
            if (param is None or param not in params) and not accepts_any:
                raise ConfigError(f"the recorded config key {key!r} is not a parameter of "
                                  f"{func.__qualname__}() (its parameters: {', '.join(names)})")
            current = given.get(key, param.default if param is not None else inspect.Parameter.empty)
            if key in self.secrets and param is not None:
                call[key] = cfg.convert(key, value, hints.get(key, _default_type(param)))
            elif current is not inspect.Parameter.empty and _same(current, value):
                call[key] = current  # the very object (a tuple, a Path, an enum), not its BSON
            else:
                call[key] = _typed(value, hints.get(key) or _default_type(param))
        missing = [n for n in names if n not in call]
        if missing:
            raise ConfigError(f"the recorded config has no value for {missing[0]!r}, "
                              f"a parameter of {func.__qualname__}()")
        return cfg.ResolvedConfig(kwargs=call, config=cfg.bson_safe(call))


def take(func: Callable) -> Handover | None:
    """The hand-over, when this process is a replay and `func` is the function it replays."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    handover = Handover.read(path)
    if handover.function != func.__qualname__:
        return None
    os.environ.pop(ENV_VAR, None)
    return handover


def redacted_keys(config: Any, prefix: str = "") -> list[str]:
    """Dotted keys (list items as `key.0`) of the values stored as `<redacted>`."""
    if isinstance(config, Mapping):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return [prefix] if config == REDACTED and prefix else []
    return [key for k, v in items for key in redacted_keys(v, f"{prefix}.{k}" if prefix else k)]


def fill_secrets(config: dict, secrets: Mapping[str, str]) -> dict:
    """`config` with each `<redacted>` value named in `secrets` replaced by the given text."""
    filled = copy.deepcopy(config)
    for key, value in secrets.items():
        *parents, leaf = key.split(".")
        node: Any = filled
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
        if isinstance(node, list):
            node[int(leaf)] = value
        elif isinstance(node, dict) and leaf in node:
            node[leaf] = value
    return filled


def _resolve_model(param: inspect.Parameter, wanted: dict) -> cfg.ResolvedConfig:
    from pydantic import ValidationError

    try:
        instance = param.annotation.model_validate(wanted)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"the recorded config key {key!r}: {error['msg']}") from None
    return cfg.ResolvedConfig(kwargs={param.name: instance},
                              config=cfg.bson_safe(instance.model_dump(mode="python")))


def _same(current: Any, stored: Any) -> bool:
    try:
        return cfg.canonical_json(cfg.bson_safe(current)) == cfg.canonical_json(stored)
    except ConfigError:
        return False


def _typed(value: Any, target: Any) -> Any:
    """A stored (BSON) value back as the parameter's type, where BSON lost it."""
    origin = typing.get_origin(target) or target
    if not isinstance(origin, type) or value is None:
        return value
    try:
        if issubclass(origin, Enum):
            return origin(value)
        if issubclass(origin, PurePath) and isinstance(value, str):
            return origin(value)
        if origin in (tuple, set, frozenset) and isinstance(value, list):
            return origin(value)
    except (TypeError, ValueError):
        pass
    return value


def _default_type(param: inspect.Parameter | None) -> Any:
    if param is None or param.default is param.empty or param.default is None:
        return Any
    return type(param.default)


def _hints(func: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an annotation naming something not importable
        return {}
