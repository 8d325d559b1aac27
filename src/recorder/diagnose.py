"""Diagnoses: what went wrong in a run, each one line with its evidence.

The definitions, as a user can check them (n = number of points of the curve):

- Curves longer than 2,000 points are first averaged into 2,000 buckets.
- Smoothing: a centred rolling median of window w = max(5, n // 10) (odd), then a
  centred rolling mean of the same window, the ends padded with the end values. The
  median takes single spikes out; the mean takes out the rest of the noise.
- Overfitting: let m be the point where the smoothed validation loss is lowest. It is
  overfitting when m lies before the last w points, the smoothed validation loss at the
  end is above its minimum by more than max(3 x the noise, 2% of the minimum) — the noise
  being the median absolute deviation of the raw curve from the smoothed one — and the
  smoothed training loss fell after m by more than 1% of its value at m. The onset is the
  step of m: the step after which validation loss rises while training loss falls. A
  single bump that comes back down moves the minimum past it: no alarm.
- Plateau: a stall of the training loss while much improvement is still to come. Let D
  be the smoothed curve's total improvement (first value minus the lowest). Over a window
  of W = max(5, n // 20) points, the curve is stalled where it improves by less than 1% of
  D, while it is still more than 25% of D above its lowest value. A plateau is the first
  run of at least W consecutive stalled windows, reported from the first window's start
  to the last window's end. A curve that never improves is a plateau from start to end.
- Vanishing and exploding gradients: the hooks' definition (recorder.hooks.gradients): a
  module's mean |grad_output| more than 10x below (or above) that of the last module in
  forward order, from its events.
- The first NaN: the origin event recorded by `recorder.watch`.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OVERFIT_MIN_RISE = 0.02
OVERFIT_NOISE_FACTOR = 3.0
OVERFIT_TRAIN_FALL = 0.01
VANISHING_FACTOR = 10.0
MAX_POINTS = 2000  # longer curves are averaged into this many buckets first
PLATEAU_IMPROVEMENT = 0.01
PLATEAU_REMAINING = 0.25

_TRAIN = re.compile(r"^(?P<pre>.*?)(?P<tag>train(?:ing)?)(?P<sep>[/_.\-\s]?)(?P<post>.*)$", re.IGNORECASE)
_VAL_TAGS = ("val", "valid", "validation", "eval", "test", "dev")


@dataclass
class Finding:
    kind: str  # overfitting | plateau | vanishing | exploding | nonfinite
    message: str  # one line, with its evidence
    step: int | None = None
    metric: str | None = None
    end_step: int | None = None
    module: str | None = None

    def as_doc(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def classify(out_mean_abs: Mapping[str, float], factor: float = VANISHING_FACTOR,
             exploding_factor: float | None = None) -> dict[str, str]:
    """{module: "vanishing" | "exploding"} for the modules whose mean |grad_output| is more
    than `factor` below (or `exploding_factor` above) that of the last module in
    `out_mean_abs`, which must be in forward order. Modules within the band, non-finite
    values, and a reference that is 0 or not finite (nothing to compare with) give nothing.
    The one definition of vanishing: the hooks, the plots and the diagnoses all use it."""
    if not out_mean_abs:
        return {}
    exploding_factor = factor if exploding_factor is None else exploding_factor
    reference = list(out_mean_abs.values())[-1]
    if not (math.isfinite(reference) and reference > 0):
        return {}
    found = {}
    for module, value in out_mean_abs.items():
        if not math.isfinite(value):
            continue
        if value * factor < reference:
            found[module] = "vanishing"
        elif value > reference * exploding_factor:
            found[module] = "exploding"
    return found


def smooth(values: Sequence[float]) -> list[float]:
    """Rolling median, then rolling mean, both centred, window max(5, n // 10) made odd;
    the ends are padded with the end values."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    w = window(len(values))
    half = w // 2
    median = np.median(sliding_window_view(np.pad(np.asarray(values, float), half, "edge"), w),
                       axis=1)
    return sliding_window_view(np.pad(median, half, "edge"), w).mean(axis=1).tolist()


def window(n: int) -> int:
    w = max(5, n // 10)
    return w if w % 2 else w + 1


def decimate(steps: Sequence[int], values: Sequence[float], points: int = MAX_POINTS
             ) -> tuple[list[int], list[float]]:
    """A long curve averaged into `points` buckets (each at its first step)."""
    n = len(values)
    if n <= points:
        return list(steps), list(values)
    edges = [round(i * n / points) for i in range(points + 1)]
    return ([steps[a] for a in edges[:-1]],
            [statistics.fmean(values[a:b]) for a, b in itertools.pairwise(edges)])


class Evidence:
    """What a run saw that the diagnoses need, kept as it goes: its loss curves (points of
    metrics whose name contains "loss") and its events. The Run feeds it; `findings` is
    stored on the run when it ends."""

    def __init__(self):
        self.curves: dict[str, dict[str, list]] = {}
        self.events: dict[str, dict] = {}
        self._kept: dict[str, tuple[list, list] | None] = {}  # per name: where its points go

    def add_points(self, points: Sequence[tuple]) -> None:
        kept = self._kept
        for name, step, value, _ in points:
            lists = kept.get(name, False)
            if lists is False:
                lists = kept[name] = self._lists(name)
            if lists is not None:
                lists[0].append(step)
                lists[1].append(value)

    def _lists(self, name: str) -> tuple[list, list] | None:
        if "loss" not in name.lower() or name.startswith("grad/"):
            return None
        curve = self.curves[name] = {"steps": [], "values": []}
        return curve["steps"], curve["values"]

    def add_event(self, doc: Mapping) -> None:
        self.events[str(doc["_id"])] = dict(doc)

    def findings(self) -> list[dict]:
        return [f.as_doc() for f in diagnose(self.curves, list(self.events.values()))]


def loss_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(train, validation) metric pairs: train_loss/val_loss, train/loss/val/loss,
    loss/val_loss, training_acc/validation_acc, ..."""
    names = [n for n in names if not n.startswith("grad/")]
    present, pairs = set(names), []
    for name in names:
        match = _TRAIN.match(name)
        candidates = []
        if match:
            pre, sep, post = match["pre"], match["sep"], match["post"]
            candidates = [f"{pre}{tag}{sep}{post}" for tag in _VAL_TAGS]
        elif not any(name.lower().startswith(t) for t in _VAL_TAGS):
            candidates = [f"{tag}{sep}{name}" for tag in _VAL_TAGS for sep in ("_", "/", "-")]
        found = next((c for c in candidates if c in present and c != name), None)
        if found:
            pairs.append((name, found))
    return pairs


def overfitting(train: Sequence[float], val: Sequence[float], steps: Sequence[int],
                val_name: str = "val_loss") -> Finding | None:
    """The step after which smoothed validation loss rises while training loss falls."""
    points = _aligned(train, val, steps)
    if len(points) < 10:
        return None
    steps_, train_, val_ = zip(*points, strict=True)
    s_val, s_train = smooth(val_), smooth(train_)
    w = window(len(s_val))
    m = min(range(len(s_val)), key=s_val.__getitem__)
    if m >= len(s_val) - w:
        return None
    noise = statistics.median(abs(v - s) for v, s in zip(val_, s_val, strict=True))
    rise = s_val[-1] - s_val[m]
    fall = s_train[m] - s_train[-1]
    if rise <= max(OVERFIT_NOISE_FACTOR * noise, OVERFIT_MIN_RISE * abs(s_val[m])):
        return None
    if fall <= OVERFIT_TRAIN_FALL * abs(s_train[m]):
        return None
    return Finding("overfitting", f"overfitting from step {steps_[m]}: smoothed {val_name} rose "
                   f"{s_val[m]:.4g} -> {s_val[-1]:.4g} while training loss fell "
                   f"{s_train[m]:.4g} -> {s_train[-1]:.4g}", step=steps_[m], metric=val_name)


def plateau(values: Sequence[float], steps: Sequence[int], name: str = "train_loss"
            ) -> Finding | None:
    """The first stall of at least W points while more than a quarter of the improvement
    was still to come."""
    points = [(s, v) for s, v in zip(steps, values, strict=True) if _finite(v)]
    if len(points) < 10:
        return None
    steps_, values_ = zip(*points, strict=True)
    s = smooth(values_)
    best = min(s)
    total = s[0] - best
    if total <= 0:
        return Finding("plateau", f"{name} never improved: {s[0]:.4g} at the start, "
                       f"{s[-1]:.4g} at the end", step=steps_[0], end_step=steps_[-1], metric=name)
    big_w = max(5, len(s) // 20)
    stalled = [i for i in range(len(s) - big_w)
               if s[i] - s[i + big_w] < PLATEAU_IMPROVEMENT * total
               and s[i + big_w] - best > PLATEAU_REMAINING * total]
    run = next((r for r in _runs(stalled) if r[1] - r[0] + 1 >= big_w), None)
    if run is None:
        return None
    first, last = run[0], run[1] + big_w
    return Finding("plateau", f"{name} stalled from step {steps_[first]} to {steps_[last]}: it "
                   f"improved by {s[first] - s[last]:.3g} there, and by "
                   f"{s[last] - best:.3g} more afterwards", step=steps_[first],
                   end_step=steps_[last], metric=name)


def from_events(events: Sequence[Mapping]) -> list[Finding]:
    """The first NaN's origin and the layers whose gradients vanished or exploded."""
    found = []
    origins = [e for e in events if e.get("kind") == "nonfinite" and e.get("origin", True)
               and e.get("step") is not None]
    if origins:
        first = min(origins, key=lambda e: (e["step"], 0 if e.get("phase") == "forward" else 1))
        found.append(Finding("nonfinite", f"first NaN/Inf in module {first.get('module')!r} "
                             f"({first.get('phase')}) at step {first['step']}",
                             step=first["step"], module=first.get("module")))
    for kind in ("vanishing", "exploding"):
        modules = sorted({str(e.get("module")) for e in events if e.get("kind") == kind})
        if modules:
            start = min((e.get("start_step", e.get("step")) for e in events
                         if e.get("kind") == kind and e.get("start_step", e.get("step"))
                         is not None), default=None)
            found.append(Finding(kind, f"{kind} gradients in {', '.join(modules)} "
                                 f"(mean |grad_output| over 10x {'below' if kind == 'vanishing' else 'above'} "
                                 "the last layer's)", step=start))
    return found


def diagnose(series: Mapping[str, Mapping[str, list]], events: Sequence[Mapping] = ()
             ) -> list[Finding]:
    """Every finding for a run's metrics ({name: {steps, values}}) and events."""
    findings: list[Finding] = []
    series = {name: dict(zip(("steps", "values"), decimate(s["steps"], s["values"]),
                             strict=True)) for name, s in series.items()
              if not name.startswith("grad/")}
    for train_name, val_name in loss_pairs(list(series)):
        if "loss" not in train_name.lower():
            continue
        train, val = series[train_name], series[val_name]
        joined = dict(zip(train["steps"], train["values"], strict=False))
        steps = [s for s in val["steps"] if s in joined]
        values = dict(zip(val["steps"], val["values"], strict=False))
        finding = overfitting([joined[s] for s in steps], [values[s] for s in steps], steps,
                              val_name)
        if finding:
            findings.append(finding)
    for name in _training_losses(series):
        finding = plateau(series[name]["values"], series[name]["steps"], name)
        if finding:
            findings.append(finding)
    findings.extend(from_events(events))
    return findings


def _training_losses(series: Mapping[str, Mapping]) -> list[str]:
    paired = {train for train, _ in loss_pairs(list(series))}
    return [n for n in series if "loss" in n.lower() and not n.startswith("grad/")
            and (n in paired or not any(t in n.lower() for t in _VAL_TAGS))]


def _aligned(train, val, steps):
    return [(s, t, v) for s, t, v in zip(steps, train, val, strict=True)
            if _finite(t) and _finite(v)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _runs(indices: list[int]):
    """Runs of consecutive indices, as (first, last)."""
    start = prev = None
    for i in indices:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            yield start, prev
        start = prev = i
    if start is not None:
        yield start, prev
