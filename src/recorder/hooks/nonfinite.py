"""NaN/Inf events: where the first non-finite value came from, and a short record of the rest.

The watcher spots candidates cheaply (a sum of each of the step's module outputs, kept
output gradients and parameter gradients, read in one batch per step) and hands them here
in the order the values were made: forward order, then backward order.
Here they are confirmed exactly and written so that the record stays small:

- the first step with non-finite values gets one origin event (`kind: "nonfinite"`,
  `origin: True`): the first module, its phase, the step, and the tensor's shape, NaN/+Inf/-Inf
  counts and the range of its finite values; the modules the values reached later in that
  step are listed in its `propagation` (they are not origins);
- after that step, each module that is non-finite again gets one summary document
  (`kind: "nonfinite_summary"`: first and last step, number of steps), replaced as it grows:
  never one event per module per step.

`nan="raise"` raises `NonFiniteError` and `nan="breakpoint"` stops in the debugger at every
step with non-finite values, naming that step's first module (after recording it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import NonFiniteError
from ..run import utcnow
from .fetch import LOW_PRECISION, fetch, stored_values

NAN_MODES = ("record", "raise", "breakpoint")


@dataclass
class Candidate:
    """A module output (forward), or an output gradient or a parameter's gradient
    (backward), whose check was not finite."""
    module: str
    obj: Any  # the torch.nn.Module
    phase: str
    tensor: torch.Tensor
    version: int  # tensor._version when the hook kept it: a later in-place change shows
    parameter: str | None = None  # a parameter's gradient: the parameter's name

    @property
    def changed(self) -> bool:
        return self.tensor._version != self.version


def tensor_stats(tensor: torch.Tensor) -> dict:
    """Shape, dtype, NaN/+Inf/-Inf counts and min/max of the finite values, exactly."""
    x = stored_values(tensor.detach())
    x = x.float() if x.dtype in LOW_PRECISION else x
    finite = torch.isfinite(x)
    inf = torch.full((), math.inf, dtype=x.dtype, device=x.device)
    counts = [torch.isnan(x).sum(), (x == inf).sum(), (x == -inf).sum(), finite.sum()]
    ends = [torch.where(finite, x, inf).min(), torch.where(finite, x, -inf).max()] \
        if x.numel() else []
    values, _ = fetch([c.double() for c in counts] + [e.double() for e in ends])
    nan, posinf, neginf, n_finite = (int(v) for v in values[:4])
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).replace("torch.", ""),
            "numel": tensor.numel(), "nan": nan, "posinf": posinf, "neginf": neginf,
            "inf": posinf + neginf,
            "min": values[4] if n_finite else None, "max": values[5] if n_finite else None}


class NonFiniteEvents:
    """The NaN/Inf record of one watched model: one origin event, then per-module summaries."""

    def __init__(self, run, mode: str, prefix: str = ""):
        self.run = run
        self.mode = mode
        self.origin: dict | None = None
        self._confirmed: set[tuple[str, str]] = set()  # (module, phase) seen non-finite
        self._tally: dict[str, dict] = {}  # module -> its summary document
        self._last_step: dict[str, int] = {}
        self._acted_step: int | None = None

    def report(self, step: int, candidates: list[Candidate]) -> None:
        """Candidates of one check, in the order their values were made."""
        found = self._confirm(candidates)
        if not found:
            return
        if self.origin is None:
            self._record_origin(step, found)
        elif step == self.origin["step"]:
            self._add_propagation(found)
        for c in found:
            self._count(step, c)
        if self.mode != "record" and self._acted_step != step:
            self._acted_step = step
            self._act(step, found[0])

    # -- confirming ----------------------------------------------------------------------

    def _confirm(self, candidates: list[Candidate]) -> list[Candidate]:
        """A sum of finite values can overflow to Inf (large values): check the tensor
        itself the first time a module is suspected; a module confirmed before is
        believed (steady NaN, or an intended -inf mask, would otherwise cost a check a step).
        A tensor changed in place since it was kept is believed: its check was of the values
        as they are now."""
        check = [c for c in candidates
                 if (c.module, c.phase) not in self._confirmed and not c.changed]
        ok, _ = fetch([torch.isfinite(stored_values(c.tensor)).all() for c in check])
        overflow = {id(c) for c, finite in zip(check, ok) if finite}
        found = [c for c in candidates if id(c) not in overflow]
        self._confirmed.update((c.module, c.phase) for c in found)
        return found

    # -- the record ----------------------------------------------------------------------

    def _record_origin(self, step: int, found: list[Candidate]) -> None:
        first = found[0]
        stats = _stats(first)
        self.origin = {"kind": "nonfinite", "origin": True, "step": step, "phase": first.phase,
                       "module": first.module, "module_type": type(first.obj).__name__,
                       "shape": stats["shape"], "stats": stats, "propagation": [],
                       "time": utcnow()}
        self._add_propagation(found[1:])

    def _add_propagation(self, found: list[Candidate]) -> None:
        reached = self.origin["propagation"]
        known = {(p["module"], p["phase"]) for p in reached}
        known.add((self.origin["module"], self.origin["phase"]))
        for c in found:
            if (c.module, c.phase) not in known:
                known.add((c.module, c.phase))
                reached.append({"module": c.module, "phase": c.phase, "origin": False})
        self.origin["time"] = utcnow()
        self.origin["_id"] = self.run.emit("events", self.origin)

    def _count(self, step: int, c: Candidate) -> None:
        """Steps after the first non-finite one: one summary document per module."""
        doc = self._tally.get(c.module)
        if doc is None:
            doc = self._tally[c.module] = {
                "kind": "nonfinite_summary", "module": c.module, "phase": c.phase,
                "phases": [], "step": step, "first_step": step, "last_step": step, "count": 0,
                "stats": {}}
        if c.phase not in doc["phases"]:
            doc["phases"].append(c.phase)
        if self._last_step.get(c.module) != step:
            self._last_step[c.module] = step
            doc["count"] += 1
            doc["last_step"] = step
        if step != self.origin["step"]:
            doc["stats"] = {"count": doc["count"], "first_step": doc["first_step"],
                            "last_step": step}
            doc["time"] = utcnow()
            doc["_id"] = self.run.emit("events", doc)

    # -- raise / breakpoint --------------------------------------------------------------

    def _act(self, step: int, first: Candidate) -> None:
        stats = self.origin["stats"] if (
            self.origin["step"] == step and self.origin["module"] == first.module
            and self.origin["phase"] == first.phase) else _stats(first)
        if self.mode == "raise":
            raise NonFiniteError(first.module, first.phase, step, stats)
        stop_in_debugger(first.obj, first.module, first.tensor, first.phase, step, stats)


def _stats(c: Candidate) -> dict:
    stats = tensor_stats(c.tensor)
    if c.changed:
        stats["changed_in_place"] = True  # counts are of the values as they are now
    if c.parameter is not None:  # a parameter's gradient: no output gradient was kept
        stats["parameter"] = c.parameter
    return stats


def stop_in_debugger(module, name: str, tensor: torch.Tensor, phase: str, step: int,
                     stats: dict) -> None:
    """`nan="breakpoint"`: the debugger opens in this frame, where `module` (the module),
    `name` (its qualified name) and `tensor` (its non-finite output, or output gradient in
    the backward phase) are local variables. `breakpoint()` honours PYTHONBREAKPOINT."""
    breakpoint()  # noqa: T100 -- asked for by nan="breakpoint"
