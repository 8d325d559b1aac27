"""`recorder.watch`: gradient statistics and NaN/Inf events from torch hooks (DESIGN.md 5).

Imported on first use of `recorder.watch`, so that `import recorder` does not import torch.
What runs when is said in `watcher.py`; the events in `nonfinite.py` and `gradients.py`.
"""

from __future__ import annotations

import weakref

from ..run import active_run
from .gradients import EXPLODING_FACTOR, VANISHING_FACTOR, classify
from .nonfinite import NAN_MODES
from .watcher import Watch

__all__ = ["Watch", "classify", "watch"]

_watched: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # run -> its Watch handles


def watch(model, every: int = 1, histograms_every: int | None = 100, nan: str = "record", *,
          weights: bool = False, vanishing_factor: float = VANISHING_FACTOR,
          exploding_factor: float = EXPLODING_FACTOR, name: str | None = None) -> Watch:
    """Record gradient statistics and NaN/Inf events of `model` in the current run.

    A step is one completed backward pass through the model (`loss.backward()`, or
    `torch.autograd.grad` through it; each backward of a gradient accumulation counts;
    forward passes under `torch.no_grad()` count none). Every step, the
    forward outputs and output gradients of every module are checked for NaN/Inf: the first
    module where one appears is recorded in the `events` collection (module, phase, step,
    shape, counts), and `nan="raise"` raises `recorder.NonFiniteError`, `nan="breakpoint"`
    opens the debugger with `module`, `name` and `tensor` in scope. Every `every` steps:
    metrics `grad/<parameter>/norm` and `grad/<parameter>/nonfinite`, and
    `grad/<module>/out_mean_abs` (mean |grad_output|), with vanishing/exploding events
    (a module's value `vanishing_factor` below, or `exploding_factor` above, that of the last
    module in forward order). Every `histograms_every` steps (None: never):
    `grad/<parameter>/mean_abs` and `max_abs`, and 64-bin histograms of the gradients (and
    of the weights with `weights=True`) in the `histograms` collection. Metric steps are
    the watch's steps.

    Names are those of `named_modules()` / `named_parameters()`; the model itself is named
    by its class. `name` prefixes them all ("critic" -> "critic.0.weight"); a second model
    watched in the same run without a name gets "model1", a third "model2", and so on.
    Returns a handle: `.remove()` takes every hook off (also used as a context manager).
    """
    import torch

    run = active_run("watch")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"recorder.watch: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    every = _positive("every", every)
    histograms_every = None if histograms_every is None else _positive(
        "histograms_every", histograms_every)
    if nan not in NAN_MODES:
        raise ValueError(f"recorder.watch: nan={nan!r}; use one of "
                         f"{', '.join(map(repr, NAN_MODES))}")
    for label, factor in (("vanishing_factor", vanishing_factor),
                          ("exploding_factor", exploding_factor)):
        if not isinstance(factor, (int, float)) or not factor > 1:
            raise ValueError(f"recorder.watch: {label}={factor!r}; give a number above 1")
    watched = _watched.setdefault(run, [])
    if name is None:
        name = f"model{len(watched)}" if watched else ""
    prefix = f"{name}." if name else ""
    handle = Watch(run, model, every=every, histograms_every=histograms_every, nan=nan,
                   weights=weights, vanishing_factor=float(vanishing_factor),
                   exploding_factor=float(exploding_factor), prefix=prefix)
    watched.append(handle)
    return handle


def _positive(label: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"recorder.watch: {label}={value!r}; give a whole number of steps, "
                         "1 or more")
    return value
