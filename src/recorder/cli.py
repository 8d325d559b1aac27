"""The `recorder` command: wiring only. Each command resolves its arguments, makes one call
into the store, and renders the answer with `render` (for people, or `--json`)."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import render
from .errors import RecorderError, ReplayError, StoreError
from .redact import mask_url_passwords
from .store import Store, backend_for, resolve_url
from .where import run_filter

STORE_URL = "recorder.store_url"  # key in click's context meta, for error messages


class _Commands(TyperGroup):
    """The one place known errors become `recorder: error: ...` and exit status 2."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _known_error(exc, ctx.meta.get(STORE_URL))
            if message is None:
                raise
            if os.environ.get("RECORDER_DEBUG"):
                traceback.print_exc()
            else:
                message += " (set RECORDER_DEBUG=1 to see the traceback)"
            print(f"recorder: error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None


def _known_error(exc: Exception, url: str | None) -> str | None:
    if isinstance(exc, RecorderError):
        return str(exc)
    from pymongo.errors import PyMongoError

    if isinstance(exc, PyMongoError):
        url = url or mask_url_passwords(resolve_url(None))
        reason = str(exc).split(", Timeout:")[0].splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot reach the store {url}: {mask_url_passwords(reason)[:200]}"
    return None


app = typer.Typer(
    cls=_Commands,
    help="Look at, query and remove the runs recorded by @recorder.experiment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # plain tracebacks; rich's shows locals (secrets)
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _remember_store(ctx: typer.Context, store: str | None) -> str | None:
    """Keep the store's printable URL where the error handler can name it."""
    ctx.meta[STORE_URL] = mask_url_passwords(resolve_url(store))
    return store


StoreOpt = Annotated[str | None, typer.Option(
    "--store", metavar="URL|PATH", show_default=False, callback=_remember_store,
    help="The store: mongodb://…, mongomock://…, or a directory "
         "(default: $RECORDER_STORE, else ./.recorder).")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help='Print JSON (datetimes as ISO strings, NaN/±Inf as "NaN"/"Infinity").')]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")]


def open_store(store: str | None) -> Store:
    """The store named by --store; a read never creates an embedded store at a mistyped path."""
    backend = backend_for(store)
    if backend.kind == "embedded" and not Path(backend.url).is_dir():
        where = "--store" if store is not None else (
            "RECORDER_STORE" if os.environ.get("RECORDER_STORE") else "the default store")
        raise StoreError(f"no store at {backend.url} ({where}): give --store or set "
                         "RECORDER_STORE to where your runs were recorded")
    return Store(backend.connect(), backend.write_lock, backend.url)


def _version(value: bool) -> None:
    if value:
        try:
            print(f"recorder {version('recorder')}")
        except PackageNotFoundError:
            print("recorder (version unknown: not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    _: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                    help="Print the version and exit.")] = False,
) -> None:
    pass


@app.command("run", context_settings={
    "allow_extra_args": True, "ignore_unknown_options": True,
    "allow_interspersed_args": False})  # everything after SCRIPT is the script's, untouched
def run(
    script: Annotated[str, typer.Argument(
        metavar="SCRIPT", help="The Python file (with -m: the module) to run.")],
    args: Annotated[list[str] | None, typer.Argument(
        metavar="ARGS", help="The script's arguments, passed on untouched.")] = None,
    module: Annotated[bool, typer.Option(
        "-m", help="Run SCRIPT as a module, as `python -m SCRIPT` does.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="The experiment's name (default: the script's file name).")] = None,
    store: StoreOpt = None,
    patterns: Annotated[list[str] | None, typer.Option(
        "--metric-pattern", metavar="REGEX",
        help="Lines of stdout to read as metrics: a regex with groups (?P<name>...) and "
             "(?P<value>...), or NAME=REGEX with a (?P<value>...) group. Repeatable; added "
             "to the default patterns (name: 1.5, name=1.5, | name 1.5 |).")] = None,
    no_default_patterns: Annotated[bool, typer.Option(
        "--no-default-patterns", help="Read only the --metric-pattern patterns.")] = False,
) -> None:
    """Run a script as `python SCRIPT ARGS...` would, recorded as a run: argparse's values as
    the config, metrics from the lines it prints. Exits with the script's exit status."""
    from .launch import exit_interrupted, launch

    try:
        code = launch(script, args or [], module=module, name=name, store=store,
                      patterns=patterns or [], default_patterns=not no_default_patterns)
    except KeyboardInterrupt:
        exit_interrupted()
    raise typer.Exit(code)


@app.command("ls")
def ls(
    store: StoreOpt = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", "-e", help="Only runs of this experiment (its name).")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", "-s", help="Only runs with this status (any case): COMPLETED, FAILED, "
                               "RUNNING, INTERRUPTED, DIED, QUEUED.")] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", "-w", metavar="KEY<OP>VALUE",
        help="e.g. 'config.lr<0.01'; OP is = != < <= > >=; the value is typed (int, float, "
             "true/false, null) unless quoted ('\"1\"'). Repeatable.")] = None,
    query: Annotated[str | None, typer.Option(
        "--query", "-q", metavar="JSON", help="A MongoDB filter, e.g. "
        '\'{"config.lr": {"$lt": 0.01}}\'.')] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=0, help="Show at most this many runs, newest first; 0: all.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first. All filters must hold."""
    selected = run_filter(experiment=experiment, status=status, where=where, query=query)
    db = open_store(store)
    runs = db.find_runs(selected, limit=limit + 1 if limit else 0,
                        projection=None if as_json else _LS_FIELDS)
    more = bool(limit) and len(runs) > limit
    runs = runs[:limit] if limit else runs
    if as_json or runs:
        render.emit(runs, as_json, render.runs_table)
    else:
        print(f"no runs {'match the filters ' if selected else ''}in {db.url}")
    if more and not as_json:
        print(f"(the {limit} newest shown: --limit 0 shows all)")


