"""The hooks of one watched model, and what they do at each step.

A step is one completed backward pass through the model's outputs: a gradient hook put on
the graph by the forward queues a callback that the autograd engine runs once that pass has
finished (every parameter's `.grad` accumulated). Forward passes without a backward
(`torch.no_grad()` evaluation) count none; under gradient accumulation each backward is a
step.

Every step (the minimum that finding the first NaN/Inf needs):
  forward   a hook per module keeps its output (a reference, no copy);
  backward  one pre-hook on the autograd node of the pass's first output and one on the
            model's output keep those two gradients and queue the end of the step;
  end       a sum of every kept output, of those two gradients and of every parameter's
            `.grad` (NaN and Inf survive a sum), on their device, read with one
            `.tolist()`: one reduction per tensor and nothing more, since each extra
            kernel per tensor costs a dispatch (measured in tests/bench/bench_hooks.py).
            Only if one is not finite is anything more computed (`nonfinite.py`). A
            non-finite gradient is named by the module whose output gradient, or else
            whose parameter's gradient, was the first made non-finite in backward order.
            Outputs are kept until then (so the culprit can be examined exactly), and
            dropped after: the memory of one step's module outputs, held until the end of
            its backward. An output changed in place later in its pass (`ReLU(inplace=True)`
            after a Linear) is checked as it stands then, and its event says so. A pass
            under `no_grad` is checked at its own end; a grad-mode pass that no backward
            follows, at the end of the next pass.
Every `every` steps, in the same read: every module's output gradient, kept by a pre-hook
on each output's autograd node (its sum of |g| is its check and gives its mean
|grad_output|), per parameter the L2 norm of `.grad` (its check on that step) and its
non-finite count (0 when the norm is finite: counted only when it is not), and the
vanishing/exploding check (`gradients.py`). On these steps the first non-finite output
gradient is named exactly. `.grad` as it stands after the backward: under gradient
accumulation, the running sum.
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
from .fetch import LOW_PRECISION, fetch, norms, stored_values, sum_of
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
        owner = {id(p): i for i, m in reversed(list(enumerate(self._modules)))
                 for p in m.parameters(recurse=False)}
        self._params = [(prefix + n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._owner = [owner[id(p)] for _, p in self._params]  # module index of each
        self._metric = {n: {s: f"grad/{n}/{s}" for s in ("norm", "nonfinite", "mean_abs",
                                                         "max_abs", "out_mean_abs")}
                        for n in [*self._names, *(n for n, _ in self._params)]}
        self._out_metric = [self._metric[n]["out_mean_abs"] for n in self._names]
        self._order: dict[int, None] = {}  # module indices in the order their outputs appear
        self._root = root
        self._recorded_order: list[str] = []
        self._fwd: list[tuple] = []  # (module index, output, its version)
        self._seen: dict[int, tuple] = {}  # sampled steps: id(output) -> (output, version, probe)
        self._bwd: list[tuple] = []  # (probe: module indices, grad, its version)
        self._hooked = False  # this pass has a gradient hook that ends its step
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
        """The hot path (every module, every pass): the output kept; on sampled steps a
        hook for its gradient, on others one for the pass's first output only."""
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
            self._fwd.append((index, t, t._version))
            if self._sampled:
                self._hook_each(index, t)
            elif not self._hooked and t.grad_fn is not None:
                self._hook_grad([index], t)
        if index not in self._order:
            self._order[index] = None
        if index == 0:
            self._end_pass(outputs)
        elif len(self._fwd) > self._limit:
            self._check_forward()

    def _hook_each(self, index: int, t: Tensor) -> None:
        """Sampled steps: every output's gradient. The same tensor as a module's before (a
        container's output) shares that module's hook, its gradient counted for both."""
        seen = self._seen.get(id(t))
        if seen is not None and seen[0] is t and seen[1] == t._version:
            if seen[2] is not None:
                seen[2].append(index)
            return
        probe = [index] if t.grad_fn is not None else None
        if probe is not None:
            self._hook_grad(probe, t)
        self._seen[id(t)] = (t, t._version, probe)

    def _hook_grad(self, probe: list, t: Tensor) -> None:
        """A pre-hook on the node that made `t` sees t's gradient."""
        self._hooked = True
        self._graph_handles.append(t.grad_fn.register_prehook(
            functools.partial(self._on_grad, probe, t.output_nr)))

    def _end_pass(self, outputs: tuple) -> None:
        """The root module's forward ended. Its check waits for the backward (one read per
        step), unless there will be none: under no_grad, check now."""
        self._seen = {}
        if runs.current_run() is not self._run:  # the run ended: stop recording into it
            return self.remove()
        if not self._sampled:  # the model's output gradient: checked, and a sure end
            recent = self._fwd[-len(self._modules):]
            for t in outputs:
                if t.grad_fn is not None and t.is_floating_point():  # and the modules that
                    self._hook_grad([i for i, kept, _ in recent if kept is t], t)  # made it
        self._hooked = False
        if self._pending_pass and not self._queued and _in_backward() == -1:
            self._check_forward()  # an earlier grad-mode pass that no backward followed
        self._pending_pass = torch.is_grad_enabled()
        if not self._pending_pass:
            self._check_forward()

    def _check_forward(self) -> None:
        entries, self._fwd = self._fwd, []
        self._pending_pass = self._hooked = False
        with torch.no_grad():
            values, _ = fetch(_sums_once([e[1] for e in entries]))
        if not math.isfinite(sum(values)):
            self._report(self.step, forward=(entries, values))

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
        self._queued = self._hooked = False
        if self._off:
            return
        if runs.current_run() is not self._run:  # the run ended: stop recording into it
            return self.remove()
        step, sampled = self.step, self._sampled
        histograms = bool(self.histograms_every) and step % self.histograms_every == 0
        fwd, self._fwd, self._pending_pass = self._fwd, [], False
        bwd, self._bwd = self._bwd, []
        grads = [(n, p.grad, i) for (n, p), i in zip(self._params, self._owner)
                 if p.grad is not None]
        shown = ([(n, g, "grad") for n, g, _ in grads]
                 + [(n, p, "weight") for n, p in self._params if self.weights]
                 if histograms else [])
        fwd_values, bwd_values, grad_values, ends = _read_step(
            [e[1] for e in fwd], [e[1] for e in bwd], [g for _, g, _ in grads], sampled,
            [t for _, t, _ in shown])
        # their backward has run: let the handles go now (young objects are cheap to free;
        # a graph kept with retain_graph keeps inert hooks: they check `_off` first)
        self._graph_handles = []
        if sampled:
            self._log_sampled(step, bwd, bwd_values, grads, grad_values)
        if histograms:
            self._log_histograms(step, shown, ends)
        self.step = step + 1  # counted once its statistics are in (a failure names its step)
        self._sampled = self.step % self.every == 0
        if not math.isfinite(sum(fwd_values) + sum(bwd_values) + sum(grad_values)):
            self._report(step, (fwd, fwd_values), (bwd, bwd_values), (grads, grad_values))

    def _report(self, step: int, forward=((), ()), backward=((), ()), params=((), ())):
        """The candidates of a check in the order their values were made: forward outputs,
        then in backward order (modules in reverse forward order) each module's output
        gradient, then its parameters' gradients."""
        bad = [Candidate(self._names[i], self._modules[i], "forward", t, version)
               for (i, t, version), v in zip(*forward) if not math.isfinite(v)]
        rank = {i: r for r, i in enumerate(reversed(self._order))}
        made = []
        for (probe, g, version), v in zip(*backward):
            if not math.isfinite(v):  # one gradient of several modules (a container's
                at = min(rank.get(i, len(rank)) for i in probe)  # output): inner ones first
                made += [((at, 0, k), Candidate(self._names[i], self._modules[i], "backward",
                                                g, version)) for k, i in enumerate(probe)]
        for (name, g, i), v in zip(*params):
            if not math.isfinite(v):
                made.append(((rank.get(i, len(rank)), 1, 0), Candidate(
                    self._names[i], self._modules[i], "backward", g, g._version, name)))
        bad += [c for _, c in sorted(made, key=lambda item: item[0])]
        self.nonfinite.report(step, bad)

    # -- statistics ----------------------------------------------------------------------

    def _log_sampled(self, step: int, bwd: list, sums: list, grads: list, norm_values: list):
        metric = self._metric
        total: dict[int, list] = {}  # module -> [sum |g|, count] over its output gradients
        for (probe, g, _), s in zip(bwd, sums):
            n = g.numel()
            for i in probe:
                acc = total.get(i)
                if acc is None:
                    total[i] = [s, n]
                else:
                    acc[0] += s
                    acc[1] += n
        out_mean_abs, points = {}, []
        for i in self._order:
            if i in total:
                s, n = total[i]
                out_mean_abs[self._names[i]] = value = s / n if n else math.nan
                points.append((self._out_metric[i], value))
        counts = self._nonfinite_counts(grads, norm_values)
        for (name, _, _), norm, count in zip(grads, norm_values, counts):
            names = metric[name]
            points.append((names["norm"], norm))
            points.append((names["nonfinite"], count))
        self._run.log_step(step, points)
        self._record_order()
        self.trends.update(step, out_mean_abs)

    @staticmethod
    def _nonfinite_counts(grads: list, norm_values: list) -> list[int]:
        """0 where the norm is finite; counted exactly (one more read) only where it is not."""
        counts = [0] * len(norm_values)
        if math.isfinite(sum(norm_values)):
            return counts
        odd = [i for i, v in enumerate(norm_values) if not math.isfinite(v)]
        exact, _ = fetch([(~torch.isfinite(stored_values(grads[i][1]))).sum() for i in odd])
        for i, c in zip(odd, exact):
            counts[i] = int(c)
        return counts

    def _log_histograms(self, step: int, shown: list, ends: list) -> None:
        """Histogram steps read twice: the extremes came with the step's values; the bins,
        made with them (no masking when they are finite), come now, in one read."""
        metric, emit, points = self._metric, self._run.emit, []
        parts = [histogram_parts(t, ends[3 * i], ends[3 * i + 1])
                 for i, (_, t, _) in enumerate(shown)]
        _, vectors = fetch([], parts)
        for i, ((name, t, kind), values) in enumerate(zip(shown, vectors)):
            if kind == "grad":
                mean_abs, max_abs = abs_stats(t.numel(), *ends[3 * i:3 * i + 3])
                points += [(metric[name]["mean_abs"], mean_abs),
                           (metric[name]["max_abs"], max_abs)]
            emit("histograms", histogram_doc(name, kind, step, t.numel(), values))
        self._run.log_step(step, points)

    def _record_order(self) -> None:
        """The modules in forward order, in the run's `info.watched`: plots draw gradient
        flow in that order. A new list each time, so the heartbeat sees the change."""
        if len(self._order) == len(self._recorded_order):  # it only grows
            return
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
def _read_step(outputs: list, out_grads: list, param_grads: list, sampled: bool,
               shown: list) -> tuple:
    """The one read of a step. Its checks: a sum of each output, of each output gradient
    and of each parameter gradient; on a sampled step the output gradients' sums of |g|
    instead (their check, and their mean |g|) and the parameter gradients' L2 norms (their
    check, and their norm statistic). And the extremes of the `shown` tensors (histogram
    steps). Returns (output values, output-gradient values, parameter-gradient values,
    extremes)."""
    parts = [_sums_once(outputs), _abs_sums(out_grads) if sampled else _sums_once(out_grads),
             norms(param_grads) if sampled else [sum_of(g) for g in param_grads],
             [e.float() for t in shown for e in extremes(t)]]
    values, _ = fetch([v for part in parts for v in part])
    out, at = [], 0
    for part in parts:
        out.append(values[at:at + len(part)])
        at += len(part)
    return tuple(out)


def _sums_once(tensors: list[Tensor]) -> list[Tensor]:
    """A sum per tensor, in order; a tensor kept twice (a container's output is its last
    layer's, an in-place activation's its input) is summed once."""
    made: dict[int, Tensor] = {}
    return [made[id(t)] if id(t) in made else made.setdefault(id(t), sum_of(t))
            for t in tensors]


def _abs_sums(tensors: list[Tensor]) -> list[Tensor]:
    """The sums of |x| of `tensors`, in float32 or wider (no fp16 overflow): `abs` and a
    sum each (on a CPU faster than one fused `_foreach_abs`, and a fused L1 norm is
    several times slower still)."""
    return [t.abs().sum(dtype=torch.float32) if t.dtype in LOW_PRECISION else t.abs().sum()
            for t in map(stored_values, tensors)]


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
