"""Errors a user can cause.

    RecorderError            base of everything a user can cause and fix
    ├── ConfigError          a config key or value that cannot be used
    ├── StoreError           a store URL that cannot be used
    ├── RunNotFound          a run reference that names no run
    ├── NoActiveRun          recorder.log/artifact/watch called outside a run
    ├── ReplayError          a run that cannot be replayed (unknown, corrupt, refused, strict)
    ├── LaunchError          `recorder run`: a script or module not found, a bad --metric-pattern
    └── NonFiniteError       NaN/Inf in a watched model, with recorder.watch(nan="raise")

Failures of the database itself are not errors for the user's code: they are
spooled to disk and reported as warnings.
"""


class RecorderError(Exception):
    """Base of the errors a user causes; the message names the bad value."""


class ConfigError(RecorderError):
    pass


class StoreError(RecorderError):
    pass


class RunNotFound(RecorderError):
    pass


class NoActiveRun(RecorderError):
    pass


class ReplayError(RecorderError):
    """A run that cannot be replayed: its tree cannot be rebuilt, a stored path is refused,
    a redacted value was not given, or `--strict` found a difference."""


class LaunchError(RecorderError):
    """`recorder run` cannot start: no such script or module, or a bad --metric-pattern."""


class NonFiniteError(RecorderError):
    """A watched model made a NaN or Inf (`recorder.watch(model, nan="raise")`).

    `module` (qualified name), `phase` ("forward" or "backward"), `step`, `shape`, `nan`,
    `posinf`, `neginf` and `min`/`max` (of the finite values) say where and what."""

    def __init__(self, module: str, phase: str, step: int, stats: dict):
        self.module, self.phase, self.step, self.stats = module, phase, step, stats
        self.shape = tuple(stats.get("shape") or ())
        self.nan, self.posinf = stats.get("nan"), stats.get("posinf")
        self.neginf = stats.get("neginf")
        self.min, self.max = stats.get("min"), stats.get("max")
        what = "output" if phase == "forward" else "output gradient"
        if stats.get("parameter"):
            what = f"gradient of parameter {stats['parameter']!r}"
        finite = ("no finite values" if self.min is None
                  else f"finite values in [{self.min:.6g}, {self.max:.6g}]")
        super().__init__(
            f"non-finite {what} of module {module!r} in the {phase} pass at step {step}: "
            f"shape {self.shape}, {self.nan} NaN, {self.posinf} +Inf, {self.neginf} -Inf, "
            f"{finite}")

    def __reduce__(self):  # picklable (multiprocessing) despite the extra arguments
        return type(self), (self.module, self.phase, self.step, self.stats)
