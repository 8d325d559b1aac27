"""The filters of `recorder ls`, turned into one MongoDB filter for `Store.find_runs`.

`--where` takes `key OP value`, OP one of `= != < <= > >=` (`==` is read as `=`). The value
is typed: an integer, a float, `true`/`false`, `null`/`none` (any case), else a string;
quotes (`'1'` or `"1"`) keep it a string. `config.lr<0.01` -> `{"config.lr": {"$lt": 0.01}}`.
"""

from __future__ import annotations

from typing import Any

from .errors import RecorderError

# two-character operators first, so `<=` is never read as `<` followed by `=0.1`
OPERATORS = {"<=": "$lte", ">=": "$gte", "!=": "$ne", "==": None, "=": None,
             "<": "$lt", ">": "$gt"}
STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "DIED")


class FilterError(RecorderError):
    """A `--where`, `--query` or `--status` that cannot be turned into a filter."""


def parse_where(expr: str) -> dict:
    """One `--where` expression as a MongoDB filter."""
    for i in range(len(expr)):
        op = next((o for o in OPERATORS if expr.startswith(o, i)), None)
        if op is not None:
            break
    else:
        raise FilterError(f"--where {expr!r} has no operator: write KEY OP VALUE with OP one of "
                          "= != < <= > >=, e.g. 'config.lr<0.01'")
    key, text = expr[:i].strip(), expr[i + len(op):].strip()
    if not key or any(c.isspace() for c in key):
        raise FilterError(f"--where {expr!r}: {key!r} is not a field name; write KEY OP VALUE, "
                          "e.g. 'config.lr<0.01'")
    if any(text.startswith(o) for o in OPERATORS):
        raise FilterError(f"--where {expr!r}: unknown operator; use one of = != < <= > >=")
    value = typed_value(text)
    mongo_op = OPERATORS[op]
    return {key: value if mongo_op is None else {mongo_op: value}}


def typed_value(text: str) -> Any:
    """`3` -> 3, `0.1` -> 0.1, `true` -> True, `null` -> None, `'3'` -> "3", `sgd` -> "sgd"."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def parse_query(text: str) -> dict:
    """A `--query` MongoDB filter written as JSON (MongoDB Extended JSON is accepted)."""
    from bson import json_util

    try:
        query = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise FilterError(f"--query is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(query, dict):
        raise FilterError(f"--query must be a JSON object such as "
                          f'\'{{"config.lr": {{"$lt": 0.01}}}}\', got {text!r}')
    return query


def parse_status(text: str) -> str:
    status = text.strip().upper()
    if status not in STATUSES:
        raise FilterError(f"--status {text!r} is not a run status: use one of "
                          f"{', '.join(STATUSES)} (any case)")
    return status


def run_filter(*, experiment: str | None = None, status: str | None = None,
               where: list[str] | None = None, query: str | None = None) -> dict:
    """Every filter given, ANDed together into one MongoDB filter."""
    parts = []
    if experiment is not None:
        parts.append({"experiment.name": experiment})
    if status is not None:
        parts.append({"status": parse_status(status)})
    parts += [parse_where(expr) for expr in where or []]
    if query is not None:
        parts.append(parse_query(query))
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}

