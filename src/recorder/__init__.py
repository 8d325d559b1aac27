"""recorder: a reproducibility-first experiment recorder for Python and PyTorch.

    @recorder.experiment
    def main(lr: float = 1e-3, epochs: int = 10, seed: int = 0):
        ...
        recorder.log("train_loss", loss, step=epoch)

Importing recorder imports neither torch, matplotlib nor a database driver: `watch`
(torch hooks) is imported on first use.
"""

# `data` and `replay` name both a module and a function; imported here, recorder.data and
# recorder.replay stay the functions even after their submodules are imported.
from .data import data
from .embedding import log_embedding
from .errors import (
    ConfigError,
    NoActiveRun,
    NonFiniteError,
    RecorderError,
    ReplayError,
    RunNotFound,
    StoreError,
)
from .experiment import experiment
from .query import connect, find_runs
from .replay import replay
from .run import Run, artifact, current_run, log

__all__ = [
    "ConfigError",
    "NoActiveRun",
    "NonFiniteError",
    "RecorderError",
    "ReplayError",
    "Run",
    "RunNotFound",
    "StoreError",
    "artifact",
    "connect",
    "current_run",
    "data",
    "experiment",
    "find_runs",
    "log",
    "log_embedding",
    "replay",
    "watch",
]


def __getattr__(name: str):
    """`recorder.watch` is imported when first used: it imports torch."""
    if name == "watch":
        from .hooks import watch

        globals()["watch"] = watch  # later lookups find it directly
        return watch
    raise AttributeError(f"module 'recorder' has no attribute {name!r}")
