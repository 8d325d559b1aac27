"""recorder: a reproducibility-first experiment recorder for Python and PyTorch.

    @recorder.experiment
    def main(lr: float = 1e-3, epochs: int = 10, seed: int = 0):
        ...
        recorder.log("train_loss", loss, step=epoch)

Importing recorder imports neither torch, matplotlib nor a database driver.
"""

from .errors import ConfigError, NoActiveRun, RecorderError, RunNotFound, StoreError
from .experiment import experiment
from .query import connect, find_runs
from .run import Run, artifact, current_run, log

__all__ = [
    "ConfigError",
    "NoActiveRun",
    "RecorderError",
    "Run",
    "RunNotFound",
    "StoreError",
    "artifact",
    "connect",
    "current_run",
    "experiment",
    "find_runs",
    "log",
]
