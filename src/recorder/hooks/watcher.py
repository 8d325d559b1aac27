"""The hooks of one watched model, and what they do at each step.

A step is one completed backward pass through the model's outputs: the first gradient hook
of a backward pass queues a callback that the autograd engine runs once that pass has
finished (every parameter's `.grad` accumulated). Forward passes without a backward
(`torch.no_grad()` evaluation) count none; under gradient accumulation each backward is a
step.

Every step (the minimum that finding the first NaN/Inf needs):
  forward   a hook per module keeps its output, and puts a pre-hook on the output's
            autograd node for the backward;
  backward  that pre-hook keeps the output's gradient;
  end       the L2 norms of all of them (NaN and Inf survive a norm), made by one fused
            `_foreach_norm` on their device and read with one `.tolist()`: a reduction
            per tensor in a single call, not one call per tensor, which costs a dispatch each
            (measured in tests/bench/bench_hooks.py). Only if one is not finite is anything
            more computed (`nonfinite.py`). Outputs and gradients are kept until then (so the
            culprit can be examined exactly), and dropped after: the memory of one step's
            module outputs and output gradients, held until the end of its backward. An
            output changed in place later in its pass (`ReLU(inplace=True)` after a Linear)
            is checked as it stands then, and its event says so. A pass under `no_grad` is
            checked at its own end; a grad-mode pass that no backward follows, at the end
            of the next pass.
Every `every` steps, in the same read: per parameter the L2 norm of `.grad` (in the same
fused call) and its non-finite count (0 when the norm is finite: counted only when it is
not), per module the mean |grad_output| (the sum of |g| takes the place of the gradient's
norm as its check), and the vanishing/exploding check (`gradients.py`). `.grad` as it stands after the backward: under
gradient accumulation, the running sum.
Every `histograms_every` steps: per parameter mean |g|, max |g| and a histogram of the
gradient (and of the weights with `weights=True`): their extremes come in that read, the bins
(made with them) in a second one.
"""

from __future__ import annotations

import bdb
import functools
import math
import sys
from typing import Self

import torch
from torch import Tensor

from .. import run as runs
from ..errors import NonFiniteError
from .fetch import LOW_PRECISION, fetch, norms, stored_values
from .gradients import Trends, abs_stats, extremes, histogram_doc, histogram_parts
from .nonfinite import Candidate, NonFiniteEvents

_engine = torch.autograd.Variable._execution_engine
_in_backward = getattr(torch._C, "_current_graph_task_id", lambda: -1)


def _guarded(hook):
    """A failure inside the watch's own hooks (a tensor kind it cannot read, say) stops the
    watch, never the training step: it is said once on stderr and recorded as a
    `watch_stopped` event. `nan="raise"` and quitting `nan="breakpoint"`'s debugger are the
    user's choices, and go through."""
    @functools.wraps(hook)
    def guarded(self, *args):
        try:
            return hook(self, *args)
        except (NonFiniteError, bdb.BdbQuit):
            raise
        except Exception as exc:  # noqa: BLE001 - the training goes on whatever happened here
            self._stop(exc)
    return guarded


