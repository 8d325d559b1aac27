"""`recorder.log_embedding`: snapshots of an embedding, for `recorder plot` to project.

Size cap: at most 2,000 rows and 1,000,000 values per snapshot (4 MB as float32, well
inside MongoDB's 16 MB document limit). A larger embedding is sampled down to evenly
spaced rows, the same rows every time, and `sampled_from` records how many there were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .run import active_run

MAX_ROWS = 2000
MAX_VALUES = 1_000_000


def log_embedding(name: str, tensor: Any, labels: Sequence | None = None,
                  step: int | None = None) -> None:
    """Record an N x D embedding (a tensor, an array, or nested lists), with one label per
    row if given, at `step` (default: this name's next snapshot)."""
    import numpy as np

    run = active_run("log_embedding")
    if not isinstance(name, str) or not name:
        raise TypeError(f"embedding names are non-empty strings, got {name!r}")
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().numpy()
    vectors = np.asarray(tensor, dtype=np.float32)
    if vectors.ndim != 2 or 0 in vectors.shape:
        raise TypeError(f"embedding {name!r}: expected N x D values, got shape {vectors.shape}")
    rows = len(vectors)
    if labels is not None:
        labels = [_plain(label) for label in labels]
        if len(labels) != rows:
            raise ValueError(f"embedding {name!r}: {len(labels)} labels for {rows} rows")
    keep = min(rows, MAX_ROWS, max(1, MAX_VALUES // vectors.shape[1]))
    if keep < rows:
        index = np.linspace(0, rows - 1, keep).round().astype(int)
        vectors = vectors[index]
        labels = [labels[i] for i in index] if labels is not None else None
    if step is None:
        step = run.counters.get(f"embedding/{name}", 0)
    run.counters[f"embedding/{name}"] = step + 1
    run.emit("embeddings", {"name": name, "step": int(step), "shape": list(vectors.shape),
                            "vectors": vectors.astype("<f4").tobytes(), "labels": labels,
                            "sampled_from": rows if keep < rows else None})


def _plain(label: Any) -> Any:
    """Labels as BSON can hold them: numpy and tensor scalars become Python values."""
    item = getattr(label, "item", None)
    value = item() if callable(item) else label
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
