"""What the CLI prints: run documents for people (rich) or for programs (`--json`).

`--json` is strict JSON (RFC 8259), so `jq` and JavaScript read it too: datetimes become
ISO 8601 strings in UTC, bytes become hex, other BSON types (ObjectId...) their text, and the
floats JSON has no word for become the strings "NaN", "Infinity" and "-Infinity".

Run documents come from many versions of the recorder, and from people's own scripts: a
missing or oddly typed field prints as "?" and never stops the rest from printing; `show`
(under the header) and `ls` (under the table) say which fields are missing or mistyped.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from . import run_fields

MISSING = "?"
PIPED_WIDTH = 1000
CONFIG_COLUMNS = 4
SOURCES_SHOWN = 20
TRACE_LINES = 15
STATUS_STYLE = {"COMPLETED": "green", "FAILED": "red", "RUNNING": "yellow",
                "INTERRUPTED": "magenta", "DIED": "red"}


def console() -> Console:
    """Run documents hold user text: never read as rich markup or emoji codes. Piped into a
    file or `grep`, lines are not wrapped at 80 columns (COLUMNS still sets a width)."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(markup=False, emoji=False, highlight=False, width=PIPED_WIDTH if piped else None)


def emit(data: Any, as_json: bool, human: Callable[[Console, Any], None]) -> None:
    """The one output helper: `data` as JSON, or drawn by `human` for a person."""
    if as_json:
        print(to_json(data))
    else:
        human(console(), data)


# -- JSON --------------------------------------------------------------------------------


def to_json(data: Any) -> str:
    return json.dumps(plain(data), indent=2, ensure_ascii=False, allow_nan=False)


def plain(value: Any) -> Any:
    """`value` with only the types strict JSON has (see the module docstring)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


# -- small formats -----------------------------------------------------------------------


def get(doc: Any, path: str) -> Any:
    """`doc["a"]["b"]` for "a.b", or None where any level is missing or not a mapping."""
    for key in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def utc(moment: datetime) -> datetime:
    """Stores hand back naive datetimes that are UTC (BSON keeps no zone)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def when(moment: Any) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S") if isinstance(moment, datetime) else MISSING


def duration(run: dict) -> str:
    start, stop = get(run, "start_time"), get(run, "stop_time")
    if stop is None and get(run, "status") == "RUNNING":
        return "running"
    if not isinstance(start, datetime) or not isinstance(stop, datetime):
        return MISSING
    seconds = (utc(stop) - utc(start)).total_seconds()
    return seconds_text(seconds) if seconds >= 0 else MISSING


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    if h == 0:
        return f"{m}m{s:02d}s"
    d, h = divmod(h, 24)
    return f"{h}h{m:02d}m" if d == 0 else f"{d}d{h:02d}h"


