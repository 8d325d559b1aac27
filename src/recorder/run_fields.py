"""The fields a run document is expected to hold, so `ls` and `show` can say which are
missing or of the wrong type, instead of only printing "?" where a value should be.

Run documents come from many versions of the recorder and from people's own scripts
(`recorder.connect()` writes anything): the CLI prints what it can and names the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "DIED")

# field (dotted) -> the types it may have, and how to name them
EXPECTED: dict[str, tuple[tuple[type, ...], str]] = {
    "experiment.name": ((str,), "text"),
    "status": ((str,), "text"),
    "start_time": ((datetime,), "a date"),
    "config": ((dict,), "a mapping"),
    "heartbeat": ((datetime,), "a date"),
    "host.hostname": ((str,), "text"),
    "seed": ((int,), "an integer"),
    "config_hash": ((str,), "text"),
    "experiment.sources": ((list,), "a list"),
    "environment": ((dict,), "a mapping"),
    "entrypoint": ((dict,), "a mapping"),
}
LS_FIELDS = ("experiment.name", "status", "start_time", "config")  # what `ls` shows
NOTES_SHOWN = 10  # `ls` names at most this many incomplete runs


def problems(run: dict, fields: tuple[str, ...] | None = None) -> list[str]:
    """What is wrong with a run document, one short phrase each: `status is missing`,
    `config is a str, not a mapping`, `status 'DONE' is not one of QUEUED, ...`."""
    found: list[str] = []
    for field in fields or tuple(EXPECTED):
        types, name = EXPECTED[field]
        value, problem = _lookup(run, field)
        if problem is None and value is None:
            problem = f"{field} is missing"
        elif problem is None and (not isinstance(value, types)
                                  or (int in types and isinstance(value, bool))):
            problem = f"{field} is {_a(value)}, not {name}"
        elif problem is None and field == "status" and value not in STATUSES:
            problem = f"status {value!r} is not one of {', '.join(STATUSES)}"
        if problem and problem not in found:
            found.append(problem)
    stop = run.get("stop_time")
    if fields is None and run.get("status") in STATUSES[2:] and not isinstance(stop, datetime):
        found.append("stop_time is missing" if stop is None else
                     f"stop_time is {_a(stop)}, not a date")
    return found


def note(run: dict, fields: tuple[str, ...] | None = None) -> str | None:
    """One line for an incomplete run document, or None when it holds what is expected."""
    found = problems(run, fields)
    if not found:
        return None
    missing = [p.removesuffix(" is missing") for p in found if p.endswith(" is missing")]
    other = [p for p in found if not p.endswith(" is missing")]
    return "incomplete record: " + "; ".join(
        ([f"missing {', '.join(missing)}"] if missing else []) + other)


def ls_notes(runs: list[dict]) -> list[str]:
    """Lines printed under the `ls` table: which listed runs are incomplete, and how."""
    lines = []
    incomplete = [(run.get("_id", "?"), note(run, LS_FIELDS)) for run in runs]
    incomplete = [(run_id, text) for run_id, text in incomplete if text]
    for run_id, text in incomplete[:NOTES_SHOWN]:
        lines.append(f"run {run_id}: {text}")
    if len(incomplete) > NOTES_SHOWN:
        lines.append(f"... and {len(incomplete) - NOTES_SHOWN} more incomplete runs "
                     "(`recorder show ID` says what each lacks)")
    return lines


def _lookup(doc: Any, path: str) -> tuple[Any, str | None]:
    """The value at a dotted path, or why there is none (a level missing or not a mapping)."""
    done: list[str] = []
    for key in path.split("."):
        if not isinstance(doc, dict):
            return None, f"{'.'.join(done)} is {_a(doc)}, not a mapping"
        if key not in doc:
            return None, f"{path} is missing"
        done.append(key)
        doc = doc[key]
    return doc, None


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"