_LS_FIELDS = {"experiment.name": 1, "status": 1, "start_time": 1, "stop_time": 1,
              "config": 1, "result": 1}


@app.command("show")
def show(run: RunArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show everything recorded about one run."""
    db = open_store(store)
    doc = db.get_run(run)
    if as_json:
        return render.emit(doc, True, render.run_details)
    from .figures import findings_of

    run_id, diff_id = doc["_id"], render.get(doc, "git.diff_file_id")
    metrics, events = db.metrics(run_id), db.documents("events", run_id)
    shown = {"run": doc, "metrics": metrics, "events": events,
             "findings": findings_of(doc, metrics, events),
             "counts": {name: db.count(name, run_id) for name in ("events", "histograms")},
             "diff_bytes": db.file_length(diff_id) if isinstance(diff_id, str) else None}
    render.emit(shown, False, render.run_details)


@app.command("rm")
def rm(runs: Annotated[list[str], typer.Argument(metavar="RUN",
                                                 help="Run ids, or 'last'.")],
       store: StoreOpt = None) -> None:
    """Remove runs: their metrics, events, histograms, and files no other run uses.

    Every RUN is checked before anything is removed."""
    db = open_store(store)
    run_ids = list(dict.fromkeys(db.get_run(ref)["_id"] for ref in runs))
    for run_id in run_ids:
        render.emit([(run_id, db.delete_run(run_id))], False, render.removed)


@app.command("plot")
def plot(
    run: RunArg,
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option("--out", help="The folder for the figures.")] = Path(
        "recorder-plots"),
    fmt: Annotated[str, typer.Option("--format", help="png or svg.")] = "png",
    projection: Annotated[str, typer.Option(
        "--projection", help="How embeddings are drawn in 2-D: pca, tsne or umap.")] = "pca",
) -> None:
    """Draw a run's figures: losses, gradient flow and histograms, NaN timeline, embeddings."""
    from .figures import plot_run

    render.emit(plot_run(open_store(store), run, out, fmt, projection), False, render.plotted)


@app.command("sync")
def sync(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Deliver the writes that runs kept on disk while the store was unreachable."""
    from .sync import sync as deliver_spools

    deliveries = [asdict(d) for d in deliver_spools(store)]
    render.emit(deliveries, as_json, render.deliveries)


# -- replay, sources, compare, env (recorder/replay/) ------------------------------------

TreeDirOpt = Annotated[Path, typer.Option("--out", metavar="DIR", help=(
    "Where to write the tree: a new or empty directory."))]
ToleranceOpt = Annotated[float, typer.Option(
    "--tolerance", metavar="X", min=0.0,
    help="Values are equal when |a-b| <= X*max(|a|,|b|) (default 0: exact; NaN equals NaN).")]
IgnoreOpt = Annotated[list[str] | None, typer.Option(
    "--ignore", metavar="PATTERN",
    help="Metrics shown but not judged, e.g. timings: '*_time'. Repeatable.")]


@app.command("replay")
def replay(
    run: RunArg,
    store: StoreOpt = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse to run on any difference of environment or data.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Rebuild the tree and check the environment; run nothing.")] = False,
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", metavar="DIR", help="Rebuild the tree in DIR (new or empty; kept) "
                                         "instead of a temporary directory.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary tree.")] = False,
    tolerance: ToleranceOpt = 0.0,
    assignments: Annotated[list[str] | None, typer.Option(
        "--set", metavar="NAME=VALUE", help="A value that was redacted as a secret when the "
        "run was recorded (or set RECORDER_SET_<NAME>). Repeatable.")] = None,
    ignore: IgnoreOpt = None,
    compare_all: Annotated[bool, typer.Option(
        "--compare-all", help="Judge timing metrics too (time, ms/batch, *_sec, it/s...: "
                              "shown, not judged, by default).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-run a run with its exact settings: exit 0 reproduced, 1 diverged, 2 could not replay."""
    from .replay import report
    from .replay.runner import run_replay

    result = run_replay(run, store=store, strict=strict, dry_run=dry_run, workdir=workdir,
                        keep=keep, tolerance=tolerance, secrets=_assigned(assignments or []),
                        ignore=ignore or (), compare_all=compare_all,
                        output=sys.stderr if as_json else sys.stdout,
                        on_ready=None if as_json else report.printer(report.plan))
    render.emit(result.to_dict() if as_json else result, as_json, report.result)
    if result.verdict == "could not replay":
        raise ReplayError(result.reason)
    raise typer.Exit(result.exit_code)


def _assigned(assignments: list[str]) -> dict[str, str]:
    pairs = [a.partition("=") for a in assignments]
    bad = next((a for a, (_, eq, _) in zip(assignments, pairs) if not eq), None)
    if bad is not None:
        raise ReplayError(f"--set {bad!r}: write NAME=VALUE")
    return {name: value for name, _, value in pairs}


@app.command("sources")
def sources(run: RunArg, out: TreeDirOpt, store: StoreOpt = None, as_json: JsonOpt = False
            ) -> None:
    """Write a run's source tree (rebuilt as replay does) to DIR, without running anything."""
    from .replay import report
    from .replay.tree import rebuild

    db = open_store(store)
    tree = rebuild(db.get_run(run), db, out, search=[Path.cwd()], cwd_layout=False)
    render.emit(tree.to_dict() if as_json else tree, as_json, report.tree)


@app.command("compare")
def compare(runs: Annotated[list[str], typer.Argument(
                metavar="A B [C ...]", help="Run ids, or 'last'; each is compared with A.")],
            store: StoreOpt = None, tolerance: ToleranceOpt = 0.0, ignore: IgnoreOpt = None,
            plot: Annotated[bool, typer.Option(
                "--plot", help="Also draw the runs' shared metrics, one colour per run.")] = False,
            out: Annotated[Path, typer.Option("--out", help="The folder for --plot.")] = Path(
                "recorder-plots"),
            as_json: JsonOpt = False) -> None:
    """Runs side by side: config, code (a diff of their trees), environment, metrics."""
    from .replay import report
    from .replay.runs import compare_runs

    if len(runs) < 2:
        raise RecorderError("compare needs at least two runs: recorder compare A B [C ...]")
    db = open_store(store)
    for other in runs[1:]:
        found = compare_runs(db, runs[0], other, tolerance, ignore or ())
        render.emit(found.to_dict() if as_json else found, as_json, report.comparison)
    if plot:
        from .figures import compare_plot

        print(f"wrote {compare_plot(db, runs, out)}", file=sys.stderr if as_json else sys.stdout)


@app.command("env")
def env(run: RunArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """A run's packages as a requirements list, pinned to the recorded versions."""
    from .replay import report
    from .replay.environment import requirements

    doc = open_store(store).get_run(run)
    shown = {"run": doc["_id"], "packages": render.get(doc, "environment.packages"),
             "python": render.get(doc, "environment.python.version")}
    render.emit(shown if as_json else requirements(doc), as_json, report.requirements)


def main() -> None:
    app(prog_name="recorder")