def value_text(value: Any, width: int = 60) -> str:
    """A config or result value as a user would type it in `--where`."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = format(value, ".6g")
    elif isinstance(value, (str, int)):
        text = str(value)
    else:
        text = json.dumps(plain(value), ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: {"opt": {"lr": 1}} -> {"opt.lr": 1}."""
    if not isinstance(config, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_columns(runs: list[dict], limit: int = CONFIG_COLUMNS) -> list[str]:
    """The config keys whose values differ between `runs`, else the first few keys."""
    flats = [flatten(get(run, "config")) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    missing = object()  # a key some runs lack differs too; repr() makes NaN equal NaN
    differing = [k for k in keys if len({repr(f.get(k, missing)) for f in flats}) > 1]
    return (differing or keys)[:limit]


def compact(value: Any, width: int = 40) -> str:
    if isinstance(value, dict):
        text = " ".join(f"{k}={value_text(v, width)}" for k, v in flatten(value).items())
    else:
        text = value_text(value, width)
    return text if len(text) <= width else text[:width - 1] + "…"


def status_text(status: Any) -> Text:
    status = status if isinstance(status, str) else MISSING
    return Text(status, style=STATUS_STYLE.get(status, "dim"))


# -- recorder ls -------------------------------------------------------------------------


def runs_table(out: Console, runs: list[dict]) -> None:
    keys = config_columns(runs)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "experiment", "status", "start (UTC)", "duration"):
        table.add_column(column, no_wrap=True)
    for column in (*keys, "result"):
        table.add_column(column, overflow="fold")
    for run in runs:
        flat = flatten(get(run, "config"))
        name = get(run, "experiment.name")
        table.add_row(Text(str(run.get("_id", MISSING))),
                      Text(name if isinstance(name, str) else MISSING),
                      status_text(run.get("status")), Text(when(run.get("start_time"))),
                      Text(duration(run)),
                      *(Text(value_text(flat[k], 24) if k in flat else "") for k in keys),
                      Text("" if run.get("result") is None else compact(run["result"])))
    out.print(table)
    for line in run_fields.ls_notes(runs):
        out.print(Text(line, style="yellow"))


# -- recorder show -----------------------------------------------------------------------


def run_details(out: Console, shown: dict) -> None:
    """`shown` is {"run": the document, "metrics": Store.metrics(), "counts": {...},
    "diff_bytes": size of a diff kept in GridFS or None, "events": the run's documents in
    the events collection (optional)}."""
    run = shown["run"]
    sections = [("", _header), ("config", _config), ("result", _result), ("git", _git),
                ("environment", _environment), ("sources", _sources),
                ("metrics", _metrics), ("diagnoses", _diagnoses),
                ("NaN/Inf and gradients", _events),
                ("artifacts", _artifacts), ("fail trace", _trace)]
    for title, section in sections:
        try:
            body = list(section(run, shown))
        except Exception as exc:  # noqa: BLE001 -- an odd document must not hide the rest
            body = [Text(f"  {MISSING} (unreadable: {type(exc).__name__}: {exc})")]
        if not body:
            continue
        if title:
            out.print(Text(title, style="bold"))
        for item in body:
            out.print(item)
        out.print()


def _pairs(*pairs: tuple[str, Any]) -> Iterable[Text]:
    for label, value in pairs:
        yield Text(f"  {label:<12}{value}")


def _header(run: dict, shown: dict) -> Iterable[Text]:
    name = get(run, "experiment.name")
    title = Text.assemble((f"run {run.get('_id', MISSING)}  ", "bold"),
                          (f"{name if isinstance(name, str) else MISSING}  ", "bold"),
                          status_text(run.get("status")))
    yield title
    incomplete = run_fields.note(run)
    if incomplete:
        yield Text(f"  {incomplete}", style="yellow")
    config_hash = run.get("config_hash")
    argv = get(run, "entrypoint.argv")
    yield from _pairs(
        ("start", _utc_text(run.get("start_time"))),
        ("duration", duration(run)),
        ("host", _text(get(run, "host.hostname"))),
        ("seed", _text(run.get("seed"))),
        ("config hash", config_hash[:12] if isinstance(config_hash, str) else MISSING),
    )
    if isinstance(argv, list):
        launcher = get(run, "entrypoint.launcher")  # `recorder run` started it
        prefix = f"{launcher} " if isinstance(launcher, str) else "python "
        if isinstance(launcher, str) and get(run, "entrypoint.kind") == "module":
            argv = ["-m", get(run, "entrypoint.module"), *argv[1:]]
        yield from _pairs(("command", prefix + " ".join(map(str, argv))))


def _config(run: dict, shown: dict) -> Iterable[Text]:
    config = run.get("config")
    if not isinstance(config, dict):
        yield Text(f"  {MISSING if config is None else value_text(config)}")
        return
    flat = flatten(config)
    if not flat:
        yield Text("  (empty)")
    for key, value in flat.items():
        yield Text(f"  {key} = {value_text(value, 200)}")


def _result(run: dict, shown: dict) -> Iterable[Text]:
    if run.get("result") is None:
        return
    result = run["result"]
    if isinstance(result, dict) and result:
        for key, value in flatten(result).items():
            yield Text(f"  {key} = {value_text(value, 200)}")
    else:
        yield Text(f"  {value_text(result, 200)}")


def _git(run: dict, shown: dict) -> Iterable[Text]:
    git = run.get("git")
    if not isinstance(git, dict):
        yield Text("  not recorded (not a git work tree, or git did not answer)")
        return
    commit, branch = git.get("commit"), git.get("branch")
    commit = commit[:12] if isinstance(commit, str) else "no commit"
    where = f"on {branch}" if isinstance(branch, str) else "detached"
    dirty = git.get("dirty")
    state = "dirty" if dirty is True else "clean" if dirty is False else f"dirty {MISSING}"
    yield from _pairs(("commit", f"{commit} {where}, {state}"),
                      ("remote", _text(git.get("remote"), "none")),
                      ("diff", _diff_text(git, shown.get("diff_bytes"))),
                      ("untracked", (f"{_count(git.get('untracked'))} stored, "
                                     f"{_count(git.get('skipped'))} skipped")))


def _diff_text(git: dict, diff_bytes: int | None) -> str:
    diff = git.get("diff")
    if isinstance(diff, str) and diff:
        changed = sum(1 for line in diff.splitlines()
                      if line[:1] in "+-" and not line.startswith(("+++ ", "--- ")))
        return f"{changed} changed lines"
    if git.get("diff_file_id"):
        size = f"{diff_bytes} bytes" if diff_bytes is not None else "missing from the store"
        return f"diff in GridFS ({size})"
    return "none"


def _environment(run: dict, shown: dict) -> Iterable[Text]:
    env = run.get("environment")
    env = env if isinstance(env, dict) else {}
    version = get(env, "python.version") or get(run, "host.python_version")
    implementation = get(env, "python.implementation")
    python = _text(version) + (f" ({implementation})" if isinstance(implementation, str) else "")
    yield from _pairs(("python", python), ("platform", _text(env.get("platform"))))
    torch = env.get("torch")
    if isinstance(torch, dict):
        cuda = torch.get("cuda")
        yield from _pairs(("torch", _text(torch.get("version"))
                           + (f", cuda {cuda}" if cuda else ", no cuda")))
    gpus = get(run, "host.gpus")
    if isinstance(gpus, list) and gpus:
        names = sorted({str(g.get("name", MISSING)) if isinstance(g, dict) else str(g)
                        for g in gpus})
        yield from _pairs(("gpus", f"{len(gpus)} x {', '.join(names)}"))
    packages = env.get("packages")
    yield from _pairs(("packages", len(packages) if isinstance(packages, dict) else MISSING))


def _sources(run: dict, shown: dict) -> Iterable[Text]:
    sources = get(run, "experiment.sources")
    if not isinstance(sources, list):
        yield Text(f"  {MISSING}")
        return
    names = [s[0] if isinstance(s, (list, tuple)) and s else MISSING for s in sources]
    yield Text(f"  {len(names)} files")
    for name in names[:SOURCES_SHOWN]:
        yield Text(f"  {name}")
    if len(names) > SOURCES_SHOWN:
        yield Text(f"  … and {len(names) - SOURCES_SHOWN} more")


def metric_summary(series: dict) -> dict[str, Any]:
    """count, last, min, max (over finite values) and how many values were NaN or ±Inf."""
    values = [v for v in series.get("values") or [] if isinstance(v, (int, float))]
    finite = [v for v in values if math.isfinite(v)]
    return {"count": len(series.get("values") or []),
            "last": values[-1] if values else None,
            "min": min(finite) if finite else None,
            "max": max(finite) if finite else None,
            "nan": sum(1 for v in values if isinstance(v, float) and math.isnan(v)),
            "inf": sum(1 for v in values if isinstance(v, float) and math.isinf(v))}


def _metrics(run: dict, shown: dict) -> Iterable[Any]:
    metrics, counts = shown.get("metrics") or {}, shown.get("counts") or {}
    if metrics:
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 0, 0, 3))
        for column in ("metric", "count", "last", "min", "max", "non-finite"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for name, series in metrics.items():
            s = metric_summary(series)
            odd = ", ".join(f"{s[k]} {k.replace('nan', 'NaN').replace('inf', 'Inf')}"
                            for k in ("nan", "inf") if s[k])
            table.add_row(Text(name), str(s["count"]),
                          *(value_text(s[k]) if s[k] is not None else "-"
                            for k in ("last", "min", "max")), odd)
        yield Padding(table, (0, 0, 0, 2))
    else:
        yield Text("  none")
    yield from _pairs(*((name, count) for name, count in counts.items()))


def _diagnoses(run: dict, shown: dict) -> Iterable[Text]:
    """What went wrong, each one line with its evidence (recorder/diagnose.py); stored when
    the run ended, computed now for a run still going."""
    for finding in shown.get("findings") or []:
        yield Text(f"  {finding.message}")


def _events(run: dict, shown: dict) -> Iterable[Text]:
    """Where the first NaN/Inf came from, which layers' gradients vanished or exploded, and
    a watch that stopped on an error of its own (the events `recorder.watch` writes)."""
    events = [e for e in shown.get("events") or [] if isinstance(e, dict)]
    origins = sorted((e for e in events if e.get("kind") == "nonfinite" and e.get("origin")),
                     key=_event_step)
    for origin in origins:
        stats = origin.get("stats") if isinstance(origin.get("stats"), dict) else {}
        module_type = origin.get("module_type")
        what = f" ({module_type})" if isinstance(module_type, str) else ""
        if isinstance(stats.get("parameter"), str):  # found by a parameter's gradient
            what += f", the gradient of {stats['parameter']}"
        where = (f"module {_text(origin.get('module'))}{what}, "
                 f"{_text(origin.get('phase'))} pass, step {_text(origin.get('step'))}")
        yield from _pairs(("first NaN", where))
        finite = (f"finite values in [{value_text(stats.get('min'))}, "
                  f"{value_text(stats.get('max'))}]" if stats.get("min") is not None
                  else "no finite values")
        yield Text(f"  {'':<12}shape {_text(stats.get('shape'))}, {_text(stats.get('nan'))} NaN, "
                   f"{_text(stats.get('posinf'))} +Inf, {_text(stats.get('neginf'))} -Inf, "
                   f"{finite}")
        reached = origin.get("propagation")
        if isinstance(reached, list) and reached:
            names = [f"{_text(p.get('module'))} ({_text(p.get('phase'))})"
                     for p in reached if isinstance(p, dict)]
            yield Text(f"  {'':<12}then reached {', '.join(names)}")
    summaries = [e for e in events if e.get("kind") == "nonfinite_summary"]
    if summaries:
        yield from _pairs(("non-finite", ", ".join(
            f"{_text(e.get('module'))} ({_text(e.get('count'))} steps, "
            f"{_text(e.get('first_step'))}-{_text(e.get('last_step'))})"
            for e in sorted(summaries, key=_event_step))))
    for kind in ("vanishing", "exploding"):
        found = sorted((e for e in events if e.get("kind") == kind), key=_event_step)
        if found:
            yield from _pairs((kind, ", ".join(_episode(e) for e in found)))
    for stopped in sorted((e for e in events if e.get("kind") == "watch_stopped"),
                          key=_event_step):
        where = f"{_text(stopped.get('module'))} at step {_text(stopped.get('step'))}"
        yield from _pairs(("watch error", f"{where}: {_text(stopped.get('error'))}"))


def _episode(event: dict) -> str:
    start, end = event.get("start_step", event.get("step")), event.get("end_step")
    stats = event.get("stats") if isinstance(event.get("stats"), dict) else {}
    ratio = stats.get("ratio")
    ratio = f", {ratio:.3g}x the last module's" if isinstance(ratio, (int, float)) else ""
    steps = (f"steps {_text(start)}-{_text(event.get('last_step'))}" if end is not None
             else f"from step {_text(start)}, still at the end")
    return f"{_text(event.get('module'))} ({steps}{ratio})"


def _event_step(event: dict) -> tuple:
    step = event.get("step")
    return (0, step) if isinstance(step, (int, float)) else (1, 0)


def _artifacts(run: dict, shown: dict) -> Iterable[Text]:
    artifacts = run.get("artifacts")
    if not isinstance(artifacts, list) or not artifacts:
        return
    for artifact in artifacts:
        if isinstance(artifact, dict):
            size = artifact.get("size")
            size = f"{size} bytes" if isinstance(size, int) else f"{MISSING} bytes"
            yield Text(f"  {_text(artifact.get('name'))}  {size}")
        else:
            yield Text(f"  {MISSING}")


def _trace(run: dict, shown: dict) -> Iterable[Text]:
    trace = run.get("fail_trace")
    if run.get("status") != "FAILED" or not trace:
        return
    text = "".join(map(str, trace)) if isinstance(trace, list) else str(trace)
    lines = text.rstrip("\n").splitlines()
    if len(lines) > TRACE_LINES:
        yield Text(f"  … {len(lines) - TRACE_LINES} lines above", style="dim")
    for line in lines[-TRACE_LINES:]:
        yield Text(f"  {line}")


def _utc_text(moment: Any) -> str:
    return f"{when(moment)} UTC" if isinstance(moment, datetime) else MISSING


def _text(value: Any, none: str = MISSING) -> str:
    return none if value is None else str(value)


def _count(value: Any) -> Any:
    return len(value) if isinstance(value, list) else MISSING


# -- recorder rm -------------------------------------------------------------------------


def removed(out: Console, report: list[tuple[int, dict[str, int]]]) -> None:
    for run_id, counts in report:
        out.print(Text(f"removed run {run_id}: {counts.get('metrics', 0)} metric chunks, "
                       f"{counts.get('events', 0)} events, {counts.get('histograms', 0)} "
                       f"histograms, {counts.get('embeddings', 0)} embeddings, "
                       f"{counts.get('files', 0)} files"))


def deliveries(out: Console, report: list[dict]) -> None:
    if not report:
        out.print(Text("nothing to sync: no writes are waiting"))
    for d in report:
        run = f"run {d['run_id']}" if d["run_id"] is not None else f"run {d['uid']}"
        line = f"{run}: {d['ops']} writes delivered"
        if d["unreadable"]:
            line += (f"; the last {d['unreadable']} bytes could not be read (a torn write): "
                     f"the file is kept as {d['kept']}")
        out.print(Text(line))


def plotted(out: Console, done) -> None:
    for path in done.written:
        out.print(Text(f"wrote {path}"))
    for reason in done.missing:
        out.print(Text(f"not drawn: {reason}"))
    for finding in done.findings:
        out.print(Text(f"diagnosis: {finding.message}"))
