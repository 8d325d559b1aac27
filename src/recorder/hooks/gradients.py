"""Gradient statistics: the vanishing/exploding definition, its events, and histograms.

"Vanishing" means one thing everywhere (hooks, plots, diagnoses): a module's mean
|grad_output| more than `factor` (default 10) below that of the last module in forward order;
"exploding", more than `exploding_factor` (default: the same) above it. `classify` is that
definition, a pure function of the per-module values, for anything that wants to reuse it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..diagnose import VANISHING_FACTOR, classify  # the one definition: see diagnose.py
from ..run import utcnow
from .fetch import LOW_PRECISION, stored_values

EXPLODING_FACTOR = VANISHING_FACTOR
BINS = 64


class Trends:
    """Vanishing/exploding events of one watched model: one event per module and episode,
    written when it starts (`start_step`) and written again when it ends (`end_step`, the
    first checked step where it no longer held; `last_step`, the last where it did)."""

    def __init__(self, run, factor: float = VANISHING_FACTOR,
                 exploding_factor: float = EXPLODING_FACTOR):
        self.run = run
        self.factor, self.exploding_factor = factor, exploding_factor
        self.open: dict[str, dict] = {}  # module -> its event while the episode lasts
        self._kinds: dict[str, str] = {}  # module -> the kind of its open episode
        self._previous: int | None = None  # the last step checked: every open episode held

    def update(self, step: int, out_mean_abs: Mapping[str, float]) -> None:
        now = classify(out_mean_abs, self.factor, self.exploding_factor)
        previous, self._previous = self._previous, step
        if now == self._kinds:  # the usual step: nothing starts, nothing ends
            return
        self._kinds = now
        reference = list(out_mean_abs.items())[-1] if out_mean_abs else (None, None)
        for module, event in list(self.open.items()):
            if now.get(module) != event["kind"]:
                del self.open[module]
                event.update(end_step=step, last_step=previous, time=utcnow())
                self.run.emit("events", event)
        for module, kind in now.items():
            if module in self.open:
                continue
            value = out_mean_abs[module]
            event = {"kind": kind, "phase": "backward", "module": module, "step": step,
                     "start_step": step, "end_step": None, "last_step": None,
                     "stats": {"out_mean_abs": value, "reference_module": reference[0],
                               "reference_out_mean_abs": reference[1],
                               "ratio": value / reference[1],
                               "factor": self.factor if kind == "vanishing"
                               else self.exploding_factor},
                     "time": utcnow()}
            event["_id"] = self.run.emit("events", event)
            self.open[module] = event


def extremes(tensor: torch.Tensor) -> list[torch.Tensor]:
    """[min, max, sum |x|] on the tensor's device: the first of a histogram's two reads.
    A NaN shows in min and max, an Inf in one of them: finite ends mean finite values."""
    x = _flat(tensor)
    if not x.numel():
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return [zero, zero, zero]
    lo, hi = torch.aminmax(x)
    return [lo, hi, x.abs().sum()]


def histogram_parts(tensor: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """A float64 vector [nan, +inf, -inf, lo, hi, count of bin 0 .. count of bin 63] on the
    tensor's device, for bins of equal width over its finite range [lo, hi] (the last bin
    includes hi; a single value gets a unit-wide range around it, as numpy does). `lo` and
    `hi` are `extremes`, read back: when both are finite there is nothing to mask."""
    x = _flat(tensor)
    if math.isfinite(lo) and math.isfinite(hi):
        lo, hi = (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)
        index = x.sub(lo).mul_(BINS / (hi - lo)).clamp_(0, BINS - 0.5)
        head = torch.tensor([0.0, 0.0, 0.0, lo, hi], dtype=torch.float64, device=x.device)
        return torch.cat([head, _bincount(index, BINS)])
    finite = torch.isfinite(x)  # NaN or Inf in it: the range is that of the finite values
    inf = torch.full((), math.inf, dtype=x.dtype, device=x.device)
    lo_t, hi_t = torch.where(finite, x, inf).min(), torch.where(finite, x, -inf).max()
    same = hi_t <= lo_t
    lo_t, hi_t = torch.where(same, lo_t - 0.5, lo_t), torch.where(same, hi_t + 0.5, hi_t)
    index = ((x - lo_t) * (BINS / (hi_t - lo_t))).nan_to_num(0).clamp(0, BINS - 0.5)
    counts = _bincount(torch.where(finite, index, BINS), BINS + 1)[:BINS]
    head = torch.stack([torch.isnan(x).sum(), (x == inf).sum(), (x == -inf).sum()]).double()
    return torch.cat([head, lo_t.double().reshape(1), hi_t.double().reshape(1), counts])


def histogram_doc(name: str, kind: str, step: int, numel: int, values: list[float]) -> dict:
    """The `histograms` document from a vector made by `histogram_parts` (read back)."""
    nan, posinf, neginf, lo, hi = values[:5]
    counts = [int(c) for c in values[5:5 + BINS]]
    finite = numel - nan - posinf - neginf
    edges = [lo + (hi - lo) * i / BINS for i in range(BINS + 1)] if finite else []
    return {"name": name, "kind": kind, "step": step, "edges": edges,
            "counts": counts if finite else [], "nan": int(nan), "posinf": int(posinf),
            "neginf": int(neginf)}


def abs_stats(numel: int, lo: float, hi: float, sum_abs: float) -> tuple[float, float]:
    """(mean |x|, max |x|) from `extremes`, read back (NaN when there is a NaN)."""
    mean_abs = sum_abs / numel if numel else math.nan
    if math.isnan(lo) or math.isnan(hi):
        return mean_abs, math.nan
    return mean_abs, max(abs(lo), abs(hi))


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """The values, flat. A sparse gradient (`nn.Embedding(sparse=True)`) gives its stored
    values: its histogram counts those; its mean |g| is still over every element."""
    x = stored_values(tensor.detach()).flatten()
    return x.float() if x.dtype in LOW_PRECISION or not x.is_floating_point() else x


def _bincount(position: torch.Tensor, size: int) -> torch.Tensor:
    """Counts of the whole parts of `position` (non-negative floats) as float64. Off the
    CPU without a device sync (`bincount` there reads the largest index first)."""
    if position.is_cpu:  # int32 converts faster than int64, and bincount takes it
        return torch.bincount(position.to(torch.int32), minlength=size).double()
    index = position.to(torch.int64)
    counts = torch.zeros(size, dtype=torch.float64, device=index.device)
    return counts.scatter_add_(0, index, torch.ones_like(index, dtype=torch.float64))
