"""A run's config: the decorated function's parameters, overrides, and what gets stored.

Config = the parameters with their defaults, then `key=value` overrides from argv,
then keyword arguments. A single parameter annotated with a pydantic model is the
config itself, overridable with dotted keys (`optim.lr=0.1`).

Stored values must be BSON. Conversions done for you (documented in the README):
tuples and sets become lists, paths become strings, numpy scalars become Python
numbers, enums become their value, dates become ISO strings. Anything else, an
integer outside 64 bits, or a key containing `.` or starting with `$` is refused
at start with a `ConfigError` naming the key.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from .errors import ConfigError

OVERRIDE = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*)=(.*)$", re.DOTALL)
INT64 = (-(2**63), 2**63 - 1)
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass
class ResolvedConfig:
    kwargs: dict[str, Any]  # what the function is called with
    config: dict[str, Any]  # what is stored: BSON-safe


def split_argv(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The `key=value` overrides in argv, and argv without them (left for argparse)."""
    overrides, rest = {}, []
    for token in argv:
        match = OVERRIDE.match(token)
        if match:
            overrides[match.group(1)] = match.group(2)
        else:
            rest.append(token)
    return overrides, rest


def resolve(func: Callable, args: tuple, kwargs: dict, overrides: Mapping[str, str]) -> ResolvedConfig:
    """Bind a call and its string overrides to `func`'s parameters; refuse what doesn't fit."""
    signature = inspect.signature(func)
    params = [p for p in signature.parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    model_param = _model_parameter(params)
    if model_param is not None:
        return _resolve_model(model_param, args, kwargs, overrides)

    names = [p.name for p in params]
    hints = _type_hints(func)
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError as exc:
        unknown = next((k for k in kwargs if k not in names), None)
        if unknown is not None:
            raise ConfigError(f"unknown config key {unknown!r} (accepted: {_listing(names)})") from None
        raise ConfigError(str(exc)) from None
    values = dict(bound.arguments)
    for param in params:
        if param.name not in values and param.default is not param.empty:
            values[param.name] = param.default
    for key, text in overrides.items():
        param = signature.parameters.get(key)
        if param is None or param not in params:
            raise ConfigError(f"unknown config key {key!r} (accepted: {_listing(names)})")
        values[key] = convert(key, text, _target_type(param, hints))
    missing = [p.name for p in params if p.name not in values]
    if missing:
        raise ConfigError(f"config key {missing[0]!r} has no default and no value: "
                          f"pass {missing[0]}=VALUE")
    # **kwargs: its keys are config keys of their own (bind_partial nests them under its name)
    var_keyword = next((p.name for p in signature.parameters.values()
                        if p.kind is p.VAR_KEYWORD), None)
    extra = values.pop(var_keyword, {}) if var_keyword else {}
    var_positional = next((p.name for p in signature.parameters.values()
                           if p.kind is p.VAR_POSITIONAL), None)
    if var_positional and values.pop(var_positional, ()):
        raise ConfigError(f"positional arguments beyond the named parameters (*{var_positional}) "
                          "have no config key: pass them as named parameters")
    call = {k: values[k] for k in names} | extra
    return ResolvedConfig(kwargs=call, config=bson_safe(call))


def _model_parameter(params: list[inspect.Parameter]) -> inspect.Parameter | None:
    if len(params) != 1:
        return None
    annotation = params[0].annotation
    is_model = isinstance(annotation, type) and hasattr(annotation, "model_validate")
    return params[0] if is_model else None


def _resolve_model(param: inspect.Parameter, args: tuple, kwargs: dict,
                   overrides: Mapping[str, str]) -> ResolvedConfig:
    model = param.annotation
    given = args[0] if args else kwargs.pop(param.name, None)
    if given is None and param.default is not param.empty:
        given = param.default
    try:
        data = given.model_dump() if given is not None else {}
    except AttributeError:
        raise ConfigError(f"config {param.name!r} must be a {model.__name__}, "
                          f"got {type(given).__name__}") from None
    if not data:
        data = _model_defaults(model)
    for key, value in [*overrides.items(), *kwargs.items()]:
        if not _model_has(model, key.split(".")):
            accepted = _listing(sorted(_dotted_keys(data, model)))
            raise ConfigError(f"unknown config key {key!r} (accepted: {accepted})")
        _set_dotted(data, key, _json_or_text(value) if isinstance(value, str) else value)
    from pydantic import ValidationError

    try:
        instance = model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"config key {key!r}: {error['msg']} "
                          f"(got {error.get('input')!r})") from None
    return ResolvedConfig(kwargs={param.name: instance},
                          config=bson_safe(instance.model_dump(mode="python")))


