"""Figures drawn from what a run recorded, with the diagnoses written on them.

Figures are made with matplotlib's object API (`Figure`, no pyplot): nothing global is
switched, and no display is needed. Each figure function takes plain data (what
`recorder plot` read from the store) and returns a Figure, or the reason it has nothing
to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .diagnose import Finding, classify, loss_pairs

VANISHING_COLOR, EXPLODING_COLOR, NORMAL_COLOR = "#d62728", "#ff7f0e", "#1f77b4"
GRADIENT_STAT = "out_mean_abs"


def losses(series: Mapping[str, Mapping[str, list]], findings: Sequence[Finding] = ()
           ) -> Figure | None | str:
    """Train/validation pairs on shared axes, other metrics in panels of their own; the
    onset of overfitting as a dotted vertical line."""
    user = {n: s for n, s in series.items() if not n.startswith("grad/")}
    if not user:
        return "no metrics were logged"
    pairs = loss_pairs(list(user))
    paired = {name for pair in pairs for name in pair}
    panels: list[tuple[str, ...]] = [*pairs, *((n,) for n in user if n not in paired)]
    fig, axes = _panels(len(panels), 3, (5, 3.6))
    onsets = {f.metric: f for f in findings if f.kind == "overfitting"}
    for ax, names in zip(axes, panels, strict=True):
        for name in names:
            ax.plot(user[name]["steps"], _floats(user[name]["values"]), label=name)
            if name in onsets:
                onset = onsets[name]
                ax.axvline(onset.step, linestyle=":", color="black", gid="overfitting-onset")
                ax.annotate(f"overfitting from step {onset.step}", (onset.step, 0.95),
                            xycoords=("data", "axes fraction"), ha="left", va="top",
                            fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(" vs ".join(names), fontsize=10)
        ax.legend(fontsize=8)
    notes = [f.message for f in findings if f.kind in ("overfitting", "plateau")]
    if not pairs:
        notes.append("no validation metric: overfitting cannot be judged")
    _footer(fig, notes)
    return fig


def gradient_flow(series: Mapping[str, Mapping[str, list]], order: Sequence[str] = (),
                  factor: float = 10.0) -> Figure | str:
    """Mean |grad_output| per module in forward order at the last recorded step (log scale,
    vanishing modules in red), and the same for every module and step as a heat map."""
    flow = {"/".join(n.split("/")[1:-1]): s for n, s in series.items()
            if n.startswith("grad/") and n.endswith(f"/{GRADIENT_STAT}")}
    if not flow:
        return "no gradient statistics: call recorder.watch(model) to record them"
    modules = [m for m in order if m in flow] + [m for m in flow if m not in order]
    steps = sorted({s for m in modules for s in flow[m]["steps"]})
    last = {m: dict(zip(flow[m]["steps"], flow[m]["values"], strict=False)) for m in modules}
    final_step = steps[-1]
    final = {m: last[m].get(final_step, math.nan) for m in modules}
    kinds = classify(final, factor)
    colors = [{"vanishing": VANISHING_COLOR, "exploding": EXPLODING_COLOR}.get(kinds.get(m),
              NORMAL_COLOR) for m in modules]
    fig = Figure(figsize=(13, max(4, 0.35 * len(modules) + 2)))
    bars, heat = fig.subplots(1, 2)
    bars.bar(range(len(modules)), [final[m] for m in modules], color=colors)
    bars.set_yscale("log")
    bars.set_xticks(range(len(modules)), modules, rotation=60, ha="right", fontsize=8)
    bars.set_ylabel("mean |grad_output|")
    bars.set_title(f"gradient flow at step {final_step} (red: over {factor:g}x below the "
                   "last layer)", fontsize=10)
    grid = np.array([[last[m].get(s, np.nan) for s in steps] for m in modules], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        image = heat.imshow(np.log10(grid), aspect="auto", interpolation="nearest",
                            extent=(steps[0] - 0.5, steps[-1] + 0.5, len(modules) - 0.5, -0.5))
    heat.set_yticks(range(len(modules)), modules, fontsize=8)
    heat.set_xlabel("step")
    heat.set_title("log10 mean |grad_output|, module x step", fontsize=10)
    fig.colorbar(image, ax=heat)
    _footer(fig, [f"{kind}: {m}" for m, kind in kinds.items()])
    return fig


def gradient_histograms(histograms: Sequence[Mapping[str, Any]], order: Sequence[str] = ()
                        ) -> Figure | str:
    """One small panel per layer, first to last, each with its histograms at every
    recorded step (later steps darker)."""
    grads = [h for h in histograms if h.get("kind", "grad") == "grad"]
    if not grads:
        return "no gradient histograms: recorder.watch records them every histograms_every steps"
    names = list(dict.fromkeys(h["name"] for h in grads))
    names = sorted(names, key=lambda n: _rank(n, order))
    fig, axes = _panels(len(names), 4, (3.6, 2.6))
    steps = sorted({h["step"] for h in grads})
    shades = colormaps["viridis"](np.linspace(0.15, 0.9, len(steps)))
    for ax, name in zip(axes, names, strict=True):
        for h in sorted((h for h in grads if h["name"] == name), key=lambda h: h["step"]):
            edges = np.asarray(h["edges"], dtype=float)
            ax.stairs(h["counts"], edges, color=shades[steps.index(h["step"])],
                      label=f"step {h['step']}")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    return fig


def nonfinite_timeline(events: Sequence[Mapping[str, Any]]) -> Figure | str:
    """NaN/Inf per step and module: the origin as a red star, the modules it reached in
    that step as grey dots, and each module's later non-finite steps as a grey span."""
    origins = [e for e in events if e.get("kind") == "nonfinite" and e.get("origin")]
    spans = [e for e in events if e.get("kind") == "nonfinite_summary"]
    if not origins and not spans:
        return "no NaN or Inf was recorded"
    rows: list[str] = []
    for origin in origins:
        rows.append(str(origin.get("module")))
        rows.extend(str(p.get("module")) for p in origin.get("propagation") or [])
    rows.extend(str(e.get("module")) for e in spans)
    rows = list(dict.fromkeys(rows))
    fig = Figure(figsize=(9, max(3, 0.4 * len(rows) + 1.5)))
    ax = fig.subplots()
    for span in spans:
        y = rows.index(str(span.get("module")))
        ax.plot([span.get("first_step"), span.get("last_step")], [y, y], color="grey",
                linewidth=3, alpha=0.5)
        ax.annotate(f"{span.get('count')} steps", (span.get("last_step"), y),
                    textcoords="offset points", xytext=(4, -3), fontsize=7)
    for origin in origins:
        step = origin.get("step")
        reached = [rows.index(str(p.get("module"))) for p in origin.get("propagation") or []]
        if reached:
            ax.scatter([step] * len(reached), reached, s=30, color="grey", zorder=3)
        y = rows.index(str(origin.get("module")))
        ax.scatter([step], [y], marker="*", s=200, color=VANISHING_COLOR, zorder=4, gid="origin")
        ax.annotate(f"origin ({origin.get('phase')}, step {step})", (step, y),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("step")
    ax.set_title("non-finite values: where they started and where they went", fontsize=10)
    return fig


def embeddings(snapshots: Sequence[Mapping[str, Any]], projection: str = "pca") -> Figure | str:
    """Each logged embedding projected to 2-D and coloured by label."""
    if not snapshots:
        return "no embeddings: log them with recorder.log_embedding(name, tensor, labels)"
    fig, axes = _panels(len(snapshots), 3, (4.5, 4))
    for ax, snap in zip(axes, snapshots, strict=True):
        vectors = np.frombuffer(bytes(snap["vectors"]), dtype="<f4").reshape(snap["shape"])
        points = project(vectors, projection)
        labels = snap.get("labels")
        if labels:
            for label in sorted(set(labels), key=str):
                mask = np.array([lab == label for lab in labels])
                ax.scatter(points[mask, 0], points[mask, 1], s=8, label=str(label))
            ax.legend(fontsize=6, markerscale=2)
        else:
            ax.scatter(points[:, 0], points[:, 1], s=8)
        ax.set_title(f"{snap['name']} at step {snap.get('step')} ({projection})", fontsize=9)
    return fig


def overlay(runs: Sequence[tuple[str, Mapping[str, Mapping[str, list]]]]) -> Figure | str:
    """The metrics every run has, one panel each, one colour per run (labelled in the legend
    with the config values that differ between the runs)."""
    shared = [n for n in runs[0][1] if not n.startswith("grad/")
              and all(n in series for _, series in runs[1:])]
    if not shared:
        return "the runs have no metric in common"
    fig, axes = _panels(len(shared), 3, (5, 3.6))
    for ax, name in zip(axes, shared, strict=True):
        for color, (label, series) in zip(colormaps["tab10"].colors, runs, strict=False):
            ax.plot(series[name]["steps"], _floats(series[name]["values"]), color=color,
                    label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 3), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.04 * math.ceil(len(runs) / 3)))
    fig.tight_layout()
    return fig


def project(vectors: np.ndarray, method: str = "pca") -> np.ndarray:
    """N x D -> N x 2: PCA (numpy), or t-SNE / UMAP when their packages are installed."""
    vectors = np.nan_to_num(np.asarray(vectors, dtype=float))
    if method == "pca" or len(vectors) < 3:
        centred = vectors - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(30, len(vectors) - 1),
                    random_state=0).fit_transform(vectors)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=0).fit_transform(vectors)
    raise ValueError(f"unknown projection {method!r}: use pca, tsne or umap")


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _panels(n: int, max_cols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    """A figure of `n` panels in rows of at most `max_cols`; the spare cells are hidden."""
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _footer(fig: Figure, notes: Sequence[str]) -> None:
    if notes:
        fig.text(0.01, -0.02, "\n".join(notes), fontsize=8, va="top", ha="left")
    fig.tight_layout()


def _floats(values: Sequence) -> list[float]:
    return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]


def _rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    """Parameters `0.weight` follow their module `0` in forward order."""
    module = name.rsplit(".", 1)[0]
    return (order.index(module) if module in order else len(order), name)
