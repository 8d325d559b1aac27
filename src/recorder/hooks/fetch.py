"""Device values to Python numbers in one transfer: a `.item()` per layer per step would
stop an accelerator's queue once per layer (and costs a dispatch each, even on a CPU)."""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


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
    except RuntimeError:  # devices or layouts the fused path refuses: one at a time
        return [torch.linalg.vector_norm(_dense(t), ord, dtype=torch.float32 if low else None)
                for t in tensors]


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.coalesce().values() if t.is_sparse else t


class StepSums:
    """A step's sums, written on the device into slots of one float32 buffer: no tensor is
    made per sum, and no stack is needed to gather them before the one `.tolist()`.

    `add` returns the slot of a sum; `values()` reads every slot so far; `clear()` starts
    the next step. A sum on another device than the buffer's, or past its end, is kept as
    a tensor and read with it (the buffer is remade to fit for the next step)."""

    def __init__(self, size: int = 64):
        self.n = 0
        self._size = size
        self._buffer: torch.Tensor | None = None
        self._slots: list[torch.Tensor] = []
        self._spilled: dict[int, torch.Tensor] = {}

    def add(self, t: torch.Tensor, absolute: bool = False) -> int:
        i = self.n
        self.n = i + 1
        x = t.detach() if t.requires_grad else t
        if absolute:
            x = x.abs()
        try:  # past the end (IndexError) or on another device (RuntimeError): kept aside
            torch.sum(x, None, dtype=torch.float32, out=self._slots[i])
        except (IndexError, RuntimeError):
            self._spilled[i] = x.sum(dtype=torch.float32)
        return i

    def add_all(self, scalars: list[torch.Tensor]) -> int:
        """Slots for 0-d float32 tensors already made (norms): one copy. Returns the first."""
        first = self.n
        self.n = first + len(scalars)
        try:
            if not scalars or self.n > len(self._slots):
                raise RuntimeError("no room here")
            torch.stack(scalars, out=self._buffer[first:self.n])
        except RuntimeError:  # another device or dtype, or no room: kept as tensors
            self._spilled.update(zip(range(first, self.n), scalars))
        return first

    def values(self) -> list[float]:
        n = self.n
        if not n:
            return []
        values = self._buffer.tolist()[:n] if self._buffer is not None else [0.0] * n
        if self._spilled:
            values += [0.0] * (n - len(values))
            spilled, _ = fetch(list(self._spilled.values()))
            for i, v in zip(self._spilled, spilled):
                values[i] = v
        return values

    def clear(self) -> None:
        if self._spilled:  # remake the buffer where the sums are, big enough for them
            last = next(reversed(self._spilled.values()))
            self._size = max(self._size, 2 * self.n)
            self._buffer = torch.zeros(self._size, dtype=torch.float32, device=last.device)
            self._slots = list(self._buffer.unbind())
            self._spilled = {}
        self.n = 0
