"""A storable copy of a write operation that no database would take as it is.

The config and the result are checked at start and at the end; what the training loop
hands over meanwhile is not: an integer beyond 64 bits logged as a metric, text that is
not UTF-8 (a non-UTF-8 file name printed into `captured_out`, a byte in argv), an object
BSON has no type for or a key with `.` in `run.info`. One such value made every write of
the run fail, the spool's too, and the whole run was lost. `repaired(op)` gives a copy
with each such value replaced by the nearest thing that can be stored, and says which.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

INT64 = (-(2**63), 2**63 - 1)
_PLAIN = (type(None), bool, float, bytes, datetime)


def repaired(op: dict) -> tuple[dict, list[str]] | None:
    """None when `op` holds nothing unstorable; else a storable copy and what was changed.

    The keys of an `update_run`'s `set` are dotted paths on purpose and stay as they are."""
    changes: list[str] = []
    kind = op.get("op")
    if kind == "update_run" and isinstance(op.get("set"), dict):
        fixed = {**op, "set": {key: _fix(value, key, changes)
                               for key, value in op["set"].items()}}
    elif kind == "insert_run" and isinstance(op.get("doc"), dict):
        fixed = {**op, "doc": _fix(op["doc"], "", changes)}
    elif kind == "metrics":
        fixed = {**op, **{part: [_fix(chunk, f"metric {chunk.get('name')!r}", changes)
                                 for chunk in op.get(part, [])] for part in ("insert", "replace")}}
    else:
        fixed = _fix(op, "", changes)
    return (fixed, changes) if changes else None


def network_error(exc: BaseException) -> bool:
    """A failure of the connection, not of the data (pymongo's ConnectionFailure family, an
    OSError): the operation is not repaired then, only retried later as it is."""
    return isinstance(exc, OSError) or any(
        cls.__name__ == "ConnectionFailure" for cls in type(exc).__mro__)


def _fix(value: Any, path: str, changes: list[str]) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return _text(value, path, changes)
    if isinstance(value, int):
        if INT64[0] <= value <= INT64[1]:
            return value
        try:
            stored = float(value)
        except OverflowError:
            stored = str(value)
        changes.append(f"{path}: the integer {_short(value)} does not fit in 64 bits: stored as "
                       f"{'a float' if isinstance(stored, float) else 'text'}")
        return stored
    if isinstance(value, dict):
        return {_key(key, f"{path}.{key}" if path else str(key), changes):
                _fix(item, f"{path}.{key}" if path else str(key), changes)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fix(item, f"{path}[{i}]", changes) for i, item in enumerate(value)]
    if _bson_type(value):
        return value
    changes.append(f"{path}: a value of type {type(value).__name__} cannot be stored: "
                   "stored as its repr")
    return _text(repr(value), path, [])


def _text(value: str, path: str, changes: list[str]) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        changes.append(f"{path}: text that is not UTF-8: stored with \\udcXX escapes")
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _key(key: Any, path: str, changes: list[str]) -> str:
    """MongoDB field names: strings, no NUL, no `.`, no leading `$` (replaced by their
    full-width look-alikes, as MongoDB's documentation once advised)."""
    text = _text(key if isinstance(key, str) else str(key), path, changes)
    safe = text.replace("\0", "\ufffd").replace(".", "\uff0e")
    if safe.startswith("$"):
        safe = "\uff04" + safe[1:]
    if safe != key:
        changes.append(f"{path}: the key {key!r} is not a MongoDB field name: stored as {safe!r}")
    return safe


def _bson_type(value: Any) -> bool:
    """ObjectId, Decimal128, Int64, Regex, Binary... which BSON stores as they are."""
    if type(value).__module__.split(".")[0] != "bson":
        return False
    import bson

    try:
        bson.encode({"v": value})
    except Exception:  # noqa: BLE001 - anything bson refuses is not storable as it is
        return False
    return True


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"
