"""Whether two runs came out the same: final status, metric names, steps and values.

Values are equal when they are the same number (NaN equals NaN, +Inf equals +Inf), or, with
a tolerance X > 0, when |a - b| <= X * max(|a|, |b|) (non-finite values must still match
exactly). Points are compared in the order they were logged; a metric missing on either side,
a missing or extra point, or a different step is a divergence at the first point concerned.
Metrics that measure time (`is_timing`) never come out the same twice: a replay shows them
but leaves them out of its verdict, unless asked to judge them (`--compare-all`).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

REPRODUCED, DIVERGED, COULD_NOT_REPLAY = "reproduced", "diverged", "could not replay"

TIMING_WORDS = ("time", "times", "timing", "timings", "duration", "elapsed", "runtime",
                "latency", "throughput", "eta", "fps", "walltime", "wallclock")
TIME_UNITS = ("s", "sec", "secs", "second", "seconds", "ms", "msec", "us", "usec", "ns",
              "min", "mins", "minute", "minutes", "h", "hr", "hrs", "hour", "hours")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TIMING = re.compile(
    rf"(?:^|[^a-z])(?:{'|'.join(TIMING_WORDS)})(?:$|[^a-z])"  # a word: epoch_time, Time
    rf"|(?:^|[^a-z])(?:{'|'.join(TIME_UNITS)})/"  # time per something: ms/batch, s/it
    rf"|(?:/|per_?|_per|\bper )(?:{'|'.join(TIME_UNITS[:5])})$"  # a rate: it/s, per_second
    rf"|[_ (](?:{'|'.join(u for u in TIME_UNITS if len(u) > 1)})\)?$")  # a unit: step_ms


def is_timing(name: str) -> bool:
    """Whether a metric measures time or speed, which no replay reproduces exactly.

    Read lower-cased with camelCase humps split (`epochTime` is `epoch_time`): a word of it
    is one of TIMING_WORDS (`time`, `epoch_time`, `train_runtime`, `ETA`, `latency`); or a
    time unit comes before `/` (`ms/batch`, `s/it`); or it ends with a rate per second
    (`it/s`, `samples/s`, `tokens/sec`, `train_samples_per_second`); or with a unit after
    `_`, a space or `(` (`step_ms`, `epoch_sec`, `duration (s)`). `timestep`, `loss`,
    `ms_ssim` and `seconds_left_in_epoch` are not."""
    return bool(_TIMING.search(_HUMP.sub("_", name).lower()))


@dataclass
class MetricComparison:
    name: str
    points: int  # in the original
    replay_points: int
    identical: bool
    judged: bool = True  # False for a metric named by `ignore`, or timing: shown, not judged
    timing: bool = False  # is_timing(name)
    step: int | None = None  # the first step that differs
    original: Any = None  # the original's value there (None: no point)
    replayed: Any = None
    why: str = ""  # "value", "step", "missing point", "extra point", "missing metric", ...

    def summary(self) -> str:
        unjudged = " (timing: not judged)" if self.timing else " (not judged)"
        if self.identical:
            return "identical" if self.judged else "identical" + unjudged
        text = {
            "missing metric": "not logged by the replay",
            "extra metric": "not in the original",
            "missing point": f"step {self.step}: {_num(self.original)} vs no point in the replay",
            "extra point": f"step {self.step}: no point in the original vs {_num(self.replayed)}",
            "step": f"point {self.step}: steps differ ({self.original} vs {self.replayed})",
        }.get(self.why, f"step {self.step}: {_num(self.original)} vs {_num(self.replayed)}")
        return text if self.judged else text + unjudged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatusComparison:
    original: str | None
    replayed: str | None
    original_error: str | None
    replayed_error: str | None

    @property
    def same(self) -> bool:
        return self.original == self.replayed and self.original_error == self.replayed_error

    def summary(self) -> str:
        def text(status, error):
            return f"{status} ({error})" if error else str(status)
        if self.same:
            return text(self.original, self.original_error)
        return (f"{text(self.original, self.original_error)} vs "
                f"{text(self.replayed, self.replayed_error)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "same": self.same}


def same_value(a: Any, b: Any, tolerance: float = 0.0) -> bool:
    if a == b:
        return True
    if not (_is_number(a) and _is_number(b)):
        return False
    if math.isnan(a) and math.isnan(b):
        return True
    if tolerance <= 0 or not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def compare_metric(name: str, original: Mapping | None, replayed: Mapping | None,
                   tolerance: float = 0.0, judged: bool = True) -> MetricComparison:
    a_steps, a_values = _series(original)
    b_steps, b_values = _series(replayed)
    result = MetricComparison(name, len(a_steps), len(b_steps), False, judged)
    if original is None or replayed is None:
        result.why = "missing metric" if replayed is None else "extra metric"
        return result
    for i in range(max(len(a_steps), len(b_steps))):
        if i >= len(b_steps):
            result.step, result.original, result.why = a_steps[i], a_values[i], "missing point"
            return result
        if i >= len(a_steps):
            result.step, result.replayed, result.why = b_steps[i], b_values[i], "extra point"
            return result
        if a_steps[i] != b_steps[i]:
            result.step, result.why = i, "step"
            result.original, result.replayed = a_steps[i], b_steps[i]
            return result
        if not same_value(a_values[i], b_values[i], tolerance):
            result.step, result.why = a_steps[i], "value"
            result.original, result.replayed = a_values[i], b_values[i]
            return result
    result.identical = True
    return result


def compare_metrics(original: Mapping[str, Mapping], replayed: Mapping[str, Mapping],
                    tolerance: float = 0.0, ignore: Iterable[str] = (),
                    judge_timing: bool = True) -> list[MetricComparison]:
    """One comparison per metric name on either side, sorted by name; `ignore` holds
    shell patterns (`*_time`) of metrics shown but not judged; timing metrics (`is_timing`)
    are not judged either unless `judge_timing` (a replay passes False unless --compare-all)."""
    patterns = list(ignore)
    found = []
    for name in sorted(set(original) | set(replayed)):
        timing = is_timing(name)
        judged = (not any(fnmatch.fnmatchcase(name, p) for p in patterns)
                  and (judge_timing or not timing))
        comparison = compare_metric(name, original.get(name), replayed.get(name), tolerance,
                                    judged=judged)
        comparison.timing = timing
        found.append(comparison)
    return found


def compare_status(original: dict, replayed: dict) -> StatusComparison:
    """A run that failed must fail the same way: the same last line of its traceback
    (the exception type and message)."""
    return StatusComparison(original.get("status"), replayed.get("status"),
                            error_line(original), error_line(replayed))


def error_line(run: dict) -> str | None:
    """The last line of a failed run's traceback (`ValueError: boom`), else None."""
    if run.get("status") != "FAILED":
        return None
    trace = run.get("fail_trace")
    text = "".join(map(str, trace)) if isinstance(trace, list) else str(trace or "")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def verdict(status: StatusComparison, metrics: list[MetricComparison],
            config_same: bool = True) -> tuple[str, str]:
    """(verdict, reason): a replay that failed where the original did not could not be
    replayed; anything else that differs diverged."""
    if status.replayed == "FAILED" and status.original != "FAILED":
        return COULD_NOT_REPLAY, ("the replay failed where the original did not: "
                                  f"{status.replayed_error or 'no traceback'}")
    if status.replayed not in ("COMPLETED", "FAILED", "INTERRUPTED"):
        return COULD_NOT_REPLAY, ("the replay ended without finishing its run "
                                  f"(status {status.replayed})")
    if not status.same:
        return DIVERGED, f"the final status differs: {status.summary()}"
    if not config_same:
        return DIVERGED, "the replay ran with another config than the original"
    differing = [m for m in metrics if m.judged and not m.identical]
    if differing:
        first = differing[0]
        return DIVERGED, f"metric {first.name!r} differs: {first.summary()}"
    return REPRODUCED, "same status, every metric identical"


def _series(series: Mapping | None) -> tuple[list, list]:
    if not isinstance(series, Mapping):
        return [], []
    return list(series.get("steps") or []), list(series.get("values") or [])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