class Watch:
    """What `recorder.watch` returns: `.remove()` takes every hook off; `.step` is the
    number of steps (backward passes) seen so far. Also a context manager."""

    def __init__(self, run, model: torch.nn.Module, *, every: int, histograms_every: int,
                 nan: str, weights: bool, vanishing_factor: float, exploding_factor: float,
                 prefix: str):
        self.model = model
        self.step = 0
        self.every, self.histograms_every, self.weights = every, histograms_every, weights
        self._run = run
        named = list(model.named_modules())
        root = prefix.rstrip(".") or type(model).__name__
        self._names = [prefix + n if n else root for n, _ in named]
        self._modules = [m for _, m in named]
        self._params = [(prefix + n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._metric = {n: {s: f"grad/{n}/{s}" for s in ("norm", "nonfinite", "mean_abs",
                                                         "max_abs", "out_mean_abs")}
                        for n in [*self._names, *(n for n, _ in self._params)]}
        self._order: dict[int, None] = {}  # module indices in the order their outputs appear
        self._root = root
        self._recorded_order: list[str] = []
        self._fwd: list[tuple] = []  # (module index, output, its version)
        self._seen: dict[int, tuple] = {}  # id(output) -> (output, its version, probe)
        self._bwd: list[tuple] = []  # (probe: module indices, grad, its version)
        self._pending_pass = False  # a grad-mode pass whose check waits for the backward
        self._graph_handles: list = []  # hooks put on the autograd nodes of this step
        self._queued = False
        self._sampled = True  # this step computes the `every` statistics
        self._limit = 8 * len(named) + 64  # entries kept before a check (submodule calls)
        self._off = False
        self.nonfinite = NonFiniteEvents(run, nan)
        self.trends = Trends(run, vanishing_factor, exploding_factor)
        self._handles = [m.register_forward_hook(ForwardHook(self._on_forward, i))
                         for i, m in enumerate(self._modules)]

    # -- forward -------------------------------------------------------------------------

    @_guarded
    def _on_forward(self, index: int, module, args, output) -> None:
        """The hot path (every module, every pass): the output kept, a hook for its
        gradient."""
        if self._off:
            return
        if type(output) is Tensor:
            outputs = (output,)
        elif isinstance(output, (tuple, list, dict)):
            outputs = tuple(_tensors(output))
        else:
            outputs = ()
        for t in outputs:
            if not t.is_floating_point():
                continue
            seen = self._seen.get(id(t))
            if seen is not None and seen[0] is t and seen[1] == t._version:
                # the same tensor as a module before (a container's output): its hook
                self._fwd.append((index, t, seen[1]))
                if seen[2] is not None:
                    seen[2].append(index)
                continue
            version = t._version
            self._fwd.append((index, t, version))
            probe = None
            node = t.grad_fn
            if node is not None:  # a pre-hook on the node that made `t` sees t's gradient
                probe = [index]
                self._graph_handles.append(node.register_prehook(
                    functools.partial(self._on_grad, probe, t.output_nr)))
            self._seen[id(t)] = (t, version, probe)
        if index not in self._order:
            self._order[index] = None
        if index == 0:
            self._end_pass()
        elif len(self._fwd) > self._limit:
            self._check_forward()

    def _end_pass(self) -> None:
        """The root module's forward ended. Its check waits for the backward (one read per
        step), unless there will be none: under no_grad, check now."""
        self._seen = {}
        if runs.current_run() is not self._run:  # the run ended: stop recording into it
            return self.remove()
        if not self._queued and _in_backward() == -1 and self._pending_pass:
            self._check_forward()  # an earlier grad-mode pass that no backward followed
        self._pending_pass = torch.is_grad_enabled()
        if not self._pending_pass:
            self._check_forward()

    def _check_forward(self) -> None:
        entries, self._fwd = self._fwd, []
        self._pending_pass = False
        with torch.no_grad():
            values, _ = fetch(norms([e[1] for e in entries]))
        if not math.isfinite(sum(values)):
            self._report("forward", entries, values)

    # -- backward ------------------------------------------------------------------------

    @_guarded
    def _on_grad(self, probe: list, output_nr: int, grad_outputs) -> None:
        g = grad_outputs[output_nr]
        if g is None or self._off:
            return
        if not self._queued:
            self._queued = True
            _engine.queue_callback(self._end_step)
        self._bwd.append((probe, g, g._version))

    @_guarded
    def _end_step(self) -> None:
        """Run by the autograd engine when the backward pass has finished."""
        self._queued = False
        if self._off:
            return
        if runs.current_run() is not self._run:  # the run ended: stop recording into it
            return self.remove()
        step, sampled = self.step, self._sampled
        histograms = bool(self.histograms_every) and step % self.histograms_every == 0
        fwd, self._fwd, self._pending_pass = self._fwd, [], False
        bwd, self._bwd = self._bwd, []
        grads = [(n, p.grad) for n, p in self._params if p.grad is not None] \
            if sampled or histograms else []
        shown = ([(n, g, "grad") for n, g in grads]
                 + [(n, p, "weight") for n, p in self._params if self.weights]
                 if histograms else [])
        fwd_values, bwd_values, norm_values, ends = _read_step(
            [e[1] for e in fwd], [e[1] for e in bwd], [g for _, g in grads] if sampled else None,
            [t for _, t, _ in shown])
        # their backward has run: let the handles go now (young objects are cheap to free;
        # a graph kept with retain_graph keeps inert hooks: they check `_off` first)
        self._graph_handles = []
        if sampled:
            self._log_sampled(step, bwd, bwd_values, grads, norm_values)
        if histograms:
            self._log_histograms(step, shown, ends)
        self.step = step + 1  # counted once its statistics are in (a failure names its step)
        self._sampled = self.step % self.every == 0
        if not math.isfinite(sum(fwd_values)):
            self._report("forward", fwd, fwd_values, step)
        if not math.isfinite(sum(bwd_values)):
            self._report("backward", bwd, bwd_values, step)

    def _report(self, phase: str, entries: list, values: list, step: int | None = None):
        bad = []
        for entry, v in zip(entries, values):
            if not math.isfinite(v):
                indices = [entry[0]] if phase == "forward" else entry[0]
                bad += [Candidate(self._names[i], self._modules[i], phase, entry[1], entry[2])
                        for i in indices]
        self.nonfinite.report(self.step if step is None else step, bad)

    # -- statistics ----------------------------------------------------------------------

    def _log_sampled(self, step: int, bwd: list, sums: list, grads: list, norm_values: list):
        log, metric = self._run.log, self._metric
        total: dict[int, list] = {}
        for (probe, g, _), s in zip(bwd, sums):
            for i in probe:
                acc = total.setdefault(i, [0.0, 0])
                acc[0] += s
                acc[1] += g.numel()
        out_mean_abs = {}
        for i in self._order:
            if i in total:
                name, (s, n) = self._names[i], total[i]
                out_mean_abs[name] = s / n if n else math.nan
                log(metric[name]["out_mean_abs"], out_mean_abs[name], step)
        counts = self._nonfinite_counts(grads, norm_values)
        for (name, _), norm, count in zip(grads, norm_values, counts):
            log(metric[name]["norm"], norm, step)
            log(metric[name]["nonfinite"], count, step)
        self._record_order()
        self.trends.update(step, out_mean_abs)

    @staticmethod
    def _nonfinite_counts(grads: list, norm_values: list) -> list[int]:
        """0 where the norm is finite; counted exactly (one more read) only where it is not."""
        odd = [i for i, v in enumerate(norm_values) if not math.isfinite(v)]
        counts = [0] * len(norm_values)
        exact, _ = fetch([(~torch.isfinite(stored_values(grads[i][1]))).sum() for i in odd])
        for i, c in zip(odd, exact):
            counts[i] = int(c)
        return counts

    def _log_histograms(self, step: int, shown: list, ends: list) -> None:
        """Histogram steps read twice: the extremes came with the step's values; the bins,
        made with them (no masking when they are finite), come now, in one read."""
        log, metric, emit = self._run.log, self._metric, self._run.emit
        parts = [histogram_parts(t, ends[3 * i], ends[3 * i + 1])
                 for i, (_, t, _) in enumerate(shown)]
        _, vectors = fetch([], parts)
        for i, ((name, t, kind), values) in enumerate(zip(shown, vectors)):
            if kind == "grad":
                mean_abs, max_abs = abs_stats(t.numel(), *ends[3 * i:3 * i + 3])
                log(metric[name]["mean_abs"], mean_abs, step)
                log(metric[name]["max_abs"], max_abs, step)
            emit("histograms", histogram_doc(name, kind, step, t.numel(), values))

    def _record_order(self) -> None:
        """The modules in forward order, in the run's `info.watched`: plots draw gradient
        flow in that order. A new list each time, so the heartbeat sees the change."""
        order = [self._names[i] for i in self._order]
        if order != self._recorded_order:
            self._recorded_order = order
            others = [w for w in self._run.info.get("watched", []) if w.get("name") != self._root]
            self._run.info["watched"] = [*others, {"name": self._root, "model": type(
                self.model).__name__, "forward_order": order}]

    # -- removal -------------------------------------------------------------------------

    def remove(self) -> None:
        """Take every hook off the model and off the autograd graphs of passes whose
        backward has not run yet; safe to call twice. (A graph kept with retain_graph=True
        past its step still calls its hooks, which then do nothing.)"""
        self._off = True
        for h in [*self._handles, *self._graph_handles]:
            h.remove()
        self._handles, self._graph_handles = [], []
        self._fwd, self._bwd, self._seen = [], [], {}

    def _stop(self, exc: Exception) -> None:
        self.remove()
        error = f"{type(exc).__name__}: {exc}"
        print(f"recorder: warning: recorder.watch stopped watching {self._root} at step "
              f"{self.step} ({error}); the run goes on", file=sys.__stderr__, flush=True)
        self._run.emit("events", {"kind": "watch_stopped", "module": self._root,
                                  "step": self.step, "error": error, "time": runs.utcnow()})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._off else f"step {self.step}"
        return f"<recorder.Watch {type(self.model).__name__} ({state})>"


class ForwardHook(functools.partial):
    """A module's forward hook: `watch._on_forward(index, module, args, output)`, called with
    no Python frame of its own. A copy of the model (`copy.deepcopy`, `torch.save` of the
    whole model) gets an inert hook instead: the copy is not watched, the run not copied."""

    def __reduce__(self):
        return _inert_hook, ()


def _inert_hook():
    return _ignore


def _ignore(module, args, output) -> None:
    return None


@torch.no_grad()
def _read_step(outputs: list, out_grads: list, param_grads: list | None, shown: list) -> tuple:
    """The one read of a step. Its checks: the L2 norms of the outputs and of the output
    gradients, in one fused call; on a sampled step (`param_grads` not None) the output
    gradients' sums of |g| instead (their check, and their mean |g|) and the parameter
    gradients' norms. And the extremes of the `shown` tensors (histogram steps).
    Returns (output values, output-gradient values, parameter-gradient norms, extremes)."""
    sampled = param_grads is not None
    checked = outputs + (param_grads if sampled else out_grads)
    abs_sums = _abs_sums(out_grads) if sampled else []
    ends = [e.float() for t in shown for e in extremes(t)]
    values, _ = fetch([*norms(checked), *abs_sums, *ends])
    n_out, n_checked = len(outputs), len(checked)
    n_read = n_checked + len(abs_sums)
    if sampled:
        return (values[:n_out], values[n_checked:n_read], values[n_out:n_checked],
                values[n_read:])
    return values[:n_out], values[n_out:n_checked], [], values[n_read:]


def _abs_sums(tensors: list[Tensor]) -> list[Tensor]:
    """The sums of |x| of `tensors`, in float32 or wider (no fp16 overflow): one fused
    `_foreach_abs` (a fused L1 norm is several times slower on a CPU), then a sum each."""
    if not tensors:
        return []
    try:
        absolute = torch._foreach_abs(tensors)
    except RuntimeError:  # layouts the fused path refuses
        absolute = [t.abs() for t in tensors]
    return [a.sum(dtype=torch.float32) if a.dtype in LOW_PRECISION else a.sum()
            for a in absolute]


def _tensors(output, depth: int = 0):
    """The tensors in a module's output: a tensor, or tuples, lists and dicts of them."""
    if isinstance(output, Tensor):
        yield output
    elif depth < 4 and isinstance(output, (tuple, list)):
        for item in output:
            yield from _tensors(item, depth + 1)
    elif depth < 4 and isinstance(output, dict):
        for item in output.values():
            yield from _tensors(item, depth + 1)