def _model_defaults(model) -> dict:
    """A model whose fields all have defaults; the missing one is named otherwise."""
    from pydantic import ValidationError

    try:
        return model().model_dump()
    except ValidationError as exc:
        key = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise ConfigError(f"config key {key!r} has no default and no value: "
                          f"pass {key}=VALUE") from None


def _dotted_keys(data: dict, model, prefix: str = "") -> set[str]:
    keys = set(getattr(model, "model_fields", {}) if not prefix else ())
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _dotted_keys(value, None, f"{prefix}{key}.")
    return keys


def _model_has(model, parts: list[str]) -> bool:
    """Whether a dotted key names a field: nested models are followed, and a dict field
    takes any key below it."""
    field = getattr(model, "model_fields", {}).get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    annotation = field.annotation
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return _model_has(annotation, parts[1:])
    return (typing.get_origin(annotation) or annotation) is dict


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"config key {key!r}: {part!r} is not a group of settings")
    data[leaf] = value


def _json_or_text(text: str) -> Any:
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _target_type(param: inspect.Parameter, hints: dict[str, Any]) -> Any:
    """The annotated type (string annotations resolved), else the default's type."""
    if param.name in hints:
        return hints[param.name]
    if param.default is not param.empty and param.default is not None:
        return type(param.default)
    return Any


def _type_hints(func: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an annotation naming something not importable
        return {}


def convert(key: str, text: str, target: Any) -> Any:
    """A command-line string as the parameter's annotated type, or a ConfigError naming both."""
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(target)
        if type(None) in options and text.lower() in ("none", "null"):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(key, text, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: cannot read {text!r}")
    if origin is typing.Literal:
        for choice in typing.get_args(target):
            if str(choice) == text:
                return choice
        raise ConfigError(f"config key {key!r} expects one of "
                          f"{_listing([str(c) for c in typing.get_args(target)])}, got {text!r}")
    if target is Any or target is str:
        return text if target is str else _json_or_text(_scalar(text))
    if target is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"config key {key!r} expects a bool (true/false), got {text!r}")
    if isinstance(target, type) and issubclass(target, enum.Enum):
        for member in target:
            if text in (member.name, str(member.value)):
                return member
        raise ConfigError(f"config key {key!r} expects one of "
                          f"{_listing([m.name for m in target])}, got {text!r}")
    container = origin or target
    if container in (list, tuple, dict, set):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict if container is dict else list):
            raise ConfigError(f"config key {key!r} expects a JSON {container.__name__}, got {text!r}")
        return container(value)
    try:
        return target(text)
    except (TypeError, ValueError):
        name = getattr(target, "__name__", str(target))
        raise ConfigError(f"config key {key!r} expects {name}, got {text!r}") from None


def _scalar(text: str) -> Any:
    """An unannotated override: a JSON number, bool or null when it reads as one."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def bson_safe(value: Any, key: str = "") -> Any:
    """A copy BSON can hold, with the documented conversions, or a ConfigError naming the key."""
    if value is None or isinstance(value, (bool, float, bytes, datetime)):
        return value
    if isinstance(value, str):
        _check_utf8(value, key)
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ConfigError(f"config key {key!r}: {value} does not fit in 64 bits")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"config key {_join(key, str(k))!r}: keys must be strings")
            _check_utf8(k, _join(key, k))
            if "." in k or k.startswith("$") or "\0" in k:
                raise ConfigError(f"config key {_join(key, k)!r}: keys may not contain '.' or "
                                  "start with '$' (MongoDB field names)")
            out[k] = bson_safe(v, _join(key, k))
        return out
    if isinstance(value, (list, tuple)):
        return [bson_safe(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((bson_safe(v, key) for v in value), key=repr)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return bson_safe(value.value, key)
    if isinstance(value, date):
        return value.isoformat()
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return bson_safe(value.item(), key)
    raise ConfigError(f"config key {key!r}: a {type(value).__name__} cannot be stored; use "
                      "numbers, strings, booleans, None, lists or dicts")


def _check_utf8(text: str, key: str) -> None:
    """A byte that is not UTF-8 (argv holds it as a lone surrogate) cannot be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"config key {key!r}: {text!r} is not UTF-8 text (character "
                          f"{exc.start}); pass it as UTF-8") from None


def canonical_json(config: Any) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def config_hash(config: Any) -> str:
    """sha256 of the stored config's canonical JSON: equal configs, equal hashes."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"
