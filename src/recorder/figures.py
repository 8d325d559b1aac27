"""`recorder plot`: read what a run recorded and write its figures, saying what is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .diagnose import Finding, diagnose
from .store import Store

FORMATS = ("png", "svg")
PROJECTIONS = ("pca", "tsne", "umap")


@dataclass
class Plotted:
    run_id: int
    written: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def plot_run(store: Store, ref: int | str, out: Path, fmt: str = "png",
             projection: str = "pca") -> Plotted:
    from . import plots
    from .errors import RecorderError

    if fmt not in FORMATS:
        raise RecorderError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    if projection not in PROJECTIONS:
        raise RecorderError(f"unknown projection {projection!r}: use {', '.join(PROJECTIONS)}")
    run = store.get_run(ref)
    run_id = run["_id"]
    series = store.metrics(run_id)
    events = store.documents("events", run_id)
    findings = findings_of(run, series, events)
    order = module_order(run)
    figures = {
        "losses": lambda: plots.losses(series, findings),
        "gradient_flow": lambda: plots.gradient_flow(series, order),
        "gradient_histograms": lambda: plots.gradient_histograms(
            store.documents("histograms", run_id), order),
        "nonfinite": lambda: plots.nonfinite_timeline(events),
        "embeddings": lambda: plots.embeddings(store.documents("embeddings", run_id),
                                               _projection(projection)),
    }
    out.mkdir(parents=True, exist_ok=True)
    done = Plotted(run_id, findings=findings)
    for name, draw in figures.items():
        figure = draw()
        if isinstance(figure, str):
            done.missing.append(f"{name}: {figure}")
        else:
            done.written.append(plots.save(figure, out / f"run{run_id}_{name}.{fmt}"))
    return done


def compare_plot(store: Store, refs: list[str], out: Path, fmt: str = "png") -> Path:
    """One figure overlaying the runs' shared metrics; raises when there is nothing to draw."""
    from . import plots
    from .errors import RecorderError
    from .render import compact, config_columns, flatten

    if fmt not in FORMATS:
        raise RecorderError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    runs = [store.get_run(ref) for ref in refs]
    configs = [flatten(run.get("config")) for run in runs]
    keys = [k for k in config_columns(runs, limit=4)
            if len({repr(config.get(k)) for config in configs}) > 1]  # only what differs
    labelled = []
    for run, config in zip(runs, configs, strict=True):
        label = " ".join(f"{k}={compact(config.get(k), 12)}" for k in keys)
        labelled.append((f"run {run['_id']}" + (f": {label}" if label else ""),
                         store.metrics(run["_id"])))
    figure = plots.overlay(labelled)
    if isinstance(figure, str):
        raise RecorderError(f"nothing to plot: {figure}")
    out.mkdir(parents=True, exist_ok=True)
    return plots.save(figure, out / f"compare_{'_'.join(str(r['_id']) for r in runs)}.{fmt}")


def findings_of(run: dict, series: dict, events: list[dict]) -> list[Finding]:
    """The diagnoses stored when the run ended, or computed now for a run still going."""
    stored = run.get("diagnoses")
    if isinstance(stored, list) and run.get("status") != "RUNNING":
        fields = Finding.__dataclass_fields__
        return [Finding(**{k: v for k, v in d.items() if k in fields}) for d in stored
                if isinstance(d, dict) and "kind" in d and "message" in d]
    return diagnose(series, events)


def module_order(run: dict) -> list[str]:
    """Watched modules in forward order, as `recorder.watch` recorded them."""
    info = run.get("info") if isinstance(run.get("info"), dict) else {}
    order: list[str] = []
    for watched in info.get("watched") or []:
        if isinstance(watched, dict):
            order.extend(str(m) for m in watched.get("forward_order") or [])
    return order


def _projection(name: str) -> str:
    """t-SNE and UMAP come from optional packages: say how to get them."""
    from .errors import RecorderError

    needs = {"tsne": ("sklearn", "scikit-learn"), "umap": ("umap", "umap-learn")}
    if name in needs:
        module, package = needs[name]
        try:
            __import__(module)
        except ImportError:
            raise RecorderError(f"--projection {name} needs {package}: pip install "
                                f"'recorder[projections]' (or pip install {package})") from None
    return name
