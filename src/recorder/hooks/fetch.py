"""Device values to Python numbers in one transfer: a `.item()` per layer per step would
stop an accelerator's queue once per layer (and costs a dispatch each, even on a CPU)."""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)
_PLAIN = (torch.float32, torch.float64)  # summed as they are


def fetch(scalars: list[torch.Tensor], vectors: list[torch.Tensor] = ()) -> tuple[list, list]:
    """The values of 0-d `scalars` and of `vectors` (flattened, one list each), read with one
    `.tolist()` per device: stacked (dtypes are promoted), copied over once."""
    if not scalars and not vectors:
        return [], []
    try:
        if not vectors:
            return torch.stack(scalars).tolist(), []
        parts = [torch.stack(scalars).double()] if scalars else []
        parts += [v.detach().double().flatten() for v in vectors]
        flat = torch.cat(parts).tolist()
    except RuntimeError:  # on several devices: one transfer per device
        return _by_device(scalars, vectors)
    head, rest = flat[:len(scalars)], flat[len(scalars):]
    out, at = [], 0
    for v in vectors:
        out.append(rest[at:at + v.numel()])
        at += v.numel()
    return head, out


def _by_device(scalars: list[torch.Tensor], vectors: list[torch.Tensor]) -> tuple[list, list]:
    groups: dict[torch.device, list[int]] = {}
    for i, s in enumerate(scalars):
        groups.setdefault(s.device, []).append(i)
    values: list = [None] * len(scalars)
    for indices in groups.values():
        for i, v in zip(indices, torch.stack([scalars[i] for i in indices]).tolist()):
            values[i] = v
    return values, [v.detach().double().flatten().tolist() for v in vectors]


def norms(tensors: list[torch.Tensor], ord: float = 2.0) -> list[torch.Tensor]:
    """Vector norms of `tensors` on their devices, in float32 or wider (no fp16 overflow)."""
    if not tensors:
        return []
    low = any(t.dtype in LOW_PRECISION for t in tensors)
    try:
        return list(torch._foreach_norm(tensors, ord, dtype=torch.float32 if low else None))
    except RuntimeError:  # devices, layouts or dtypes (float64 beside float16) the fused
        # path refuses: one at a time
        return [torch.linalg.vector_norm(
            stored_values(t), ord, dtype=torch.float32 if t.dtype in LOW_PRECISION else None)
            for t in tensors]


def sum_of(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` on its device, in float32 or wider (no fp16 overflow): NaN and Inf
    survive it, so it is the cheapest check that a tensor is finite (one kernel)."""
    if t.dtype in _PLAIN and t.layout is torch.strided:
        return t.sum()
    t = stored_values(t)
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.sum(dtype=torch.float32) if t.dtype in LOW_PRECISION else t.sum()


def stored_values(t: torch.Tensor) -> torch.Tensor:
    """A sparse tensor's stored values (its implicit zeros change no norm, sum |x| or
    extreme of |x|); any other tensor as it is."""
    return t.coalesce().values() if t.is_sparse else t

